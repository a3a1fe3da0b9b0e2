"""The worker's output topics (feedback, dead-letter, changelogs, repartition) through one
confluent-kafka producer."""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from safeloop.streams.exceptions import StreamError

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]

DEFAULT_PRODUCER_CONFIG: dict[str, object] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
}


class OutputTopics:
    """Sends records; `flush` waits until each is on the broker, re-sending failures."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer({**DEFAULT_PRODUCER_CONFIG, **config})
        self._failed: list[tuple[str, bytes | None, bytes | None, int, Headers | None]] = []
        self._lock = threading.Lock()
        self.sent = 0
        self.failures = 0
        # Topics whose acknowledged offsets are tracked (the tables' changelogs), and the
        # highest acknowledged offset per (topic, partition) since the last `take_offsets`.
        self._tracked: frozenset[str] = frozenset()
        self._offsets: dict[tuple[str, int], int] = {}

    def track_offsets(self, topics: set[str]) -> None:
        """Remember the highest acknowledged offset of each partition of `topics`."""
        self._tracked = frozenset(topics)

    def take_offsets(self) -> dict[tuple[str, int], int]:
        """The highest offsets acknowledged since the last call, per tracked partition."""
        with self._lock:
            offsets, self._offsets = self._offsets, {}
        return offsets

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record; `partition` None lets the key choose (changelogs and re-routed
        records pass theirs)."""
        while True:
            try:
                if partition is None:
                    self._producer.produce(topic, value, key, on_delivery=self._delivered)
                elif headers is None:
                    self._producer.produce(
                        topic, value, key, partition=partition, on_delivery=self._delivered
                    )
                else:
                    self._producer.produce(
                        topic,
                        value,
                        key,
                        partition=partition,
                        headers=headers,
                        on_delivery=self._delivered,
                    )
                break
            except BufferError:
                # The local queue is full: let librdkafka drain it, then try again.
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            if self._tracked:
                topic = message.topic()
                if topic in self._tracked:
                    key = (topic, message.partition() or 0)
                    offset = message.offset() or 0
                    with self._lock:
                        if offset > self._offsets.get(key, -1):
                            self._offsets[key] = offset
            return
        self.failures += 1
        log.warning("delivery to %s failed, will re-send: %s", message.topic(), error)
        with self._lock:
            headers = message.headers()
            self._failed.append(
                (
                    message.topic() or "",
                    message.key(),
                    message.value(),
                    message.partition() or 0,
                    _header_list(headers),
                )
            )

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until everything sent is acknowledged; raise so the caller retries if not."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            failed, self._failed = self._failed, []
        for topic, key, value, partition, headers in failed:
            self.send(topic, key, value, partition, headers)
        if remaining or failed:
            remaining = self._producer.flush(timeout_s)
        if remaining:
            raise StreamError(f"{remaining} output records not yet acknowledged by Kafka")

    def close(self) -> None:
        self._producer.flush(10.0)


def _header_list(headers: dict[str, str | bytes | None] | Headers | None) -> Headers | None:
    if not headers:
        return None
    return list(headers.items()) if isinstance(headers, dict) else list(headers)
