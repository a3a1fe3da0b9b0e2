"""Caught up means near the live end: a consumer that reads its start-up backlog while traffic
keeps arriving is not primed when it reaches the end measured at assignment, only once a fresh
measure of the end is within one poll's batch."""

from __future__ import annotations

from typing import Any

from _fake_message import TOPIC, FakeMessage
from confluent_kafka import TopicPartition

from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.services.monitor.consumer import EventConsumer

BATCH = 3_000


class GrowingTopic:
    """One partition that gains `arrivals_per_poll` records every time it is read."""

    def __init__(self, backlog: int, arrivals_per_poll: int) -> None:
        self.high = backlog
        self.read_to = 0
        self._arrivals = arrivals_per_poll
        self.on_assign: Any = None

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.on_assign = callbacks["on_assign"]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        until = min(self.high, self.read_to + num_messages)
        messages = [FakeMessage(offset) for offset in range(self.read_to, until)]
        self.read_to = until
        self.high += self._arrivals
        return messages

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, tp.partition, self.read_to) for tp in partitions]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, tp.partition, -1001) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return 0, self.high


def _consumer(topic: GrowingTopic) -> EventConsumer[Any]:
    consumer = EventConsumer(
        topic,  # type: ignore[arg-type]
        TOPIC,
        PREDICTION_CODEC,
        None,  # type: ignore[arg-type]
        "dead-letters",
        name="predictions",
    )
    topic.on_assign(topic, [TopicPartition(TOPIC, 0)])
    return consumer


def test_reaching_the_end_seen_at_assignment_is_not_caught_up_while_traffic_piled_up() -> None:
    topic = GrowingTopic(backlog=10_000, arrivals_per_poll=1_500)
    consumer = _consumer(topic)
    first_end_reached_behind = None
    for _ in range(100):
        consumer.poll(BATCH, 0.0)
        if first_end_reached_behind is None and topic.read_to >= 10_000:
            first_end_reached_behind = topic.high - topic.read_to
            # The end seen at assignment is reached, but the traffic since is still ahead.
            assert first_end_reached_behind > BATCH
            assert consumer.membership.caught_up_at is None
        if consumer.membership.caught_up_at is not None:
            break
    assert consumer.membership.caught_up_at is not None
    remaining = consumer.membership.catch_up_remaining
    # Traffic keeps arriving: "caught up" is within one batch of the end, not at it.
    assert remaining is not None and 0 < remaining <= BATCH
    assert topic.read_to > 10_000 + 1_500


def test_a_quiet_topic_is_caught_up_once_its_end_is_reached() -> None:
    topic = GrowingTopic(backlog=2_500, arrivals_per_poll=0)
    consumer = _consumer(topic)
    consumer.poll(1_000, 0.0)
    assert consumer.membership.caught_up_at is None
    assert consumer.membership.catch_up_remaining == 1_500
    consumer.poll(5_000, 0.0)
    assert consumer.membership.caught_up_at is not None
    assert consumer.membership.catch_up_remaining == 0
