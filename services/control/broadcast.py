"""Read all partitions of a topic from the start, privately: no consumer group, no commits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from safeloop.infra.kafka.access import is_refusal, refusal_of
from safeloop.services.control.exceptions import ControlTopicError

logger = logging.getLogger(__name__)

METADATA_TIMEOUT_S = 10.0
# A partition whose leader died has none until the controller notices (the brokers' session
# timeout, 4-9 s) and the clients refresh their metadata: wait that out rather than fail.
LEADER_WAIT_S = 45.0
_WAIT_REPORT_S = 2.0
# (partition, seconds waited so far): called every couple of seconds while a leader is awaited.
LeaderWait = Callable[[int, float], None]
_LEADERSHIP_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        # What a request to the dead leader ends with, before the metadata names a new one:
        # its connection fails, it times out, or its handle is dropped once it is fenced.
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._DESTROY_BROKER,
    }
)


class BroadcastReader:
    """Every reader sees the whole topic; `caught_up` turns true once the high watermarks
    measured at assignment are reached, which is what "state rebuilt" means."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self._consumer = consumer
        self.topic = topic
        self._partitions: list[TopicPartition] = []
        # partition -> high watermark still to reach; emptied as partitions catch up.
        self._pending: dict[int, int] = {}
        self.records_read = 0

    def assign_from_beginning(
        self,
        timeout_s: float = METADATA_TIMEOUT_S,
        *,
        leader_wait_s: float = LEADER_WAIT_S,
        on_wait: LeaderWait | None = None,
    ) -> None:
        """Assign all partitions at offset 0 and note where "the end" is right now; a partition
        without a reachable leader is waited for up to `leader_wait_s` (`on_wait` hears of it)."""
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise ControlTopicError(f"cannot reach Kafka to read {self.topic}: {exc}") from exc
        topic = metadata.topics.get(self.topic)
        if topic is not None and topic.error is not None:
            self._raise_if_refused(topic.error)
        if topic is None or topic.error is not None or not topic.partitions:
            reason = "it does not exist" if topic is None or not topic.partitions else topic.error
            raise ControlTopicError(f"cannot read topic {self.topic}: {reason}")
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(topic.partitions)]
        deadline = time.monotonic() + max(timeout_s, leader_wait_s)
        for partition in self._partitions:
            low, high = self._watermarks(partition, deadline, on_wait)
            if high > low:
                self._pending[partition.partition] = high
        self._consumer.assign(
            [TopicPartition(self.topic, p.partition, OFFSET_BEGINNING) for p in self._partitions]
        )

    def _watermarks(
        self, partition: TopicPartition, deadline: float, on_wait: LeaderWait | None
    ) -> tuple[int, int]:
        # Right after a topic is created, or while a dead leader is replaced, the partition has
        # no leader to answer: that is retriable until the deadline.
        started = time.monotonic()
        reported = started
        while True:
            remaining = min(_WAIT_REPORT_S, max(0.1, deadline - time.monotonic()))
            try:
                low, high = self._consumer.get_watermark_offsets(partition, timeout=remaining)
                return int(low), int(high)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and (
                    error.retriable() or error.code() in _LEADERSHIP_ERRORS
                )
                now = time.monotonic()
                if not retriable or now >= deadline:
                    raise ControlTopicError(
                        f"cannot find the end of {self.topic} partition {partition.partition} "
                        f"after {now - started:.0f}s: {exc}"
                    ) from exc
                if on_wait is not None and now - reported >= _WAIT_REPORT_S:
                    reported = now
                    on_wait(partition.partition, now - started)
                time.sleep(0.1)

    def _raise_if_refused(self, error: KafkaError) -> None:
        """An ACL or credential refusal ends the reader: it will not heal by polling on."""
        if is_refusal(error):
            refusal = refusal_of(
                self._consumer, error, operation="read", resource=f"topic {self.topic}"
            )
            if refusal is not None:
                raise refusal

    @property
    def caught_up(self) -> bool:
        return not self._pending

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        """The next records (errors logged, not returned); updates `caught_up`."""
        records: list[Message] = []
        # consume() waits out its whole timeout unless the batch fills: wait for the first
        # record with poll(), which returns as soon as one arrives, then take what is there.
        first = self._consumer.poll(timeout_s)
        if first is None:
            batch = []
        else:
            batch = [first, *self._consumer.consume(num_messages=max_records - 1, timeout=0)]
        for message in batch:
            error = message.error()
            if error is not None:
                self._raise_if_refused(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("reading %s: %s", self.topic, error)
                continue
            records.append(message)
        self.records_read += len(records)
        if self._pending:
            self._update_pending()
        return records

    def _update_pending(self) -> None:
        # Positions, not last offsets seen: compaction and transaction markers leave gaps.
        for position in self._consumer.position(self._partitions):
            target = self._pending.get(position.partition)
            if target is not None and position.offset >= target:
                del self._pending[position.partition]

    def read_to_end(self, timeout_s: float) -> list[Message]:
        """Everything up to the high watermarks; ControlTopicError if that takes too long."""
        deadline = time.monotonic() + timeout_s
        records: list[Message] = []
        while not self.caught_up:
            if time.monotonic() > deadline:
                raise ControlTopicError(
                    f"reading {self.topic} to its end took longer than {timeout_s:g}s"
                )
            records.extend(self.poll(0.1))
        return records

    def close(self) -> None:
        self._consumer.close()


def broadcast_consumer_settings(group_id: str) -> dict[str, Any]:
    """Overrides for a broadcast reader: the group id is only a label, never joined or committed."""
    return {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Propagation is the point of the control topic: do not let the broker hold fetches.
        "fetch.wait.max.ms": 10,
        "enable.partition.eof": False,
    }
