"""Which outcomes a crashed publish had already delivered: read back from the topic's tail.

Before each batch the publisher records the topic's end offsets; after a crash, everything from
those offsets to today's end is read, and the rerun skips the outcomes found there, so the batch
that was in flight is not produced twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, KafkaException, TopicPartition

from safeloop.infra.exceptions import DeliveryError
from safeloop.infra.kafka.clients import make_consumer
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import OUTCOME_CODEC
from safeloop.schemas.exceptions import DecodeError
from safeloop.schemas.outcome_batch import OutcomeTuple

log = logging.getLogger(__name__)

TIMEOUT_S = 15.0


class TopicTail:
    """End offsets of a topic, and the outcomes written after given offsets."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = make_consumer(
                self._settings, f"safeloop-publish-check-{uuid.uuid4().hex}"
            )
        return self._consumer

    def end_offsets(self) -> dict[int, int]:
        """Partition -> the offset the next record will get."""
        consumer = self._client()
        try:
            metadata = consumer.list_topics(self._topic, timeout=TIMEOUT_S)
            partitions = sorted(metadata.topics[self._topic].partitions)
            return {
                partition: int(
                    consumer.get_watermark_offsets(
                        TopicPartition(self._topic, partition), timeout=TIMEOUT_S
                    )[1]
                )
                for partition in partitions
            }
        except (KafkaException, KeyError) as exc:
            raise DeliveryError(self._topic, 0, 0, f"cannot read its end offsets: {exc}") from exc

    def outcomes_since(self, offsets: dict[int, int]) -> Counter[OutcomeTuple]:
        """Every decodable outcome from `offsets` up to the current end, counted."""
        ends = self.end_offsets()
        wanted = {p: (o, ends.get(p, o)) for p, o in offsets.items() if ends.get(p, o) > o}
        found: Counter[OutcomeTuple] = Counter()
        if not wanted:
            return found
        consumer = self._client()
        consumer.assign([TopicPartition(self._topic, p, start) for p, (start, _) in wanted.items()])
        remaining = {p: end for p, (_, end) in wanted.items()}
        deadline = time.monotonic() + TIMEOUT_S * 4
        try:
            while remaining and time.monotonic() < deadline:
                for message in consumer.consume(10_000, 0.5):
                    if message.error():
                        continue
                    partition, offset = message.partition(), message.offset()
                    value = message.value()
                    if partition is None or offset is None or value is None:
                        continue
                    end = remaining.get(partition)
                    if end is None or offset >= end:
                        continue
                    try:
                        event = OUTCOME_CODEC.decode(value)
                    except DecodeError:
                        continue  # not ours to judge: the processor dead-letters it
                    found[
                        (event.prediction_id, event.ground_truth, event.timestamp, event.source)
                    ] += 1
                    if offset + 1 >= end:
                        del remaining[partition]
        finally:
            consumer.unassign()
        if remaining:
            raise DeliveryError(
                self._topic, 0, 0, f"could not read back partitions {sorted(remaining)} in time"
            )
        log.info("read back %s outcomes delivered before the interruption", sum(found.values()))
        return found

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
