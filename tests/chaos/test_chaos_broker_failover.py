"""SIGKILL of the partition leader broker under steady load through the processor: every
acknowledged prediction and outcome lands in ClickHouse exactly once (counts without FINAL)."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from _stream_harness import Run, free_port, new_run, now_ms, outcome, prediction
from _waiting import poller
from conftest import KafkaCluster

from safeloop.infra.clickhouse.migrate import migrate
from safeloop.infra.kafka.clients import admin_client, make_producer
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC

wait_for = poller(180.0, 0.5)
RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "chaos-broker-failover.json"
# Modest: the tier runs on a shared 2-core machine beside three brokers and two workers.
PAIRS_PER_SECOND = 50


@dataclass
class Load:
    """Predictions and outcomes produced (idempotent, acks=all) and which were acknowledged."""

    predictions: set[str] = field(default_factory=set)
    outcomes: set[str] = field(default_factory=set)
    failed: int = 0
    sent: int = 0


def _leaders(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """Partition -> (leader, in-sync replica count)."""
    topics = admin_client(settings).list_topics(topic, timeout=10).topics
    return {n: (p.leader, len(p.isrs)) for n, p in topics[topic].partitions.items()}


def _produce(settings: Settings, stop: threading.Event, load: Load) -> None:
    producer = make_producer(settings)
    names = settings.topics

    def acked(into: set[str]) -> Any:
        def on_delivery(error: object, message: Any) -> None:
            if error is None:
                into.add(message.key().decode())
            else:
                load.failed += 1

        return on_delivery

    on_prediction, on_outcome = acked(load.predictions), acked(load.outcomes)
    while not stop.is_set():
        started = time.monotonic()
        for _ in range(PAIRS_PER_SECOND // 10):
            pid = f"c-{uuid.uuid4().hex[:16]}"
            event = prediction(pid, ts=now_ms())
            value = PREDICTION_CODEC.encode(event)
            producer.produce(names.predictions, value, pid.encode(), on_delivery=on_prediction)
            value = OUTCOME_CODEC.encode(outcome(pid, truth=1.0))
            producer.produce(names.outcomes, value, pid.encode(), on_delivery=on_outcome)
            load.sent += 1
        producer.poll(max(0.0, 0.1 - (time.monotonic() - started)))
    assert producer.flush(120) == 0


@pytest.fixture
def run(kafka_cluster: KafkaCluster, warehouse: Settings) -> Iterator[Run]:
    suffix = uuid.uuid4().hex[:6]
    settings = replace(
        kafka_cluster.settings,
        topic_prefix=f"chaos-{suffix}.",
        warehouse_host=warehouse.warehouse_host,
        warehouse_port=warehouse.warehouse_port,
        clickhouse_url=warehouse.clickhouse_url,
        clickhouse_database=f"{warehouse.clickhouse_database}_chaos_{suffix}",
    )
    TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
    migrate(settings)
    with tempfile.TemporaryDirectory(prefix="chaos-run-") as tmp:
        current = new_run(settings, Path(tmp), window_ms=600_000)
        # Workers given KAFKA_BOOTSTRAP_SERVERS would replicate their changelogs once.
        current.env["SAFELOOP_REPLICATION_FACTOR"] = str(settings.replication_factor)
        yield current
        current.stop_all()


def test_sigkill_of_the_partition_leader_loses_and_doubles_nothing(
    run: Run, kafka_cluster: KafkaCluster
) -> None:
    settings = run.settings
    run.start_worker(0, free_port())
    run.start_worker(1, free_port())
    load, stop = Load(), threading.Event()
    producing = threading.Thread(target=_produce, args=(settings, stop, load))
    producing.start()
    try:
        joined = "SELECT count() FROM feedback WHERE status = 'joined'"
        # The workers' first rebalances on a busy machine take minutes, not seconds.
        assert wait_for(lambda: run.count(joined) >= 200, 420), run.worker_log("worker-0")
        topic = settings.topics.predictions
        victim = _leaders(settings, topic)[0][0]
        acked_at_kill = len(load.predictions)
        killed = time.monotonic()
        kafka_cluster.broker.kill_node(victim)
        assert wait_for(
            lambda: all(
                leader not in (victim, -1) for leader, _ in _leaders(settings, topic).values()
            )
        )
        leaders_moved_s = time.monotonic() - killed
        # Writes go on without the victim (min ISR 2 of 3)...
        assert wait_for(lambda: len(load.predictions) >= acked_at_kill + 2 * PAIRS_PER_SECOND)
        writes_resumed_s = time.monotonic() - killed
        kafka_cluster.broker.start()
        # ...and it comes back into every ISR.
        assert wait_for(lambda: all(isr == 3 for _, isr in _leaders(settings, topic).values()))
        rejoined_s = time.monotonic() - killed
        time.sleep(5)  # some load after the rejoin too
    finally:
        stop.set()
        producing.join(180)
    assert not producing.is_alive()

    acked = load.predictions & load.outcomes
    tables = {"predictions": load.predictions, "outcomes": load.outcomes}

    def landed() -> bool:
        return all(run.count(f"SELECT count() FROM {t}") >= len(ids) for t, ids in tables.items())

    assert wait_for(landed, 300), run.worker_log("worker-0") + run.worker_log("worker-1")
    assert wait_for(lambda: run.count(joined) >= len(acked), 120)
    time.sleep(2.0)  # anything doubled would have landed by now
    counts = {
        table: (
            run.count(f"SELECT count() FROM {table}"),
            run.count(f"SELECT uniqExact(prediction_id) FROM {table}"),
        )
        for table in tables
    }
    counts["feedback"] = (
        run.count(joined),
        run.count(f"{joined.replace('count()', 'uniqExact(prediction_id)')}"),
    )
    stored = {
        table: {row[0] for row in run.query(f"SELECT prediction_id FROM {table}")}
        for table in tables
    }
    lost = {table: len(ids - stored[table]) for table, ids in tables.items()}
    doubled = {table: count - unique for table, (count, unique) in counts.items()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "fault": "SIGKILL of the partition leader broker (3 nodes, RF 3, min ISR 2)",
                "load_pairs_per_s": PAIRS_PER_SECOND,
                "acknowledged": {t: len(ids) for t, ids in tables.items()},
                "lost": lost,
                "doubled": doubled,
                "producer_failures": load.failed,
                "leaders_moved_s": round(leaders_moved_s, 1),
                "writes_resumed_s": round(writes_resumed_s, 1),
                "rejoined_isr_s": round(rejoined_s, 1),
            },
            indent=2,
        )
    )
    assert lost == {"predictions": 0, "outcomes": 0}
    assert doubled == {"predictions": 0, "outcomes": 0, "feedback": 0}
    assert counts["feedback"][0] == len(acked)
