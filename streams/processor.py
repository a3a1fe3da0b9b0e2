"""One batch of source records through decode, validation and the join; no I/O here."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from safeloop.infra.exceptions import RecordRejectedError
from safeloop.infra.kafka.dead_letters import DeadLetterCounts, SourceRecord, dead_letter, reject
from safeloop.schemas.events import DeadLetter, FeedbackRecord, OutcomeEvent, PredictionEvent
from safeloop.schemas.validation import DEFAULT_MAX_FUTURE_SKEW_MS
from safeloop.streams.decoding import decode_outcome, decode_prediction
from safeloop.streams.join import JoinWindow, Release

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchResult:
    """What a batch produced, for the sink and the output topics."""

    feedback: list[FeedbackRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    predictions: list[PredictionEvent] = field(default_factory=list)
    outcomes: list[OutcomeEvent] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)


class BatchProcessor:
    """Routes records by topic: predictions and outcomes to the join, bad ones to dead letters."""

    def __init__(
        self,
        join: JoinWindow,
        predictions_topic: str,
        outcomes_topic: str,
        consumer_name: str,
        *,
        clock_ms: Callable[[], int],
        max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
    ) -> None:
        self.join = join
        self.predictions_topic = predictions_topic
        self.outcomes_topic = outcomes_topic
        self.consumer_name = consumer_name
        self.clock_ms = clock_ms
        self.max_future_skew_ms = max_future_skew_ms
        self.dead_letter_counts = DeadLetterCounts()
        self.consumed: Counter[str] = Counter()

    def process(self, records: Sequence[SourceRecord]) -> BatchResult:
        """Decode, check and join `records` in order."""
        result = BatchResult()
        now_ms = self.clock_ms()
        skew = self.max_future_skew_ms
        join = self.join
        for record in records:
            self.consumed[record.topic] += 1
            try:
                if record.topic == self.predictions_topic:
                    prediction = decode_prediction(record, now_ms, skew)
                    out = join.on_prediction(record.partition, prediction, record.value)
                    result.predictions.append(prediction)
                elif record.topic == self.outcomes_topic:
                    outcome = decode_outcome(record, now_ms, skew)
                    out = join.on_outcome(record.partition, outcome, record.value)
                    result.outcomes.append(outcome)
                else:
                    raise reject(record, "unknown_topic", f"no handler for topic {record.topic!r}")
            except RecordRejectedError as exc:
                letter = dead_letter(record, exc, self.consumer_name, now_ms)
                self.dead_letter_counts.count(letter)
                result.dead_letters.append(letter)
                log.debug("dead letter: %s", exc)
                continue
            if out.feedback:
                result.feedback.extend(out.feedback)
            if out.releases:
                result.releases.extend(out.releases)
        return result

    def expire(self, partitions: Sequence[int]) -> BatchResult:
        """Expired feedback and state to release, for the partitions this worker owns."""
        result = BatchResult()
        now_ms = self.clock_ms()
        for partition in partitions:
            out = self.join.expire(partition, now_ms)
            result.feedback.extend(out.feedback)
            result.releases.extend(out.releases)
        return result
