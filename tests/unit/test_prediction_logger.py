"""PredictionLogger over a fake producer: ids, valid events, bounded buffer, drops, shutdown."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from _fake_producer import FakeProducer

from safeloop.infra.prometheus import Registry
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.services.publishing.exceptions import LoggerClosedError
from safeloop.services.publishing.prediction_logger import PredictionLogger

SETTINGS = Settings(topic_prefix="u.", replica_id="svc-1")


def make_logger(producer: FakeProducer, **kwargs: Any) -> PredictionLogger:
    return PredictionLogger(SETTINGS, producer=producer, **kwargs)  # type: ignore[arg-type]


def events(producer: FakeProducer) -> list[PredictionEvent]:
    return [PREDICTION_CODEC.decode(m.value()) for m in producer.delivered]


def test_logged_predictions_arrive_as_valid_events_keyed_by_their_id() -> None:
    producer = FakeProducer()
    with make_logger(producer) as logger:
        pid = logger.log("churn", "v7", {"age": 41, "income": 2.5}, 0.8, 0.9, latency_ms=3.5)
        given = logger.log(
            "churn", "v7", {}, 1.0, prediction_id="req-1", routing_key="user-9", route="canary"
        )
    assert given == "req-1" and len(pid) == 32
    first, second = events(producer)
    assert (first.prediction_id, first.model_name, first.model_version) == (pid, "churn", "v7")
    assert (first.features, first.prediction, first.confidence, first.latency_ms) == (
        {"age": 41.0, "income": 2.5},
        0.8,
        0.9,
        3.5,
    )
    assert (first.replica_id, first.routing_key, first.route) == ("svc-1", pid, Route.PRODUCTION)
    assert (second.routing_key, second.route) == ("user-9", Route.CANARY)
    assert [m.key() for m in producer.delivered] == [pid.encode(), b"req-1"]
    assert {m.topic() for m in producer.delivered} == {"u.predictions"}
    stats = logger.stats()
    assert (stats.logged, stats.sent, stats.delivered, stats.dropped_buffer_full) == (2, 2, 2, 0)


def test_a_full_buffer_drops_and_counts_without_blocking() -> None:
    producer = FakeProducer()
    # A sender that waits a minute between drains: the buffer only fills.
    logger = make_logger(producer, buffer_size=5, batch_size=1000, linger_s=60)
    ids = [logger.log("m", "v", {}, 0.5) for _ in range(8)]
    assert len(set(ids)) == 8
    assert (logger.dropped, logger.stats().buffered) == (3, 5)
    logger.close()
    assert [e.prediction_id for e in events(producer)] == ids[:5]
    assert logger.stats().dropped_buffer_full == 3


def test_librdkafkas_full_queue_is_a_counted_drop_too() -> None:
    producer = FakeProducer(capacity=2)
    producer.hold = True
    logger = make_logger(producer, batch_size=1000, linger_s=60)
    for _ in range(4):
        logger.log("m", "v", {}, 0.5)
    logger.close(timeout_s=0.2)
    assert (logger.stats().sent, logger.dropped) == (2, 2)


def test_invalid_predictions_are_counted_not_sent_and_never_raise_in_log() -> None:
    producer = FakeProducer()
    with make_logger(producer) as logger:
        logger.log("m", "v", {"x": math.nan}, 0.5)
        logger.log("m", "v", {}, 0.5, confidence=3.0)
        logger.log("m", "v", {}, 0.5, route="blue")
        logger.log("", "v", {}, 0.5)
        ok = logger.log("m", "v", {}, 0.5)
    assert logger.rejected == 4
    assert [e.prediction_id for e in events(producer)] == [ok]


def test_failed_deliveries_are_counted() -> None:
    producer = FakeProducer()
    producer.fail_with = "broker down"
    with make_logger(producer) as logger:
        logger.log("m", "v", {}, 0.5)
    stats = logger.stats()
    assert (stats.sent, stats.delivery_failed, stats.delivered) == (1, 1, 0)


def test_log_after_close_is_an_error() -> None:
    logger = make_logger(FakeProducer())
    logger.close()
    with pytest.raises(LoggerClosedError):
        logger.log("m", "v", {}, 0.5)


def test_counters_render_as_prometheus_metrics() -> None:
    producer = FakeProducer()
    registry = Registry()
    logger = make_logger(producer, buffer_size=1, batch_size=1000, linger_s=60)
    logger.register_metrics(registry)
    logger.log("m", "v", {}, 0.5)
    logger.log("m", "v", {}, 0.5)
    text = registry.render()
    assert 'safeloop_prediction_logger_predictions_total{outcome="dropped_buffer_full"} 1' in text
    assert 'safeloop_prediction_logger_pending{where="buffer"} 1' in text
    assert "# TYPE safeloop_prediction_logger_predictions_total counter" in text
    logger.close()


def test_asyncio_code_logs_without_blocking_and_closes_with_await() -> None:
    producer = FakeProducer()

    async def serve() -> list[str]:
        async with make_logger(producer) as logger:
            return [logger.log("m", "v", {"i": float(i)}, 0.1) for i in range(50)]

    ids = asyncio.run(serve())
    assert [e.prediction_id for e in events(producer)] == ids
