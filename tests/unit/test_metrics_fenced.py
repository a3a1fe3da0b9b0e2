"""A metrics consumer fenced out of its group (another process took its instance id) stops
with an error that says so, instead of polling on as if it still read its partitions."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from safeloop.infra.exceptions import ConsumerFencedError
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.services.monitor.consumer import EventConsumer


class ErrorMessage:
    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error


class FencedConsumer:
    """Answers a consume as the real client does once fenced: a message carrying _FATAL
    (whose `fatal()` is False; the real client's says so in this form)."""

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[ErrorMessage]:
        error = KafkaError(
            KafkaError._FATAL,
            "Fatal error: Broker: Static consumer fenced by other consumer with same "
            "group.instance.id",
        )
        return [ErrorMessage(error)]


class NoDeadLetters:
    def flush(self, timeout: float) -> int:
        return 0


def test_a_fenced_metrics_consumer_raises_an_error_naming_itself_and_its_topic() -> None:
    consumer = EventConsumer(
        FencedConsumer(),  # type: ignore[arg-type]
        "predictions",
        PREDICTION_CODEC,
        NoDeadLetters(),  # type: ignore[arg-type]
        "dead-letters",
        name="metrics-predictions",
    )
    with pytest.raises(ConsumerFencedError) as raised:
        consumer.poll(10, 0.0)
    assert (raised.value.consumer, raised.value.topic) == ("metrics-predictions", "predictions")
    assert "same group.instance.id" in str(raised.value)
    assert "instance id" in str(raised.value)
