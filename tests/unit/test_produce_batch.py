"""`produce_batch_confirmed`: all acknowledged, a full queue retried, failures raised."""

from __future__ import annotations

import pytest
from _fake_producer import FakeProducer

from safeloop.infra.exceptions import DeliveryError
from safeloop.infra.kafka.produce import produce_batch_confirmed

RECORDS = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)]


def test_every_record_is_acknowledged_before_it_returns() -> None:
    producer = FakeProducer()
    assert produce_batch_confirmed(producer, "t", RECORDS) == 10  # type: ignore[arg-type]
    assert [(m.key(), m.value()) for m in producer.delivered] == RECORDS
    assert producer.queued == []


def test_records_a_full_queue_refused_are_offered_again_after_it_drained() -> None:
    producer = FakeProducer(capacity=3)
    assert produce_batch_confirmed(producer, "t", RECORDS) == 10  # type: ignore[arg-type]
    assert sorted(m.key() or b"" for m in producer.delivered) == sorted(k for k, _ in RECORDS)


def test_a_failed_delivery_raises_with_the_broker_reason() -> None:
    producer = FakeProducer()
    producer.fail_with = "Broker: Not enough in-sync replicas"
    with pytest.raises(DeliveryError, match="in-sync"):
        produce_batch_confirmed(producer, "t", RECORDS)  # type: ignore[arg-type]


def test_records_still_unacknowledged_at_the_timeout_raise() -> None:
    producer = FakeProducer()
    producer.hold = True
    with pytest.raises(DeliveryError, match="not acknowledged"):
        produce_batch_confirmed(producer, "t", RECORDS, timeout_s=0.01)  # type: ignore[arg-type]
