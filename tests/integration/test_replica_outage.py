"""Kafka stopped under load: every prediction is still answered, fast; drops are counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from _serving_harness import FEATURES, ServingStack, serving_stack, wait_for

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
    during = hammer(replica, 3.0)
    stats = replica.sink.stats()
    assert len(during) > 5000
    # Answered without waiting on Kafka: the buffer filled, and the rest were dropped.
    assert p99(during) < 5.0, f"p99 {p99(during):.2f} ms while Kafka is down"
    assert max(during) < 250.0
    assert stats.dropped_buffer_full > 0
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
