"""A stand-in for confluent-kafka's Producer: records what was produced, acks on flush/poll."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError


class FakeMessage:
    def __init__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value


class FakeProducer:
    """`produce` queues; `poll`/`flush` deliver (or fail with `fail_with`). `capacity` bounds
    the queue like librdkafka's, raising BufferError when full; `hold` keeps records queued."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self.queued: list[tuple[FakeMessage, Any]] = []
        self.delivered: list[FakeMessage] = []
        self.fail_with: Any = None
        self.hold = False
        self._lock = threading.Lock()

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None
    ) -> None:
        with self._lock:
            if len(self.queued) >= self.capacity:
                raise BufferError("Local: Queue full")
            self.queued.append((FakeMessage(topic, key, value), on_delivery))

    def produce_batch(
        self, topic: str, messages: list[dict[str, Any]], on_delivery: Any = None
    ) -> int:
        queued = 0
        for message in messages:
            try:
                self.produce(topic, message["value"], message.get("key"), on_delivery)
            except BufferError:
                message["_error"] = KafkaError(KafkaError._QUEUE_FULL)
                continue
            queued += 1
        return queued

    def _deliver(self) -> None:
        if self.hold:
            return
        with self._lock:
            queued, self.queued = self.queued, []
        for message, callback in queued:
            if self.fail_with is None:
                self.delivered.append(message)
            if callback is not None:
                callback(self._error(), message)

    def _error(self) -> KafkaError | None:
        # librdkafka hands delivery callbacks a KafkaError; a test says which with its text.
        if isinstance(self.fail_with, str):
            return KafkaError(KafkaError.NOT_ENOUGH_REPLICAS, self.fail_with)
        return self.fail_with  # type: ignore[no-any-return]

    def poll(self, timeout: float = 0) -> int:
        self._deliver()
        return 0

    def flush(self, timeout: float = 0) -> int:
        self._deliver()
        return len(self.queued)

    def __len__(self) -> int:
        return len(self.queued)
