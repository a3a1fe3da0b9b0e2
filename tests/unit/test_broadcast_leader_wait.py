"""BroadcastReader waits out a partition with no reachable leader (a broker failover) instead
of failing, reports the wait, and still fails fast on errors that will not heal."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from safeloop.services.control import broadcast
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.control.exceptions import ControlTopicError


class _Topic:
    error = None
    partitions: ClassVar[dict[int, None]] = {0: None, 1: None}


class _Metadata:
    def __init__(self, topic: str) -> None:
        self.topics = {topic: _Topic()}


class _FailoverConsumer:
    """Partition 1's watermark request fails with `errors`, one per call, then answers."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.assigned: list[TopicPartition] = []

    def list_topics(self, topic: str, timeout: float) -> _Metadata:
        return _Metadata(topic)

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if partition.partition == 1 and self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 0, 7

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions


@pytest.fixture(autouse=True)
def _no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(broadcast.time, "sleep", sleep)
    monkeypatch.setattr(broadcast.time, "monotonic", lambda: clock[0])


def test_reader_waits_out_a_leader_election_and_reports_the_wait() -> None:
    # The errors a request to a dead leader ends with, for ~6 s of (fake) time.
    errors = [KafkaError._TRANSPORT, KafkaError._DESTROY_BROKER, KafkaError._TIMED_OUT] * 20
    consumer: Any = _FailoverConsumer(errors)
    waits: list[tuple[int, float]] = []
    reader = BroadcastReader(consumer, "control")

    reader.assign_from_beginning(on_wait=lambda p, s: waits.append((p, s)))

    assert [tp.partition for tp in consumer.assigned] == [0, 1]
    assert not reader.caught_up  # both partitions' ends (7) were found
    assert waits and all(partition == 1 for partition, _ in waits)
    assert waits[-1][1] >= 4.0  # reported while it waited, every couple of seconds
    assert len(waits) <= 4


def test_reader_gives_up_after_leader_wait_naming_the_partition() -> None:
    consumer: Any = _FailoverConsumer([KafkaError._DESTROY_BROKER] * 10_000)
    reader = BroadcastReader(consumer, "control")

    with pytest.raises(ControlTopicError, match="control partition 1 after 3s"):
        reader.assign_from_beginning(1.0, leader_wait_s=3.0)


def test_reader_fails_fast_when_every_broker_is_down() -> None:
    consumer: Any = _FailoverConsumer([KafkaError._ALL_BROKERS_DOWN])
    reader = BroadcastReader(consumer, "control")

    with pytest.raises(ControlTopicError, match="after 0s"):
        reader.assign_from_beginning()
    assert consumer.calls == 2
