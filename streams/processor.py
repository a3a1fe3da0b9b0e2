"""One batch of source records through decode, validation and the join; no I/O here."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from safeloop.infra.exceptions import RecordRejectedError
from safeloop.infra.kafka.dead_letters import (
    ConsumedRecord,
    DeadLetterCounts,
    dead_letter,
    reject,
)
from safeloop.schemas.events import DeadLetter, FeedbackRecord, OutcomeEvent, PredictionEvent
from safeloop.schemas.validation import DEFAULT_MAX_FUTURE_SKEW_MS
from safeloop.streams.decoding import decode_outcome, decode_prediction
from safeloop.streams.join import JoinWindow, Release
from safeloop.streams.routing import HomePartitions, RecordKind, Reroute, kind_of

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchResult:
    """What a batch produced, for the sink and the output topics."""

    feedback: list[FeedbackRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    predictions: list[PredictionEvent] = field(default_factory=list)
    outcomes: list[OutcomeEvent] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    # Records consumed off their home partition: sent to the repartition topic, joined there.
    reroutes: list[Reroute] = field(default_factory=list)
    # Some input was seen before (replayed or duplicated): its rows may be stored already.
    repeated: bool = False


class BatchProcessor:
    """Routes records by topic: predictions and outcomes to the join (or, when consumed off
    their home partition, to the repartition topic), bad ones to dead letters."""

    def __init__(
        self,
        join: JoinWindow,
        predictions_topic: str,
        outcomes_topic: str,
        consumer_name: str,
        *,
        clock_ms: Callable[[], int],
        max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
        repartition_topic: str | None = None,
        partitions: int | None = None,
    ) -> None:
        self.join = join
        self.predictions_topic = predictions_topic
        self.outcomes_topic = outcomes_topic
        self.repartition_topic = repartition_topic
        # None: every record is taken as on its home partition (no re-routing).
        self.homes = None if partitions is None else HomePartitions(partitions)
        self.consumer_name = consumer_name
        self.clock_ms = clock_ms
        self.max_future_skew_ms = max_future_skew_ms
        self.dead_letter_counts = DeadLetterCounts()
        self.consumed: Counter[str] = Counter()
        # Source topic -> records sent to their home partition through the repartition topic.
        self.rerouted: Counter[str] = Counter()

    def process(self, records: Sequence[ConsumedRecord]) -> BatchResult:
        """Decode, check and join `records` in order; re-route the misplaced ones.

        In three passes over the batch: decode and check every record, find every home
        partition at once, then join with the batch's state read and written in one go."""
        result = BatchResult()
        now_ms = self.clock_ms()
        skew = self.max_future_skew_ms
        consumed = self.consumed
        decoded: list[tuple[ConsumedRecord, PredictionEvent | OutcomeEvent]] = []
        for record in records:
            topic = record.topic
            consumed[topic] += 1
            try:
                if topic == self.predictions_topic:
                    kind = RecordKind.PREDICTION
                elif topic == self.outcomes_topic:
                    kind = RecordKind.OUTCOME
                elif topic == self.repartition_topic:
                    kind = kind_of(record)
                else:
                    raise reject(record, "unknown_topic", f"no handler for topic {topic!r}")
                if kind is RecordKind.PREDICTION:
                    decoded.append((record, decode_prediction(record, now_ms, skew)))
                else:
                    decoded.append((record, decode_outcome(record, now_ms, skew)))
            except RecordRejectedError as exc:
                letter = dead_letter(record, exc, self.consumer_name, now_ms)
                self.dead_letter_counts.count(letter)
                result.dead_letters.append(letter)
                log.debug("dead letter: %s", exc)
        if self.homes is not None:
            homes = self.homes.of_many([event.prediction_id for _, event in decoded])
            joinable = []
            for (record, event), home in zip(decoded, homes, strict=True):
                if home != record.partition:
                    # Its rows are written when the copy is joined on `home`: written once.
                    kind = (
                        RecordKind.PREDICTION
                        if type(event) is PredictionEvent
                        else RecordKind.OUTCOME
                    )
                    self._reroute(result, record, home, event.prediction_id, kind)
                else:
                    joinable.append((record, event))
            decoded = joinable
        keys: dict[int, list[str]] = {}
        for record, event in decoded:
            keys.setdefault(record.partition, []).append(event.prediction_id)
        join = self.join
        join.begin_batch(keys)
        try:
            feedback = result.feedback
            releases = result.releases
            for record, event in decoded:
                if type(event) is PredictionEvent:
                    out = join.on_prediction(record.partition, event, record.value)
                    result.predictions.append(event)
                else:
                    assert isinstance(event, OutcomeEvent)
                    out = join.on_outcome(record.partition, event, record.value)
                    result.outcomes.append(event)
                if out.feedback:
                    feedback.extend(out.feedback)
                if out.releases:
                    releases.extend(out.releases)
                if out.repeated:
                    result.repeated = True
        finally:
            join.end_batch()
        return result

    def _reroute(
        self, result: BatchResult, record: ConsumedRecord, home: int, key: str, kind: RecordKind
    ) -> None:
        # Its rows are written when the copy is joined on `home`, not here: written once.
        result.reroutes.append(Reroute(home, key.encode(), record.value or b"", kind))
        self.rerouted[record.topic] += 1

    def expire(self, partitions: Sequence[int]) -> BatchResult:
        """Expired feedback and state to release, for the partitions this worker owns."""
        result = BatchResult()
        now_ms = self.clock_ms()
        for partition in partitions:
            out = self.join.expire(partition, now_ms)
            result.feedback.extend(out.feedback)
            result.releases.extend(out.releases)
        return result
