"""A metrics consumer fenced out of its group (another process took its instance id) stops
with an error that says so, instead of polling on as if it still read its partitions; one
fenced by a commit of its own, queued while its session ran out, joins again instead."""

from __future__ import annotations

from typing import Any

import pytest
from _fake_producer import FakeProducer
from confluent_kafka import KafkaError

from safeloop.infra.exceptions import ConsumerFencedError
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.services.monitor.consumer import EventConsumer


class ErrorMessage:
    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error


FENCED = "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id"
# What librdkafka 2.16 said in a soak when the broker came back after a restart longer than the
# session: the fencing came from a commit queued during the outage.
FENCED_BY_COMMIT = f"{FENCED}: OffsetCommit failed: {FENCED.removeprefix('Fatal error: ')}"


class FencedConsumer:
    """Answers a consume as the real client does once fenced: a message carrying _FATAL
    (whose `fatal()` is False; the real client's says so in this form)."""

    def __init__(self, reason: str = FENCED) -> None:
        self.reason = reason
        self.subscribed: list[str] = []
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.subscribed = topics

    def consume(self, num_messages: int, timeout: float) -> list[ErrorMessage]:
        return [ErrorMessage(KafkaError(KafkaError._FATAL, self.reason))]

    def close(self) -> None:
        self.closed = True


class QuietConsumer(FencedConsumer):
    """A client that joined again: nothing to read yet."""

    def consume(self, num_messages: int, timeout: float) -> list[ErrorMessage]:
        return []


def _event_consumer(client: FencedConsumer, new_client: Any = None) -> EventConsumer[Any]:
    return EventConsumer(
        client,  # type: ignore[arg-type]
        "predictions",
        PREDICTION_CODEC,
        FakeProducer(),  # type: ignore[arg-type]
        "dead-letters",
        name="metrics-predictions",
        new_client=new_client,
    )


def test_a_fenced_metrics_consumer_raises_an_error_naming_itself_and_its_topic() -> None:
    # A client to rejoin with does not matter: another process holds the id.
    consumer = _event_consumer(FencedConsumer(), new_client=QuietConsumer)
    with pytest.raises(ConsumerFencedError) as raised:
        consumer.poll(10, 0.0)
    assert (raised.value.consumer, raised.value.topic) == ("metrics-predictions", "predictions")
    assert "same group.instance.id" in str(raised.value)
    assert "instance id" in str(raised.value)


def test_a_consumer_fenced_by_its_own_queued_commit_joins_again_with_a_new_client() -> None:
    fenced = FencedConsumer(FENCED_BY_COMMIT)
    made: list[FencedConsumer] = []

    def new_client() -> FencedConsumer:
        made.append(QuietConsumer())
        return made[-1]

    consumer = _event_consumer(fenced, new_client)
    assert consumer.poll(10, 0.0) == []
    assert fenced.closed
    assert len(made) == 1 and made[0].subscribed == ["predictions"]
    assert consumer.counts.rejoins_after_fencing == 1
    assert consumer.poll(10, 0.0) == []


def test_a_second_commit_fencing_within_the_minute_is_another_process_with_the_id() -> None:
    consumer = _event_consumer(
        FencedConsumer(FENCED_BY_COMMIT), lambda: FencedConsumer(FENCED_BY_COMMIT)
    )
    consumer.poll(10, 0.0)
    with pytest.raises(ConsumerFencedError):
        consumer.poll(10, 0.0)


def test_without_a_way_to_make_a_client_a_commit_fencing_stops_the_consumer() -> None:
    with pytest.raises(ConsumerFencedError):
        _event_consumer(FencedConsumer(FENCED_BY_COMMIT)).poll(10, 0.0)
