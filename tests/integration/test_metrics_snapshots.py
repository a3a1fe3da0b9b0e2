"""The metrics consumers against the real broker and ClickHouse: snapshots, dead letters,
offsets committed after the snapshot, drift, CBPE and retraining decisions."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import pytest
from _metrics_harness import MODEL, TEST_POLICY, metrics_service, metrics_settings, wait_for
from confluent_kafka import Consumer, Producer, TopicPartition

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.kafka.clients import consumer_config, producer_config
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import DEAD_LETTER_CODEC, FEEDBACK_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, PredictionEvent, Route
from safeloop.services.monitor.service import MetricsConfig

pytestmark = pytest.mark.integration

EVENTS = 3_000


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("metrics"), tmp_path / "models")


def _produce(settings: Settings) -> None:
    producer = Producer(producer_config(settings))
    rng = random.Random(5)
    now_ms = time.time_ns() // 1_000_000
    topics = settings.topics
    for index in range(EVENTS):
        score = rng.random()
        # Shifted features: the drift rows have something to show.
        features = {f: rng.gauss(1.5, 1.0) for f in ("age", "income", "tenure_months")}
        failed = index % 50 == 0
        event = PredictionEvent(
            f"p{index}", MODEL, "v1", now_ms - (EVENTS - index), features,
            None if failed else score, None if failed else max(score, 1 - score),
            rng.uniform(1, 20), Route.PRODUCTION, "r1", f"k{index}", 1,
            "boom" if failed else None,
        )  # fmt: skip
        key = event.prediction_id.encode()
        producer.produce(topics.predictions, key=key, value=PREDICTION_CODEC.encode(event))
        if index % 3 == 0 and not failed:
            record = FeedbackRecord(
                event.prediction_id, MODEL, "v1", Route.PRODUCTION, "r1", features, score,
                max(score, 1 - score), event.timestamp, FeedbackStatus.JOINED,
                float(rng.random() < score), now_ms, 5_000, "test", now_ms,
            )  # fmt: skip
            producer.produce(topics.feedback, key=key, value=FEEDBACK_CODEC.encode(record))
    producer.produce(topics.predictions, key=b"junk", value=b"not avro at all")
    producer.produce(topics.feedback, key=b"junk", value=b"\xc3\x01" + b"\x00" * 12)
    assert producer.flush(30) == 0


def _committed(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer(consumer_config(settings, group))
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()


def test_snapshots_dead_letters_and_commits(settings: Settings) -> None:
    _produce(settings)
    config = MetricsConfig(
        snapshot_interval_ms=500, retraining_interval_ms=500, guard_policy=TEST_POLICY
    )
    prefix = f"it-{uuid.uuid4().hex[:6]}"
    with metrics_service(settings, config, prefix) as service:
        assert wait_for(
            lambda: (
                service.predictions.counts.records == EVENTS + 1
                and service.feedback.counts.records == EVENTS // 3 - EVENTS // 150 + 1
            ),
            60,
        ), (service.predictions.counts, service.feedback.counts)
        assert wait_for(lambda: service.counts.snapshots >= 2 and service.counts.decisions, 30)
        assert service.predictions.counts.dead_lettered == 1
        assert service.feedback.counts.dead_lettered == 1
        service_groups = (service.predictions, service.feedback)
        assert wait_for(lambda: all(c.counts.commits >= 1 for c in service_groups), 10)
        assert service.counts.loop_errors == 0
    # Closing wrote a last snapshot, then committed everything it covers (junk included).
    topics = settings.topics
    assert _committed(settings, f"{prefix}-predictions", topics.predictions) == EVENTS + 1
    assert _committed(settings, f"{prefix}-feedback", topics.feedback) == (
        service.feedback.counts.records
    )
    client = clickhouse_client(settings)

    def metric(table: str, name: str, window: str, feature: str | None = None) -> float:
        where = " AND feature = {f:String}" if feature is not None else ""
        rows = client.query(
            f"SELECT argMax(value, computed_at) FROM {table} FINAL WHERE metric = {{m:String}} "
            f"AND labels['window'] = {{w:String}}{where} GROUP BY window_end ORDER BY window_end "
            "DESC LIMIT 1",
            parameters={"m": name, "w": window, "f": feature or ""},
        ).result_rows
        if not rows:
            sample = client.query(
                f"SELECT metric, labels, value, window_end FROM {table} LIMIT 5"
            ).result_rows
            raise AssertionError(f"no {name} in {table}: {sample}")
        return float(rows[0][0])

    assert metric("health_metrics", "request_count_last_n", "count_10000") == EVENTS
    assert metric("health_metrics", "error_rate_last_n", "count_10000") == pytest.approx(1 / 50)
    assert metric("health_metrics", "request_count", "time_300000ms") == EVENTS
    assert metric("performance_metrics", "labelled_count_last_n", "count_10000") == 980
    assert 0.0 <= metric("performance_metrics", "accuracy", "time_3600000ms") <= 1.0
    assert metric("performance_metrics", "cbpe_labelled_accuracy_error", "time_3600000ms") < 0.1
    assert metric("performance_metrics", "cbpe_expected_accuracy", "count_10000") > 0.5
    assert metric("drift_metrics", "psi", "count_10000", feature="age") > 0.25
    decisions = client.query(
        "SELECT should_retrain, urgency, reason FROM retraining_decisions"
    ).result_rows
    assert decisions and decisions[0][0] is True, decisions
    letters = _dead_letters(settings)
    assert {letter.consumer for letter in letters} == {"metrics-predictions", "metrics-feedback"}


def _dead_letters(settings: Settings) -> list:  # type: ignore[type-arg]
    consumer = Consumer(consumer_config(settings, f"it-dl-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topics.dead_letter])
    found = []
    deadline = time.monotonic() + 20
    while len(found) < 2 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            found.append(DEAD_LETTER_CODEC.decode(message.value()))
    consumer.close()
    return found
