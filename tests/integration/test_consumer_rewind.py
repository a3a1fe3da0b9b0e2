"""The stream consumer's seek back to committed offsets, against the real broker.

aiokafka's `seek_to_committed` leaves a partition with nothing committed (or 0) at its fetch
position, past records the fetch loop dropped for the seek to deliver again;
`rewind_uncommitted` brings such a partition back to its beginning.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import Producer

from safeloop.infra.kafka.clients import producer_config
from safeloop.infra.kafka.topics import TopicAdmin, TopicSpec
from safeloop.infra.settings import Settings
from safeloop.streams.uncommitted_rewind import rewind_uncommitted

pytestmark = pytest.mark.integration

RECORDS = 20


def _security(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_secured:
        return {}
    cafile = str(settings.kafka_ca_file) if settings.kafka_ca_file else None
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": settings.kafka_password.value,
        "ssl_context": ssl.create_default_context(cafile=cafile),
    }


@pytest.fixture
def filled_topic(kafka: Settings) -> str:
    """A one-partition topic holding RECORDS records."""
    topic = f"{kafka.topic_prefix}rewind-{uuid.uuid4().hex[:8]}"
    TopicAdmin.from_settings(kafka).ensure([TopicSpec(topic, 1, 1)])
    producer = Producer(producer_config(kafka))
    for i in range(RECORDS):
        producer.produce(topic, key=str(i).encode(), value=b"v")
    assert producer.flush(30) == 0
    return topic


async def _read_all(consumer: AIOKafkaConsumer, tp: TopicPartition) -> list[int]:
    offsets: list[int] = []
    for _ in range(50):
        fetched = await consumer.getmany(tp, timeout_ms=500)
        offsets.extend(record.offset for record in fetched.get(tp, []))
        if len(offsets) >= RECORDS:
            break
    return offsets


async def _scenario(settings: Settings, topic: str, committed_first: int | None) -> None:
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{settings.topic_prefix}rewind-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **_security(settings),
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        if committed_first is not None:
            await consumer.commit({tp: OffsetAndMetadata(committed_first, "")})
        # Records handed over, then dropped (as the fetch loop drops them for a seek).
        assert await _read_all(consumer, tp) == list(range(RECORDS))
        committed = await consumer.seek_to_committed()
        assert committed == {tp: committed_first}
        # aiokafka's own seek leaves the partition past the dropped records.
        assert await consumer.position(tp) == RECORDS
        # Not a batch topic: left alone.
        elsewhere = await rewind_uncommitted(committed, {"other"}, consumer.seek_to_beginning)
        assert elsewhere == []
        assert await consumer.position(tp) == RECORDS

        assert await rewind_uncommitted(committed, {topic}, consumer.seek_to_beginning) == [tp]
        assert await consumer.position(tp) == 0
        assert await _read_all(consumer, tp) == list(range(RECORDS))
    finally:
        await consumer.stop()


def test_a_partition_never_committed_is_read_again_from_its_beginning(
    kafka: Settings, filled_topic: str
) -> None:
    asyncio.run(_scenario(kafka, filled_topic, None))


def test_a_partition_committed_at_zero_is_read_again_from_its_beginning(
    kafka: Settings, filled_topic: str
) -> None:
    asyncio.run(_scenario(kafka, filled_topic, 0))
