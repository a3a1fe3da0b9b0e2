"""A rebalance that gives a metrics consumer its partitions back (the coordinator moved, a
member came and went, the session was lost while a broker restarted) resumes where reading
got, windows intact: nothing is re-read twice, so nothing is counted twice and the guard is
not blind while a replay runs."""

from __future__ import annotations

from typing import Any

from _fake_message import TOPIC, FakeMessage
from confluent_kafka import TopicPartition

from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.services.monitor.consumer import EventConsumer

COMMITTED = 100
REPLAY_FROM_OFFSET = 40


class Partition:
    """One partition of 1,000 records, committed at 100; `assign` moves the read position."""

    def __init__(self) -> None:
        self.read_to = COMMITTED
        self.committed_at = COMMITTED
        self.assigned: list[list[TopicPartition]] = []
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def rebalance(self, *, lost: bool = False) -> None:
        """Revoke (or lose) partition 0, then assign it back at the committed offset."""
        self.callbacks["on_lost" if lost else "on_revoke"](self, [TopicPartition(TOPIC, 0)])
        self.read_to = COMMITTED
        self.callbacks["on_assign"](self, [TopicPartition(TOPIC, 0, -1001)])

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned.append(partitions)
        self.read_to = partitions[0].offset

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        until = min(1_000, self.read_to + num_messages)
        messages = [FakeMessage(offset) for offset in range(self.read_to, until)]
        self.read_to = until
        return messages

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, tp.partition, self.read_to) for tp in partitions]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, tp.partition, self.committed_at) for tp in partitions]

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float
    ) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, tp.partition, REPLAY_FROM_OFFSET) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return 0, 1_000


def _assigned() -> tuple[Partition, EventConsumer[Any]]:
    """Assigned after a restart: re-reading 40..100 to rebuild the windows."""
    partition = Partition()
    consumer = EventConsumer(
        partition,  # type: ignore[arg-type]
        TOPIC,
        PREDICTION_CODEC,
        None,  # type: ignore[arg-type]
        "dead-letters",
        name="predictions",
    )
    consumer.replay_from = lambda: 1
    partition.callbacks["on_assign"](partition, [TopicPartition(TOPIC, 0, -1001)])
    return partition, consumer


def _started() -> tuple[Partition, EventConsumer[Any]]:
    """Assigned after a restart (40..100 replayed), then read on to offset 300."""
    partition, consumer = _assigned()
    assert partition.read_to == REPLAY_FROM_OFFSET
    assert len(consumer.poll(260, 0.0)) == 260
    assert consumer.rebuilt and partition.read_to == 300
    return partition, consumer


def test_partitions_given_straight_back_resume_where_reading_got_with_nothing_re_read() -> None:
    partition, consumer = _started()
    partition.rebalance()
    assert partition.assigned[-1] == [TopicPartition(TOPIC, 0, 300)]
    events = consumer.poll(50, 0.0)
    assert len(events) == 50 and partition.read_to == 350, "offsets 300..349, read once"
    assert consumer.rebuilt, "no replay: the guard judges at once"
    assert consumer.counts.partitions_kept == 1
    assert consumer.positions() == [TopicPartition(TOPIC, 0, 350)]


def test_lost_partitions_given_back_resume_where_reading_got_when_nobody_read_on() -> None:
    partition, consumer = _started()
    partition.rebalance(lost=True)
    # Committed at 100, read to 300: no other member read on, the windows hold 40..299.
    assert partition.assigned[-1] == [TopicPartition(TOPIC, 0, 300)]
    assert consumer.counts.partitions_kept == 1
    assert len(consumer.poll(30, 0.0)) == 30 and consumer.rebuilt
    assert consumer.positions() == [TopicPartition(TOPIC, 0, 330)]


def test_lost_partitions_re_read_only_what_another_member_committed_meanwhile() -> None:
    partition, consumer = _started()
    partition.committed_at = 500  # another member read 300..499 while the session was lost
    partition.rebalance(lost=True)
    assert partition.assigned[-1] == [TopicPartition(TOPIC, 0, 300)]
    assert consumer.counts.partitions_kept == 0
    assert len(consumer.poll(150, 0.0)) == 150 and not consumer.rebuilt
    assert consumer.positions() == [TopicPartition(TOPIC, 0, 500)], "never below the commit"
    assert len(consumer.poll(100, 0.0)) == 100 and consumer.rebuilt
    assert consumer.replay.replayed == 60 + 200, "40..99 at start, then 300..499, once each"
    assert consumer.positions() == [TopicPartition(TOPIC, 0, 550)]


def test_a_partition_revoked_while_still_replaying_resumes_its_replay_where_it_got() -> None:
    partition, consumer = _assigned()
    consumer.poll(10, 0.0)  # 40..49 of a replay up to 100
    partition.rebalance()
    assert partition.assigned[-1] == [TopicPartition(TOPIC, 0, 50)]
    assert consumer.counts.partitions_kept == 0
    consumer.poll(100, 0.0)
    assert consumer.rebuilt and consumer.replay.replayed == 60, "40..99, each once"
