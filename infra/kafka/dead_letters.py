"""Decode or dead-letter: the one way a consumer turns a record into an event, or says why not.

Every consumer (the stream processor, the metrics service) decodes through `decode_or_reject`
and builds its dead letters with `dead_letter`, so a bad record gets the same stable reason,
source position and original bytes whoever read it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from safeloop.infra.exceptions import RecordRejectedError
from safeloop.schemas.codec import EventCodec
from safeloop.schemas.events import DeadLetter
from safeloop.schemas.exceptions import DecodeError

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One consumed Kafka record, as far as decoding and dead letters need it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # Kafka headers, when the consumer needs them (the processor's repartition topic).
    headers: tuple[tuple[str, bytes], ...] = ()


class ConsumedRecord(Protocol):
    """What decoding and dead letters read off a consumed record: a `SourceRecord`, or a
    Kafka client's own record object (the stream processor passes aiokafka's as fetched)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...


def decode_or_reject(
    record: ConsumedRecord,
    codec: EventCodec[E],
    *,
    validate: Callable[[E], None] | None = None,
) -> E:
    """The event in `record`, checked by `validate` (raises DecodeError); RecordRejectedError
    with a stable reason otherwise. The record's key is not checked: consumers that need the
    event on a given partition derive it from the body (see `streams/routing.py`)."""
    try:
        event = codec.decode(record.value or b"")
        if validate is not None:
            validate(event)
    except DecodeError as exc:
        detail = exc.message if exc.field is None else f"{exc.message} (field {exc.field})"
        raise reject(record, str(exc.reason), detail) from exc
    return event


def reject(record: ConsumedRecord, reason: str, detail: str) -> RecordRejectedError:
    """The error for a record that cannot be used, naming where it came from."""
    return RecordRejectedError(
        reason, detail, topic=record.topic, partition=record.partition, offset=record.offset
    )


def dead_letter(
    record: ConsumedRecord, error: RecordRejectedError, consumer: str, now_ms: int
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
    """How many dead letters were made, per source topic and reason."""

    def __init__(self) -> None:
        self.by_topic_reason: Counter[tuple[str, str]] = Counter()

    def count(self, letter: DeadLetter) -> None:
        self.by_topic_reason[(letter.source_topic, letter.error_type)] += 1

    @property
    def total(self) -> int:
        return sum(self.by_topic_reason.values())
