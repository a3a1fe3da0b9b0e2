"""The metrics loop commits without waiting for the group coordinator (one that died would hold
the guard for a session time-out); the answers arrive later and are counted; a flush waits."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from _fake_message import TOPIC
from _fake_producer import FakeProducer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.services.monitor.consumer import CommitListener, ConsumerCounts, EventConsumer


class RecordingConsumer:
    """Records each commit and whether the caller waited for it."""

    def __init__(self) -> None:
        self.commits: list[tuple[list[TopicPartition], bool]] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append((offsets, asynchronous))


class UnackedDeadLetters:
    """Dead letters the broker has not acknowledged; records each flush's time-out."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def flush(self, timeout: float) -> int:
        self.timeouts.append(timeout)
        return 3


def _consumer(
    counts: ConsumerCounts, dead_letters: Any = None
) -> tuple[EventConsumer[Any], RecordingConsumer]:
    kafka = RecordingConsumer()
    consumer = EventConsumer(
        kafka,  # type: ignore[arg-type]
        TOPIC,
        PREDICTION_CODEC,
        dead_letters or FakeProducer(),
        "dead-letters",
        name="metrics-predictions",
        counts=counts,
    )
    return consumer, kafka


def test_a_commit_without_waiting_is_sent_asynchronously_and_counted_when_answered() -> None:
    counts = ConsumerCounts()
    consumer, kafka = _consumer(counts)
    listener = CommitListener("metrics-predictions", counts)
    positions = [TopicPartition(TOPIC, 0, 42)]

    consumer.commit(positions, wait=False)

    assert kafka.commits == [(positions, True)]
    assert counts.commits == 0  # not answered yet
    listener(None, positions)
    assert (counts.commits, counts.commit_failures) == (1, 0)


def test_unacknowledged_dead_letters_defer_a_loop_commit_at_once_and_fail_a_waited_one() -> None:
    counts = ConsumerCounts()
    dead_letters = UnackedDeadLetters()
    consumer, kafka = _consumer(counts, dead_letters)
    positions = [TopicPartition(TOPIC, 0, 42)]

    consumer.commit(positions, wait=False)  # the loop: not held, nothing committed past them
    assert kafka.commits == [] and dead_letters.timeouts == [0.0]
    with pytest.raises(KafkaException):
        consumer.commit(positions)  # a flush: waits, then says so
    assert kafka.commits == [] and dead_letters.timeouts[1] > 0


def test_a_waited_commit_is_synchronous_and_counted_at_once() -> None:
    counts = ConsumerCounts()
    consumer, kafka = _consumer(counts)
    positions = [TopicPartition(TOPIC, 0, 7)]

    consumer.commit(positions)

    assert kafka.commits == [(positions, False)]
    assert counts.commits == 1


def test_a_refused_commit_is_counted_and_logged_whether_whole_or_per_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts = ConsumerCounts()
    listener = CommitListener("metrics-feedback", counts)
    # TopicPartition.error is read-only: a stand-in carries the per-partition refusal.
    refused = SimpleNamespace(topic=TOPIC, partition=1, error=KafkaError(25))

    with caplog.at_level(logging.WARNING):
        listener(KafkaError(KafkaError.REQUEST_TIMED_OUT), [TopicPartition(TOPIC, 0, 5)])
        listener(None, [TopicPartition(TOPIC, 0, 6), refused])  # type: ignore[list-item]

    assert (counts.commits, counts.commit_failures) == (0, 2)
    assert "metrics-feedback: offset commit failed (re-read on restart)" in caplog.text
    assert "UNKNOWN_MEMBER_ID" in caplog.text
