"""The windowed join over an in-memory store: pairing, routes, duplicates, corrections, replay."""

from __future__ import annotations

from _stream_events import outcome, prediction

from safeloop.schemas.events import FeedbackStatus, Route
from safeloop.streams.join import JoinWindow, Release, closed_marker
from safeloop.streams.state import EarlyOutcome, InMemoryStateStore, PendingPrediction
from safeloop.streams.windows import JoinWindows


class Clock:
    def __init__(self, now_ms: int = 1_500) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def make_join(window_ms: int = 10_000, wait_ms: int = 3_600_000) -> tuple[JoinWindow, Clock]:
    clock = Clock()
    join = JoinWindow(
        InMemoryStateStore[PendingPrediction](),
        InMemoryStateStore[EarlyOutcome](),
        JoinWindows(default_window_ms=window_ms, early_outcome_wait_ms=wait_ms),
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
    # What stays is the closed marker, until the early-outcome wait after the window.
    assert join.pending.get(0, "p1") == closed_marker(6_000 + 3_600_000)
    assert join.expire(0, now_ms=6_000 + 3_599_999).releases == []
    gone = join.expire(0, now_ms=6_000 + 3_600_000)
    assert gone.feedback == []
    assert join.release(gone.releases) == 1
    assert join.pending_size() == 0
    assert join.pending.get(0, "p1") is None


def test_joined_entry_is_released_silently_when_its_window_closes() -> None:
    join, _ = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    join.on_outcome(0, outcome())
    out = join.expire(0, now_ms=7_000)
    assert out.feedback == []
    assert join.release(out.releases) == 1
    assert join.pending.get(0, "p1") == closed_marker(6_000 + 3_600_000)


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
        JoinWindows(default_window_ms=10_000, early_outcome_wait_ms=2_000),
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


def test_input_seen_before_is_flagged_repeated_first_input_is_not() -> None:
    # `repeated` makes the sink check the batch against ClickHouse (exactly_once): set for
    # what the state says was seen before, never for first input (the hot path).
    join, _ = make_join()
    assert not join.on_outcome(0, outcome("e")).repeated  # early
    assert join.on_outcome(0, outcome("e")).repeated  # the same early outcome again
    assert not join.on_prediction(0, prediction("e")).repeated  # pairs with it
    assert not join.on_prediction(0, prediction("a")).repeated
    assert not join.on_outcome(0, outcome("a", ts=2_000)).repeated
    assert not join.on_outcome(0, outcome("a", ts=3_000, truth=0.0)).repeated  # a correction
    replayed = join.on_outcome(0, outcome("a", ts=3_000, truth=0.0))
    assert replayed.repeated and len(replayed.feedback) == 1
    again = join.on_prediction(0, prediction("a"))
    assert again.repeated and len(again.feedback) == 1
    assert not join.on_prediction(0, prediction("a", route=Route.SHADOW)).repeated


def _closed_after_expiry(join: JoinWindow, now_ms: int) -> None:
    out = join.expire(0, now_ms=now_ms)
    assert join.release(out.releases) == len(out.releases) > 0


def test_an_outcome_after_the_window_closed_is_late_and_not_parked() -> None:
    join, clock = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    _closed_after_expiry(join, 6_000)
    clock.now_ms = 7_000
    assert join.on_outcome(0, outcome(ts=6_900)).feedback == []
    assert join.counters.late_outcomes == 1
    assert join.counters.early_outcomes == 0
    assert join.early_size() == 0


def test_an_outcome_whose_time_is_past_the_window_end_is_late_before_expiry_runs() -> None:
    join, clock = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    clock.now_ms = 5_500
    assert join.on_outcome(0, outcome(ts=6_001)).feedback == []
    assert join.counters.late_outcomes == 1
    entry = join.pending.get(0, "p1")
    assert entry is not None and entry.outcome is None
    # The prediction still expires unmatched; feedback_late pairs it with the outcome.
    assert [r.status for r in join.expire(0, now_ms=6_000).feedback] == [FeedbackStatus.EXPIRED]


def test_an_outcome_older_than_the_longest_window_is_late_without_any_state() -> None:
    join, clock = make_join(window_ms=10_000)
    clock.now_ms = 50_000
    assert join.on_outcome(0, outcome(ts=40_000)).feedback == []
    assert join.counters.late_outcomes == 1
    assert join.early_size() == 0


def test_an_early_outcome_waits_the_configured_wait_at_most() -> None:
    join, clock = make_join(window_ms=10_000, wait_ms=2_000)
    clock.now_ms = 1_500
    join.on_outcome(0, outcome("a", ts=1_400))
    waiting = join.early.get(0, "a")
    assert waiting is not None and waiting.expires_at_ms == 3_500
    # ...and not past the longest window after its own time: nothing could take it then.
    clock.now_ms = 9_500
    join.on_outcome(0, outcome("b", ts=1_000))
    waiting = join.early.get(0, "b")
    assert waiting is not None and waiting.expires_at_ms == 11_000
    released = 0
    for _ in range(2):  # a bucket whose keys are still being released holds the later ones
        released += join.release(join.expire(0, now_ms=11_000).releases)
    assert released == 2
    assert join.early_size() == 0
    assert join.counters.early_outcomes_dropped == 2


def test_a_waiting_outcome_past_the_arriving_predictions_window_is_late() -> None:
    join, clock = make_join(window_ms=10_000)
    clock.now_ms = 9_000
    join.on_outcome(0, outcome(ts=8_000))
    # A prediction published late whose window ended before the outcome's time.
    out = join.on_prediction(0, prediction(ts=-5_000))
    assert out.feedback == []
    assert join.counters.late_outcomes == 1
    assert join.release(out.releases) == 1
    assert join.early_size() == 0


def test_a_prediction_replayed_after_its_window_closed_emits_nothing_again() -> None:
    join, clock = make_join(window_ms=5_000)
    join.on_prediction(0, prediction(ts=1_000))
    join.on_outcome(0, outcome(ts=2_000))
    _closed_after_expiry(join, 6_000)
    clock.now_ms = 6_500
    assert join.on_prediction(0, prediction(ts=1_000)).feedback == []
    assert join.expire(0, now_ms=7_000).feedback == []
    assert join.pending.get(0, "p1") == closed_marker(6_000 + 3_600_000)


def test_state_is_bounded_by_the_windows_and_the_wait() -> None:
    join, clock = make_join(window_ms=5_000, wait_ms=1_000)
    for i in range(20):
        clock.now_ms = 1_000 + i
        join.on_prediction(0, prediction(f"p{i}", ts=1_000 + i))
        join.on_outcome(0, outcome(f"o{i}", ts=1_000 + i))
    now = 1_000 + 5_000 + 1_000 + 100
    for _ in range(3):
        out = join.expire(0, now_ms=now)
        join.release(out.releases)
    assert join.pending_size() == 0 and join.early_size() == 0
    assert len(join.pending) == 0 and len(join.early) == 0  # type: ignore[arg-type]


def test_feedback_records_built_positionally_equal_the_keyword_built_ones() -> None:
    from dataclasses import fields

    from safeloop.schemas.events import FeedbackRecord
    from safeloop.streams.join import _record

    p = prediction()
    o = outcome()
    for paired in (o, None):
        built = _record(p, 9_000, paired)
        expected = FeedbackRecord(
            prediction_id=p.prediction_id,
            model_name=p.model_name,
            model_version=p.model_version,
            route=p.route,
            replica_id=p.replica_id,
            features=p.features,
            prediction=p.prediction,
            confidence=p.confidence,
            prediction_timestamp=p.timestamp,
            status=FeedbackStatus.JOINED if paired else FeedbackStatus.EXPIRED,
            ground_truth=paired.ground_truth if paired else None,
            outcome_timestamp=paired.timestamp if paired else None,
            label_delay_ms=paired.timestamp - p.timestamp if paired else None,
            outcome_source=paired.source if paired else None,
            emitted_at=9_000,
            class_probabilities=p.class_probabilities,
            segments=p.segments,
        )
        assert built == expected
        assert [getattr(built, f.name) for f in fields(built)] == [
            getattr(expected, f.name) for f in fields(expected)
        ]


def test_expiry_keeps_up_under_steady_load_when_releases_wait_for_slow_flushes() -> None:
    # The worker releases what a sweep emitted only after the sink flushed it; with flushes
    # slower than the sweep interval, a sweep that waited on each bucket fell further behind
    # every second (found by the soak: pending grew past twice its steady size in 12 minutes).
    window_ms, wait_ms, rate_per_s, label_delay_s = 10_000, 20_000, 20, 2
    join, clock = make_join(window_ms=window_ms, wait_ms=wait_ms)
    start_ms = clock.now_ms
    unflushed: list[list[Release]] = []
    labels: list[tuple[int, str]] = []
    for second in range(200):
        for i in range(rate_per_s):
            clock.now_ms = start_ms + second * 1_000 + i * (1_000 // rate_per_s)
            key = f"p{second}-{i}"
            join.on_prediction(0, prediction(key, ts=clock.now_ms))
            labels.append((clock.now_ms + label_delay_s * 1_000, key))
        while labels and labels[0][0] <= clock.now_ms:
            join.on_outcome(0, outcome(labels.pop(0)[1], ts=clock.now_ms))
        unflushed.append(join.expire(0, clock.now_ms).releases)
        if len(unflushed) > 2:  # a flush takes two sweep intervals
            join.release(unflushed.pop(0))
    steady = rate_per_s * (window_ms + wait_ms) // 1_000
    assert join.pending_size() <= steady + 4 * rate_per_s
    # Nothing is kept much past its deadline: the sweep is as current as its flushes allow.
    overdue = [
        key
        for key in join.pending_index.due(0, clock.now_ms - 4_000)
        if (entry := join.pending.get(0, key)) and entry.expires_at_ms < clock.now_ms - 4_000
    ]
    assert overdue == []
