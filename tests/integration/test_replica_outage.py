"""Kafka stopped under load: every prediction is still answered, fast; drops are counted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from _serving_harness import FEATURES, ServingStack, serving_stack, wait_for

from safeloop.infra.kafka.clients import make_consumer, make_producer
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.services.serving.kafka_sink import KafkaEventSink, event_producer_settings
from safeloop.services.serving.replica import Replica

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    # Private broker: this test stops it.
    with serving_stack(tmp_path_factory.mktemp("outage")) as stack:
        yield stack


@pytest.fixture
def replica(stack: ServingStack) -> Iterator[Replica]:
    replica = stack.replica("replica-outage", event_buffer_messages=2000)
    try:
        assert replica.wait_ready(30)
        yield replica
    finally:
        replica.stop()


def hammer(replica: Replica, seconds: float) -> list[float]:
    """Predict as fast as possible for `seconds`; the latency of each call in ms."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    index = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        answer = replica.predictor.predict("churn", f"user-{index}", FEATURES)
        latencies.append((time.perf_counter() - started) * 1000)
        assert 0.0 <= answer.prediction <= 1.0
        index += 1
    return latencies


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


async def scrape(replica: Replica) -> str:
    transport = httpx.ASGITransport(app=replica.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
        return (await client.get("/metrics")).text


def test_predictions_survive_kafka_outage_and_drops_are_counted(
    stack: ServingStack, replica: Replica
) -> None:
    assert stack.broker is not None
    hammer(replica, 0.5)
    assert wait_for(lambda: replica.sink.stats().delivered > 0)

    stack.broker.stop()
    # Predict until the sink's buffer is full and drops (however long a loaded box takes).
    during: list[float] = []
    deadline = time.monotonic() + 120
    while replica.sink.stats().dropped_buffer_full == 0 and time.monotonic() < deadline:
        during += hammer(replica, 0.5)
    during += hammer(replica, 0.5)
    stats = replica.sink.stats()
    # Answered without waiting on Kafka: the buffer filled, and the rest were dropped. A call
    # that waited on the broker would take its socket or message timeout (seconds); the
    # speed itself is bench.serving_overhead's.
    assert stats.dropped_buffer_full > 0, f"{len(during)} predictions never filled the buffer"
    assert max(during) < 1_000.0, f"max {max(during):.1f} ms while Kafka is down"
    assert p99(during) < 50.0, f"p99 {p99(during):.2f} ms while Kafka is down"
    assert replica.predictor.ready

    metrics = asyncio.run(scrape(replica))
    line = next(
        row
        for row in metrics.splitlines()
        if row.startswith('safeloop_events_total{fate="dropped_buffer_full"}')
    )
    assert int(float(line.split()[-1])) >= stats.dropped_buffer_full

    stack.broker.start()
    delivered_before = replica.sink.stats().delivered
    hammer(replica, 0.5)
    assert wait_for(lambda: replica.sink.stats().delivered > delivered_before, timeout_s=60)


def _events(count: int) -> list[PredictionEvent]:
    now_ms = int(time.time() * 1000)
    ids = [uuid.uuid4().hex for _ in range(count)]
    route, features = Route.PRODUCTION, dict(FEATURES)
    return [
        PredictionEvent(pid, "churn", "v1", now_ms, features, 0.5, 0.9, 1.0, route, "o", pid, 0)
        for pid in ids
    ]


def _keys_on_topic(stack: ServingStack, wanted: set[str], timeout_s: float = 30.0) -> list[str]:
    """Every record key of `wanted` on the predictions topic, duplicates included."""
    consumer = make_consumer(stack.settings, f"outage-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([stack.settings.topics.predictions])
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        idle_polls = 0
        while time.monotonic() < deadline and (len(set(seen)) < len(wanted) or idle_polls < 4):
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                idle_polls += 1
                continue
            idle_polls = 0
            key = (message.key() or b"").decode()
            if key in wanted:
                seen.append(key)
    finally:
        consumer.close()
    return seen


def test_the_idempotent_sink_survives_an_outage_longer_than_its_message_timeout(
    stack: ServingStack,
) -> None:
    """The consequence of idempotence measured: events that time out in an outage are counted
    as failed (as without it); the producer is not left fatally failed, and what it sends after
    the restart lands once each."""
    assert stack.broker is not None
    stack.broker.start()
    settings = {**event_producer_settings(10_000), "message.timeout.ms": 5000}
    sink = KafkaEventSink(
        make_producer(stack.settings, **settings), stack.settings.topics.predictions
    )

    def delivered_one() -> bool:
        # The first events wait for a producer id (on a busy machine, past a short timeout).
        if sink.pending() == 0 and sink.stats().delivered > 0:
            return True
        if sink.pending() == 0:
            sink.publish(_events(1)[0])
        return False

    try:
        assert wait_for(delivered_one, timeout_s=60, every_s=1.0)
        before = sink.stats()

        stack.broker.stop()
        for event in _events(200):
            sink.publish(event)
        assert wait_for(lambda: sink.pending() == 0, timeout_s=30)
        assert sink.stats().delivery_failed - before.delivery_failed == 200

        stack.broker.start()
        after = _events(100)
        for event in after:
            sink.publish(event)
        assert wait_for(lambda: sink.pending() == 0, timeout_s=60)
        stats = sink.stats()
        assert stats.delivery_failed - before.delivery_failed == 200, stats
        assert stats.delivered - before.delivered == 100, stats
    finally:
        sink.close()
    wanted = {event.prediction_id for event in after}
    keys = _keys_on_topic(stack, wanted)
    assert sorted(keys) == sorted(wanted)  # every one, none twice
