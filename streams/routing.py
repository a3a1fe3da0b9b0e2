"""Where a join input belongs, and the re-route of one consumed elsewhere.

A prediction and its outcome meet on the home partition of their prediction_id: the partition
the Java client's default partitioner picks for it (`infra/kafka/partitioner.py`). A producer
with another partitioner (librdkafka's default, round-robin, explicit partitions, no key) puts
records elsewhere; the processor sends those to the same partition of its repartition topic,
keyed by prediction_id, and joins them when it reads them there (Kafka Streams' approach: only
misrouted records pay the extra hop).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from safeloop.infra.kafka.dead_letters import ConsumedRecord, reject
from safeloop.infra.kafka.partitioner import murmur2, murmur2_many

# The header naming what a repartition record holds (its value is a `RecordKind`).
KIND_HEADER = "safeloop-kind"


class RecordKind(enum.Enum):
    """What a record on the repartition topic holds."""

    PREDICTION = b"prediction"
    OUTCOME = b"outcome"


@dataclass(frozen=True, slots=True)
class Reroute:
    """A misrouted record's copy for the repartition topic, on its home partition."""

    partition: int
    key: bytes
    value: bytes
    kind: RecordKind

    @property
    def headers(self) -> list[tuple[str, str | bytes | None]]:
        return [(KIND_HEADER, self.kind.value)]


class HomePartitions:
    """The home partition of a prediction_id among `partitions` (the join topics' count)."""

    def __init__(self, partitions: int) -> None:
        if partitions <= 0:
            raise ValueError(f"partitions must be positive, got {partitions}")
        self.partitions = partitions

    def of(self, prediction_id: str) -> int:
        # default_partition inlined: this runs once per consumed record.
        return (murmur2(prediction_id.encode()) & 0x7FFFFFFF) % self.partitions

    def of_many(self, prediction_ids: Sequence[str]) -> list[int]:
        """`of` for each id, in order: murmur2 over the batch at once (numpy)."""
        hashes = murmur2_many([key.encode() for key in prediction_ids])
        return [(h & 0x7FFFFFFF) % self.partitions for h in hashes]


def kind_of(record: ConsumedRecord) -> RecordKind:
    """The kind a repartition record carries in its header; RecordRejectedError if none."""
    for name, value in record.headers or ():
        if name == KIND_HEADER:
            try:
                return RecordKind(bytes(value))
            except ValueError:
                break
    raise reject(record, "unknown_kind", f"no valid {KIND_HEADER} header on a repartition record")
