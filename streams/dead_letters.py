"""Bad input: decode and check one source record, or turn it into a DeadLetter with its reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import DeadLetter, OutcomeEvent, PredictionEvent
from safeloop.schemas.exceptions import DecodeError
from safeloop.schemas.validation import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    validate_outcome,
    validate_prediction,
)
from safeloop.streams.exceptions import InvalidRecordError

KEY_MISMATCH = "key_mismatch"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One consumed Kafka record, as far as dead letters need it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def decode_prediction(
    record: SourceRecord, now_ms: int, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
) -> PredictionEvent:
    """The valid prediction in `record`, or InvalidRecordError with a stable reason."""
    try:
        event = PREDICTION_CODEC.decode(record.value or b"")
        validate_prediction(event, now_ms, max_future_skew_ms)
    except DecodeError as exc:
        raise _invalid(record, exc) from exc
    _check_key(record, event.prediction_id)
    return event


def decode_outcome(
    record: SourceRecord, now_ms: int, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
) -> OutcomeEvent:
    """The valid outcome in `record`, or InvalidRecordError with a stable reason."""
    try:
        event = OUTCOME_CODEC.decode(record.value or b"")
        validate_outcome(event, now_ms, max_future_skew_ms)
    except DecodeError as exc:
        raise _invalid(record, exc) from exc
    _check_key(record, event.prediction_id)
    return event


def dead_letter(
    record: SourceRecord, error: InvalidRecordError, consumer: str, now_ms: int
) -> DeadLetter:
    """The dead letter for `record`: original bytes, where it came from and why it failed."""
    return DeadLetter(
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        key=record.key,
        value=record.value,
        reason=f"{error.reason}: {error.detail}",
        error_type=error.reason,
        timestamp=now_ms,
        consumer=consumer,
    )


class DeadLetterCounts:
    """How many dead letters were sent, per source topic and reason."""

    def __init__(self) -> None:
        self.by_topic_reason: Counter[tuple[str, str]] = Counter()

    def count(self, letter: DeadLetter) -> None:
        self.by_topic_reason[(letter.source_topic, letter.error_type)] += 1

    @property
    def total(self) -> int:
        return sum(self.by_topic_reason.values())


def _invalid(record: SourceRecord, exc: DecodeError) -> InvalidRecordError:
    detail = exc.message if exc.field is None else f"{exc.message} (field {exc.field})"
    return InvalidRecordError(
        str(exc.reason),
        detail,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )


def _check_key(record: SourceRecord, prediction_id: str) -> None:
    # The key decides the partition; a body under another id would be joined in the wrong place.
    expected = prediction_id.encode()
    if record.key != expected:
        raise InvalidRecordError(
            KEY_MISMATCH,
            f"record key {record.key!r} does not match prediction_id {prediction_id!r}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
