"""A metrics consumer that loses its group session (a broker restart, a long pause) and gets
its partitions back resumes where its reading got: the real client's on_lost path re-reads
nothing into windows that already hold it, so nothing is counted twice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _metrics_harness import MODEL, metrics_settings
from confluent_kafka import Producer

from safeloop.infra.kafka.clients import producer_config
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.services.monitor.consumer import EventConsumer
from safeloop.services.monitor.wiring import metrics_consumer

pytestmark = pytest.mark.integration

# The shortest poll interval the broker's minimum session allows: stalling past it loses the
# assignment exactly as a session expiring during a broker restart does.
SESSION_MS = 6_000


def _produce(settings: Settings, start: int, count: int) -> None:
    producer = Producer(producer_config(settings))
    now_ms = time.time_ns() // 1_000_000
    for index in range(start, start + count):
        event = PredictionEvent(
            f"p{index}", MODEL, "v1", now_ms, {"age": 1.0}, 0.5, 0.5, 2.0,
            Route.PRODUCTION, "r1", f"k{index}", 1, None,
        )  # fmt: skip
        value = PREDICTION_CODEC.encode(event)
        producer.produce(settings.topics.predictions, key=f"k{index}".encode(), value=value)
    assert producer.flush(30) == 0


class Reader:
    """An EventConsumer as `metrics run` builds it, with the prediction ids it returned."""

    def __init__(self, settings: Settings) -> None:
        self.lost = 0
        consumer = metrics_consumer(
            settings,
            f"session-loss-{time.time_ns()}",
            **{
                "session.timeout.ms": SESSION_MS,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": SESSION_MS,
            },
        )
        self.events: EventConsumer[Any] = EventConsumer(
            consumer,
            settings.topics.predictions,
            PREDICTION_CODEC,
            Producer(producer_config(settings)),
            settings.topics.dead_letter,
            name="predictions",
        )
        self.events.replay_from = lambda: 0  # rebuild from the first record, as after a restart
        original = self.events._lost

        def lost(*args: Any) -> None:
            self.lost += 1
            original(*args)

        # The subscription holds the bound method: re-subscribe with the counting one.
        self.events._lost = lost  # type: ignore[method-assign]
        consumer.subscribe(
            [settings.topics.predictions],
            on_assign=self.events._assigned,
            on_revoke=self.events._revoked,
            on_lost=lost,
        )
        self.ids: list[str] = []

    def read_until(self, total: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.ids += [event.prediction_id for event in self.events.poll(500, 0.2)]
            if len(self.ids) >= total and self.events.rebuilt:
                return True
        return False


def test_a_lost_session_given_back_re_reads_nothing_into_the_windows(
    stack: Any, tmp_path: Path
) -> None:
    settings = metrics_settings(stack.fresh("session_loss"), tmp_path / "models")
    _produce(settings, 0, 2_000)
    reader = Reader(settings)
    try:
        assert reader.read_until(2_000, 60), f"read {len(reader.ids)} of 2,000"
        # Committed half way: what a snapshot behind the reading position leaves.
        positions = reader.events.positions()
        halfway = [type(tp)(tp.topic, tp.partition, tp.offset // 2) for tp in positions]
        reader.events.commit(halfway)
        time.sleep(SESSION_MS / 1000 + 2)  # no poll: the client leaves the group
        _produce(settings, 2_000, 500)
        assert reader.read_until(2_500, 60), f"read {len(reader.ids)} of 2,500"
        reader.read_until(10**9, 3)  # anything re-read would arrive now
    finally:
        reader.events.close()
    assert reader.lost >= 1, "the client reported the assignment lost"
    assert reader.events.counts.partitions_kept >= 1
    assert len(reader.ids) == 2_500 == len(set(reader.ids)), (
        f"{len(reader.ids) - len(set(reader.ids))} predictions returned twice"
    )
    assert reader.events.replay.replayed == 0
