"""The windowed join over an in-memory store: pairing, routes, duplicates, corrections, replay."""

from __future__ import annotations

from _stream_events import outcome, prediction

from safeloop.schemas.events import FeedbackStatus, Route
from safeloop.streams.join import JoinWindow
from safeloop.streams.state import EarlyOutcome, InMemoryStateStore, PendingPrediction
from safeloop.streams.windows import JoinWindows


class Clock:
    def __init__(self, now_ms: int = 1_500) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def make_join(window_ms: int = 10_000) -> tuple[JoinWindow, Clock]:
    clock = Clock()
    join = JoinWindow(
        InMemoryStateStore[PendingPrediction](),
        InMemoryStateStore[EarlyOutcome](),
        JoinWindows(default_window_ms=window_ms),
        clock,
    )
    return join, clock


def test_in_order_pair_emits_one_joined_record() -> None:
    join, _ = make_join()
    assert join.on_prediction(0, prediction()).feedback == []
    out = join.on_outcome(0, outcome())
    assert len(out.feedback) == 1
    record = out.feedback[0]
    assert record.status is FeedbackStatus.JOINED
    assert record.ground_truth == 1.0
    assert record.label_delay_ms == 1_000
    assert record.model_name == "churn"
    assert record.features == {"x": 1.0}


def test_outcome_first_waits_then_pairs_and_is_released_after_flush() -> None:
    join, _ = make_join()
    assert join.on_outcome(0, outcome()).feedback == []
    assert join.early_size() == 1
    out = join.on_prediction(0, prediction())
    assert [r.status for r in out.feedback] == [FeedbackStatus.JOINED]
    assert len(out.releases) == 1
    assert join.release(out.releases) == 1
    assert join.early_size() == 0
    assert join.early.get(0, "p1") is None


def test_outcome_pairs_with_every_route_of_the_prediction_id() -> None:
    join, _ = make_join()
    join.on_prediction(0, prediction(route=Route.PRODUCTION))
    join.on_prediction(0, prediction(route=Route.SHADOW, version="v2"))
    out = join.on_outcome(0, outcome())
    assert sorted(r.route for r in out.feedback) == [Route.PRODUCTION, Route.SHADOW]
    # A route that arrives after the outcome pairs at once.
    late_route = join.on_prediction(0, prediction(route=Route.CANARY, version="v3"))
    assert [(r.route, r.status) for r in late_route.feedback] == [
        (Route.CANARY, FeedbackStatus.JOINED)
    ]


def test_duplicate_prediction_keeps_one_entry_and_reemits_its_pair() -> None:
    join, _ = make_join()
    join.on_prediction(0, prediction())
    assert join.on_prediction(0, prediction()).feedback == []
    assert join.counters.duplicate_predictions == 1
    join.on_outcome(0, outcome())
    again = join.on_prediction(0, prediction())
    assert len(again.feedback) == 1
    assert join.pending_size() == 1


def test_duplicate_outcome_emits_the_same_pair_again() -> None:
    join, _clock = make_join()
    join.on_prediction(0, prediction())
    first = join.on_outcome(0, outcome())
    second = join.on_outcome(0, outcome())
    assert first.feedback[0].ground_truth == second.feedback[0].ground_truth
    assert join.counters.corrections == 0


def test_correction_newest_outcome_wins_and_older_is_ignored() -> None:
    join, _ = make_join()
    join.on_prediction(0, prediction())
    join.on_outcome(0, outcome(ts=2_000, truth=0.0))
    corrected = join.on_outcome(0, outcome(ts=3_000, truth=1.0))
    assert corrected.feedback[0].ground_truth == 1.0
    assert join.counters.corrections == 1
    stale = join.on_outcome(0, outcome(ts=2_500, truth=5.0))
    assert stale.feedback == []
    assert join.counters.stale_outcomes == 1
    entry = join.pending.get(0, "p1")
    assert entry is not None and entry.outcome is not None
    assert entry.outcome.ground_truth == 1.0


def test_expiry_emits_expired_and_releases_state_only_after_confirmation() -> None:
    join, _clock = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    assert join.expire(0, now_ms=5_999).feedback == []
    out = join.expire(0, now_ms=6_000)
    assert [r.status for r in out.feedback] == [FeedbackStatus.EXPIRED]
    assert join.counters.expired == 1
    # Not released yet: a second tick does not repeat it.
    assert join.expire(0, now_ms=6_500).feedback == []
    assert join.pending_size() == 1
    assert join.release(out.releases) == 1
    assert join.pending_size() == 0
    assert join.pending.get(0, "p1") is None


def test_joined_entry_is_released_silently_when_its_window_closes() -> None:
    join, _ = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    join.on_outcome(0, outcome())
    out = join.expire(0, now_ms=7_000)
    assert out.feedback == []
    assert join.release(out.releases) == 1
    assert join.pending_size() == 0


def test_outcome_after_window_closed_is_late_not_joined() -> None:
    join, clock = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    clock.now_ms = 6_001
    assert join.on_outcome(0, outcome()).feedback == []
    assert join.counters.late_outcomes == 1
    expired = join.expire(0)
    assert [r.status for r in expired.feedback] == [FeedbackStatus.EXPIRED]


def test_entry_changed_before_release_is_kept_and_revisited() -> None:
    join, clock = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    out = join.expire(0, now_ms=6_000)
    # An outcome slipped in while the expired row was being flushed.
    clock.now_ms = 5_999
    join.on_outcome(0, outcome())
    assert join.release(out.releases) == 0
    again = join.expire(0, now_ms=6_100)
    assert again.feedback == []
    assert join.release(again.releases) == 1


def test_early_outcome_is_dropped_after_its_wait() -> None:
    clock = Clock(0)
    join = JoinWindow(
        InMemoryStateStore[PendingPrediction](),
        InMemoryStateStore[EarlyOutcome](),
        JoinWindows(default_window_ms=10_000, outcome_wait_ms=2_000),
        clock,
    )
    join.on_outcome(0, outcome())
    out = join.expire(0, now_ms=2_000)
    assert out.feedback == []
    assert join.release(out.releases) == 1
    assert join.early_size() == 0
    assert join.counters.early_outcomes_dropped == 1


def test_partitions_are_independent_and_rebuilt_from_the_store() -> None:
    join, _ = make_join(window_ms=5_000)
    join.on_prediction(0, prediction("a"))
    join.on_prediction(1, prediction("b"))
    join.on_outcome(1, outcome("a"))  # different partition: does not pair
    assert join.pending_size(0) == 1
    join.revoke(0)
    assert join.pending_size(0) == 0
    join.assign(0)
    assert join.pending_size(0) == 1
    assert [r.prediction_id for r in join.expire(0, now_ms=10_000).feedback] == ["a"]


def test_replay_of_the_whole_input_reproduces_the_same_rows() -> None:
    join, _ = make_join()
    inputs = [prediction("a"), outcome("b"), prediction("b"), outcome("a"), outcome("c")]

    def run() -> list[tuple[str, str, float | None]]:
        rows = []
        for item in inputs:
            if hasattr(item, "model_name"):
                out = join.on_prediction(0, item)  # type: ignore[arg-type]
            else:
                out = join.on_outcome(0, item)  # type: ignore[arg-type]
            rows += [(r.prediction_id, r.route, r.ground_truth) for r in out.feedback]
        return sorted(rows)

    first = run()
    # Replay after a crash: the state survived (changelog), the output did not. Replays may
    # repeat a row (the sink collapses those) but never lose or invent one.
    assert set(run()) == set(first)
    assert [pid for pid, _, _ in first] == ["a", "b"]
