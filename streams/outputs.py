"""The worker's output topics (feedback, dead-letter, changelogs, repartition) through one
confluent-kafka producer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
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


class _Epoch:
    """The records sent between two barriers, and how many of them the broker has answered.

    Passed as each record's delivery callback (one object per epoch, not one per record)."""

    __slots__ = ("answered", "outputs", "sent")

    def __init__(self, outputs: OutputTopics) -> None:
        self.outputs = outputs
        self.sent = 0
        self.answered = 0

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        self.outputs._delivered(self, error, message)

    @property
    def settled(self) -> bool:
        return self.answered == self.sent


_Failed = tuple[_Epoch, str, bytes | None, bytes | None, int, Headers | None]


class OutputTopics:
    """Sends records; `flush` waits until every record sent before it is on the broker,
    re-sending failures."""

    def __init__(self, config: dict[str, Any], producer: Any = None) -> None:
        self._producer = (
            Producer({**DEFAULT_PRODUCER_CONFIG, **config}) if producer is None else producer
        )
        self._failed: list[_Failed] = []
        self._lock = threading.Lock()
        self._epoch = _Epoch(self)
        # Epochs a barrier waited for in vain: the next barrier waits for them too.
        self._owed: list[_Epoch] = []
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
        self._send(
            self._epoch, topic=topic, key=key, value=value, partition=partition, headers=headers
        )
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
    ) -> None:
        """`send` for each `(key, value)`, in order, counted once: the batch path's sends."""
        if not records:
            return
        # Counted before they are queued: a barrier that swaps the epoch meanwhile waits for
        # all of them (counting after would leave a window where it waits for none).
        with self._lock:
            epoch = self._epoch
            epoch.sent += len(records)
        produce = self._producer.produce
        queued = 0
        try:
            for key, value in records:
                while True:
                    try:
                        if partition is None:
                            produce(topic, value, key, on_delivery=epoch)
                        else:
                            produce(topic, value, key, partition=partition, on_delivery=epoch)
                        break
                    except BufferError:
                        # The local queue is full: let librdkafka drain it, then try again.
                        self._producer.poll(0.05)
                queued += 1
        finally:
            if queued < len(records):
                # What failed to queue is not waited for.
                with self._lock:
                    epoch.sent -= len(records) - queued
            before = self.sent
            self.sent += queued
            if before // 1000 != self.sent // 1000:
                self._producer.poll(0)

    def _send(
        self,
        epoch: _Epoch,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers | None,
    ) -> None:
        while True:
            try:
                if partition is None:
                    self._producer.produce(topic, value, key, on_delivery=epoch)
                elif headers is None:
                    self._producer.produce(
                        topic, value, key, partition=partition, on_delivery=epoch
                    )
                else:
                    self._producer.produce(
                        topic, value, key, partition=partition, headers=headers, on_delivery=epoch
                    )
                break
            except BufferError:
                # The local queue is full: let librdkafka drain it, then try again.
                self._producer.poll(0.05)
        # After the produce: a record that failed to queue is not waited for. The barrier
        # re-sends from its own thread, hence the lock.
        with self._lock:
            epoch.sent += 1

    def _delivered(self, epoch: _Epoch, error: KafkaError | None, message: Message) -> None:
        if error is None:
            with self._lock:
                epoch.answered += 1
                if self._tracked:
                    topic = message.topic()
                    if topic in self._tracked:
                        key = (topic, message.partition() or 0)
                        offset = message.offset() or 0
                        if offset > self._offsets.get(key, -1):
                            self._offsets[key] = offset
            return
        self.failures += 1
        log.warning("delivery to %s failed, will re-send: %s", message.topic(), error)
        with self._lock:
            epoch.answered += 1
            self._failed.append(
                (
                    epoch,
                    message.topic() or "",
                    message.key(),
                    message.value(),
                    message.partition() or 0,
                    _header_list(message.headers()),
                )
            )

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every record sent before this call is acknowledged (failures re-sent);
        raise so the caller retries if not. Records sent meanwhile are the next barrier's:
        under steady load the producer's queue is never empty, so "wait until nothing is
        outstanding" would never pass."""
        with self._lock:
            waiting = [*self._owed, self._epoch]
            self._epoch = _Epoch(self)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                failed, self._failed = self._failed, []
            for epoch, topic, key, value, partition, headers in failed:
                self._send(
                    epoch, topic=topic, key=key, value=value, partition=partition, headers=headers
                )
            with self._lock:
                # Under the lock: a failure is counted answered and listed for re-sending at once.
                done = not self._failed and all(e.settled for e in waiting)
                outstanding = sum(e.sent - e.answered for e in waiting)
            if done:
                self._owed = []
                return
            if time.monotonic() >= deadline:
                self._owed = [e for e in waiting if not e.settled]
                raise StreamError(f"{outstanding} output records not yet acknowledged by Kafka")
            self._producer.poll(0.05)

    def close(self) -> None:
        self._producer.flush(10.0)


def _header_list(headers: dict[str, str | bytes | None] | Headers | None) -> Headers | None:
    if not headers:
        return None
    return list(headers.items()) if isinstance(headers, dict) else list(headers)
