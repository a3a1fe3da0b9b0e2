"""The windowed join: pending predictions meet their outcomes (early, late or corrected)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from safeloop.schemas.events import (
    FeedbackRecord,
    FeedbackStatus,
    OutcomeEvent,
    PredictionEvent,
    Route,
)
from safeloop.schemas.records import slot_constructor
from safeloop.streams.expiry import ExpiryIndex
from safeloop.streams.state import (
    EarlyOutcome,
    PendingPrediction,
    StateStore,
    new_early,
    new_pending,
)
from safeloop.streams.windows import JoinWindows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Release:
    """State to delete (or to replace by `replacement`) once the rows emitted before it are
    safely in ClickHouse."""

    partition: int
    key: str
    expires_at_ms: int
    # What expiry saw: the entry's stored bytes (`StoredEntry.stored`) or its value; held until
    # the flush, so not the decoded events (a broker outage holds every release it delays).
    expected: object
    replacement: PendingPrediction | None = None
    early: bool = False


def closed_marker(expires_at_ms: int) -> PendingPrediction:
    """What stays of a prediction_id after its window closed, until `expires_at_ms`: enough to
    know that an outcome for it is late."""
    return PendingPrediction((), None, expires_at_ms)


def is_closed(entry: PendingPrediction) -> bool:
    return not entry.predictions


@dataclass(slots=True)
class JoinCounters:
    """Totals since start; observability reads them."""

    predictions: int = 0
    outcomes: int = 0
    joined: int = 0
    expired: int = 0
    duplicate_predictions: int = 0
    stale_outcomes: int = 0
    corrections: int = 0
    late_outcomes: int = 0
    early_outcomes: int = 0
    early_outcomes_dropped: int = 0


@dataclass(slots=True)
class JoinOutput:
    """What one call produced: feedback to emit now, state to release after the next flush."""

    feedback: list[FeedbackRecord] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    # The input was seen before (a replay, or a duplicate): what it emits may be stored already.
    repeated: bool = False

    def extend(self, other: JoinOutput) -> None:
        self.feedback.extend(other.feedback)
        self.releases.extend(other.releases)
        self.repeated = self.repeated or other.repeated


class JoinWindow:
    """Pairs predictions and outcomes by prediction_id over two state stores.

    Every route (production, canary, shadow) of a prediction_id waits in one entry; an outcome
    pairs with all of them. Output is idempotent: replaying any input re-emits the same rows,
    and state is deleted only after the rows that depend on it were flushed (see `Release`).

    Late is late: an outcome after its prediction's window (the window closed, or the outcome's
    time is past the window's end) is counted late and not paired here (the sink stores it in
    `outcomes`; the `feedback_late` view pairs it). A closed prediction_id is remembered for
    `early_outcome_wait_ms` after its window, so such an outcome is not parked as early. An
    early outcome waits at most `early_outcome_wait_ms`, and never past the longest window
    after its own time: no prediction could still take it then.
    """

    def __init__(
        self,
        pending: StateStore[PendingPrediction],
        early: StateStore[EarlyOutcome],
        windows: JoinWindows,
        clock_ms: Callable[[], int],
        bucket_ms: int = 1000,
    ) -> None:
        self.pending = pending
        self.early = early
        self.windows = windows
        self.clock_ms = clock_ms
        self.pending_index = ExpiryIndex(bucket_ms)
        self.early_index = ExpiryIndex(bucket_ms)
        self.counters = JoinCounters()
        # Keys handed out for release and not yet confirmed, so a tick does not repeat them.
        self._releasing: set[tuple[int, str]] = set()

    # -- input ---------------------------------------------------------------------------

    def begin_batch(self, keys: dict[int, list[str]]) -> None:
        """The next calls are one batch over `keys` (prediction_ids by partition): their state
        is read at once and written once, at `end_batch`."""
        self.pending.begin_batch(keys)
        self.early.begin_batch(keys)

    def end_batch(self) -> None:
        self.pending.end_batch()
        self.early.end_batch()

    def on_prediction(
        self, partition: int, prediction: PredictionEvent, raw: bytes | None = None
    ) -> JoinOutput:
        """Add a prediction; pairs it at once if its outcome is already here.

        `raw`, the Avro bytes `prediction` was decoded from, is stored as is when given.
        """
        self.counters.predictions += 1
        key = prediction.prediction_id
        now_ms = self.clock_ms()
        out = JoinOutput()
        entry = self.pending.get(partition, key)
        if entry is not None and is_closed(entry):
            # Its window closed already: a replay after a crash, or a route too late to wait.
            self.counters.duplicate_predictions += 1
            out.repeated = True
            return out
        if entry is not None:
            if entry.for_route(prediction.route) is not None:
                self.counters.duplicate_predictions += 1
                out.repeated = True
                # Re-emit what this route already produced: the first emission may not have
                # reached ClickHouse before a crash, and the sink is idempotent.
                prediction = entry.for_route(prediction.route) or prediction
            else:
                raws = entry.raw_predictions
                entry = replace(
                    entry,
                    predictions=(*entry.predictions, prediction),
                    raw_predictions=None if raws is None or raw is None else (*raws, raw),
                )
                self.pending.put(partition, key, entry)
            if entry.outcome is not None:
                out.feedback.append(self._joined(prediction, entry.outcome, now_ms))
            return out

        expires_at_ms = prediction.timestamp + self.windows.window_ms(prediction.model_name)
        waiting = self.early.get(partition, key)
        if waiting is not None and waiting.outcome.timestamp > expires_at_ms:
            # The outcome's time is past this prediction's window: late, not a pair.
            self.counters.late_outcomes += 1
            self._release_early(out, partition, key, waiting)
            waiting = None
        outcome = waiting.outcome if waiting is not None else None
        entry = new_pending(
            (prediction,),
            outcome,
            expires_at_ms,
            None if raw is None else (raw,),
            waiting.raw_outcome if waiting is not None else None,
        )
        self.pending.put(partition, key, entry)
        self.pending_index.add(partition, key, expires_at_ms)
        if outcome is not None and waiting is not None:
            out.feedback.append(self._joined(prediction, outcome, now_ms))
            # The early outcome now lives in `entry`; drop its copy once the row is flushed.
            self._release_early(out, partition, key, waiting)
        return out

    def _release_early(
        self, out: JoinOutput, partition: int, key: str, waiting: EarlyOutcome
    ) -> None:
        if self.early.new_in_batch(partition, key):
            # Parked by this very batch: its outcome's source offset commits with this batch's
            # rows (a crash replays it), so it can go now, before it reaches RocksDB or the
            # changelog at all (an outcome and its prediction a few records apart cost
            # no early-outcome writes).
            self.early.delete(partition, key)
            self.early_index.discard(partition, key, waiting.expires_at_ms)
            return
        out.releases.append(Release(partition, key, waiting.expires_at_ms, waiting, early=True))
        self._releasing.add((partition, "early:" + key))

    def on_outcome(
        self, partition: int, outcome: OutcomeEvent, raw: bytes | None = None
    ) -> JoinOutput:
        """Pair an outcome with every route waiting for it, or keep it until they arrive.

        `raw`, the Avro bytes `outcome` was decoded from, is stored as is when given.
        """
        self.counters.outcomes += 1
        key = outcome.prediction_id
        now_ms = self.clock_ms()
        out = JoinOutput()
        entry = self.pending.get(partition, key)
        if entry is not None and (
            is_closed(entry)
            or now_ms >= entry.expires_at_ms
            or outcome.timestamp > entry.expires_at_ms
        ):
            # The window has closed (or is remembered as closed), or the outcome's time is past
            # its end: late. The sink stores it in `outcomes`; the feedback_late view pairs it.
            self.counters.late_outcomes += 1
            return out
        if entry is not None:
            current = entry.outcome
            if current is not None and current != outcome:
                if _newer(current, outcome):
                    self.counters.stale_outcomes += 1
                    return out
                self.counters.corrections += 1
            if current != outcome:
                # Not dataclasses.replace: a sixth of the cost, once per pair.
                entry = new_pending(
                    entry.predictions, outcome, entry.expires_at_ms, entry.raw_predictions, raw
                )
                self.pending.put(partition, key, entry)
            else:
                out.repeated = True
            out.feedback.extend(self._joined(p, outcome, now_ms) for p in entry.predictions)
            return out

        windows = self.windows
        if outcome.timestamp + windows.max_window_ms <= now_ms:
            # Older than the longest window: any prediction it could pair with has closed.
            self.counters.late_outcomes += 1
            return out
        waiting = self.early.get(partition, key)
        if waiting is not None and _newer(waiting.outcome, outcome):
            self.counters.stale_outcomes += 1
            return out
        if waiting is not None and waiting.outcome == outcome:
            out.repeated = True
        if waiting is None:
            self.counters.early_outcomes += 1
            expires_at_ms = min(
                now_ms + windows.early_outcome_wait_ms,
                outcome.timestamp + windows.max_window_ms,
            )
            self.early_index.add(partition, key, expires_at_ms)
        else:
            expires_at_ms = waiting.expires_at_ms
        self.early.put(partition, key, new_early(outcome, expires_at_ms, raw))
        return out

    # -- expiry --------------------------------------------------------------------------

    def expire(self, partition: int, now_ms: int | None = None) -> JoinOutput:
        """Emit `expired` for every route whose window closed unmatched; release due state."""
        now_ms = self.clock_ms() if now_ms is None else now_ms
        out = JoinOutput()
        for key in self.pending_index.due(partition, now_ms):
            if (partition, key) in self._releasing:
                continue
            head = self.pending.peek(partition, key)
            if head is None or head.expires_at_ms > now_ms:
                continue
            if head.predictions == 0:  # closed: nothing to emit
                out.releases.append(Release(partition, key, head.expires_at_ms, head.stored))
            else:
                if not head.has_outcome:
                    # Only an unmatched entry's events are decoded: they become expired rows.
                    entry = self.pending.get(partition, key)
                    predictions = () if entry is None else entry.predictions
                    self.counters.expired += len(predictions)
                    out.feedback.extend(self._expired(p, now_ms) for p in predictions)
                # Remembered as closed a while, so a late outcome is not parked as early.
                closed = closed_marker(head.expires_at_ms + self.windows.early_outcome_wait_ms)
                out.releases.append(
                    Release(partition, key, head.expires_at_ms, head.stored, closed)
                )
            self._releasing.add((partition, key))
        for key in self.early_index.due(partition, now_ms):
            marker = (partition, "early:" + key)
            if marker in self._releasing:
                continue
            waiting = self.early.get(partition, key)
            if waiting is None or waiting.expires_at_ms > now_ms:
                continue
            self.counters.early_outcomes_dropped += 1
            out.releases.append(Release(partition, key, waiting.expires_at_ms, waiting, early=True))
            self._releasing.add(marker)
        return out

    def release(self, releases: list[Release]) -> int:
        """Delete (or close) released state that did not change since; call after the flush.
        Returns how many entries were released."""
        pending: list[Release] = []
        early: list[Release] = []
        releasing = self._releasing
        for item in releases:
            if item.early:
                releasing.discard((item.partition, "early:" + item.key))
                early.append(item)
            else:
                releasing.discard((item.partition, item.key))
                pending.append(item)
        deleted = 0
        if pending:
            answers = self.pending.release_unchanged(
                [(r.partition, r.key, r.expected, r.replacement) for r in pending]
            )
            deleted += self._released(self.pending_index, pending, answers)
        if early:
            early_answers = self.early.release_unchanged(
                [(r.partition, r.key, r.expected, None) for r in early]
            )
            deleted += self._released(self.early_index, early, early_answers)
        return deleted

    def _released(
        self, index: ExpiryIndex, items: list[Release], answers: list[bool | None]
    ) -> int:
        deleted = 0
        for item, answer in zip(items, answers, strict=True):
            if answer is False:
                # Changed since (an outcome arrived): the next tick looks at it again.
                continue
            index.discard(item.partition, item.key, item.expires_at_ms)
            if answer:
                if item.replacement is not None:
                    self.pending_index.add(item.partition, item.key, item.replacement.expires_at_ms)
                deleted += 1
        return deleted

    # -- partitions ----------------------------------------------------------------------

    def assign(self, partition: int) -> None:
        """Index a newly assigned partition's state (after its changelog was restored)."""
        self.pending.forget(partition)
        self.early.forget(partition)
        self.pending_index.rebuild(partition, self.pending.expiries(partition))
        self.early_index.rebuild(partition, self.early.expiries(partition))

    def revoke(self, partition: int) -> None:
        """Forget a partition another worker now owns."""
        self.pending.forget(partition)
        self.early.forget(partition)
        self.pending_index.drop_partition(partition)
        self.early_index.drop_partition(partition)
        self._releasing = {item for item in self._releasing if item[0] != partition}

    def owns(self, partition: int) -> bool:
        return self.pending_index.has_partition(partition)

    def pending_size(self, partition: int | None = None) -> int:
        return self.pending_index.size(partition)

    def early_size(self, partition: int | None = None) -> int:
        return self.early_index.size(partition)

    # -- records -------------------------------------------------------------------------

    def _joined(
        self, prediction: PredictionEvent, outcome: OutcomeEvent, now_ms: int
    ) -> FeedbackRecord:
        self.counters.joined += 1
        return _record(prediction, now_ms, outcome)

    def _expired(self, prediction: PredictionEvent, now_ms: int) -> FeedbackRecord:
        return _record(prediction, now_ms, None)


def _newer(current: OutcomeEvent, candidate: OutcomeEvent) -> bool:
    """Whether `current` is strictly newer than `candidate` (ties go to the later arrival)."""
    return current.timestamp > candidate.timestamp


_new_feedback = slot_constructor(FeedbackRecord)


def _record(
    prediction: PredictionEvent, now_ms: int, outcome: OutcomeEvent | None
) -> FeedbackRecord:
    route = prediction.route
    # Positionally, in FeedbackRecord's field order (tests/unit/test_join.py checks it).
    return _new_feedback(
        prediction.prediction_id,
        prediction.model_name,
        prediction.model_version,
        route if type(route) is Route else Route(route),
        prediction.replica_id,
        prediction.features,
        prediction.prediction,
        prediction.confidence,
        prediction.timestamp,
        FeedbackStatus.JOINED if outcome is not None else FeedbackStatus.EXPIRED,
        outcome.ground_truth if outcome is not None else None,
        outcome.timestamp if outcome is not None else None,
        outcome.timestamp - prediction.timestamp if outcome is not None else None,
        outcome.source if outcome is not None else None,
        now_ms,
        prediction.class_probabilities,
        prediction.segments,
    )
