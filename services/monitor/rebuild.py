"""Rebuilding the windows after a start or a rebalance by re-reading the recent past of a topic.

The windows live in memory, and a consumer group resumes at its committed offsets: records
before them were folded into windows that died with the previous process (or with the
partition's previous owner). On assignment, each partition whose committed offset lies after
the first record at or after `from_ms` is read again from there. Those records are *replayed*:
they refill the windows (health, performance, drift, the guard's, a rollout step's evidence)
but have already had their side effects (dead letters, committed snapshots), so none is
repeated, and the offsets to commit never move back below what was committed. A partition a
rebalance gives back to the consumer that read it (revoked, or lost with a session that
expired while a broker restarted) is still in the windows: it replays only what another member
committed after where this consumer's reading got, so no record is in a window twice.

Why the log and not ClickHouse: predictions are only in Kafka (ClickHouse holds the joined
feedback and metric *summaries*, not the rows the windows are made of), the topics keep days
while the windows span minutes to an hour, and re-reading through the same decode path gives
the same windows, by construction, as the ones lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

logger = logging.getLogger(__name__)

# Broker round trips at assignment: committed offsets and the offsets of a timestamp.
REBUILD_PROBE_TIMEOUT_S = 10.0

ReplayFrom = Callable[[], int | None]


@dataclass(frozen=True, slots=True)
class ReplayStart:
    """Read `partition` from `offset`; records before `until` (its committed offset) replay."""

    partition: int
    offset: int
    until: int


def replay_starts(
    consumer: Consumer,
    topic: str,
    partitions: Sequence[int],
    from_ms: int | None,
    resume: Mapping[int, int] | None = None,
) -> list[ReplayStart]:
    """Where each partition must be re-read from to hold its records since `from_ms`.

    A partition in `resume` is one the windows already hold up to that offset (this consumer
    read it before a rebalance gave it back): it is re-read from there, never from `from_ms`,
    so nothing is counted twice. Partitions never committed (the group reads them from the
    start anyway) or whose start is at or after the committed offset need no replay.
    Raises KafkaException when the broker cannot say.
    """
    resume = resume or {}
    asked = list(partitions) if from_ms is not None else [p for p in partitions if p in resume]
    by_time = [p for p in asked if p not in resume]
    if not asked:
        return []
    committed = consumer.committed(
        [TopicPartition(topic, p) for p in asked], timeout=REBUILD_PROBE_TIMEOUT_S
    )
    first_since = dict(resume)
    if by_time and from_ms is not None:
        at_time = consumer.offsets_for_times(
            [TopicPartition(topic, p, from_ms) for p in by_time], timeout=REBUILD_PROBE_TIMEOUT_S
        )
        first_since.update((tp.partition, tp.offset) for tp in at_time)
    starts = []
    for tp in committed:
        if tp.error is not None:
            raise KafkaException(tp.error)
        start = first_since.get(tp.partition, -1)
        # offset -1: no record at or after from_ms; committed < 0: nothing committed yet.
        if tp.offset >= 0 and 0 <= start < tp.offset:
            starts.append(ReplayStart(tp.partition, int(start), int(tp.offset)))
    return starts


class ReplayTracker:
    """Which partitions still replay, and up to where; `done` once every one got there."""

    __slots__ = ("_until", "failures", "replayed")

    def __init__(self) -> None:
        self._until: dict[int, int] = {}
        # Records re-read into the windows since start; rebuild probes that failed.
        self.replayed = 0
        self.failures = 0

    def begin(self, starts: Sequence[ReplayStart]) -> None:
        for start in starts:
            self._until[start.partition] = start.until

    def drop(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self._until.pop(partition, None)

    def is_replay(self, partition: int, offset: int) -> bool:
        """Whether this record was read before: it refills windows, nothing else."""
        until = self._until.get(partition)
        if until is None or offset >= until:
            return False
        self.replayed += 1
        return True

    def pending(self) -> list[int]:
        return sorted(self._until)

    def reached(self, positions: dict[int, int]) -> None:
        """Forget the partitions whose read position got to their committed offset."""
        for partition, until in list(self._until.items()):
            if positions.get(partition, -1) >= until:
                del self._until[partition]

    @property
    def done(self) -> bool:
        return not self._until
