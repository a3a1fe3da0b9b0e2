"""Harness for the stream integration tests: worker processes over isolated topics + database.

The broker and the ClickHouse endpoint are the session's (tests/conftest.py `stack`): each run
takes `stack.fresh(label)`, its own topic prefix and database on them, so a test session starts
one broker and one endpoint however many stream tests run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import clickhouse_connect
from _waiting import now_ms, wait_for  # noqa: F401 (the tests import wait_for from here)
from confluent_kafka import Consumer, Producer

from safeloop.infra.kafka.clients import connection_config
from safeloop.infra.kafka.produce import produce_batch_confirmed
from safeloop.infra.portcheck import free_port  # noqa: F401 (the tests import it from here)
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import OutcomeEvent, PredictionEvent, Route

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    """One isolated run: a topic prefix, a database, and the workers started for it."""

    settings: Settings
    state_dir: Path
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    producer: Producer | None = None
    metrics_port: int = 0
    # The test producer's librdkafka partitioner: murmur2_random puts every record on its
    # prediction_id's home partition; consistent_random (librdkafka's default) mostly does not.
    partitioner: str = "murmur2_random"

    @property
    def topics(self) -> Any:
        return self.settings.topics

    def client(self) -> Any:
        return clickhouse_connect.get_client(
            dsn=self.settings.clickhouse_endpoint, database=self.settings.clickhouse_database
        )

    # -- workers ---------------------------------------------------------------------------

    def start_worker(
        self,
        index: int,
        web_port: int,
        extra_env: dict[str, str] | None = None,
        batch_max: int = 2000,
        flush_interval_ms: int = 100,
    ) -> str:
        """Start `safeloop process --worker-index index` as its own process; returns its name."""
        name = f"worker-{index}"
        command = [
            sys.executable,
            "-m",
            "safeloop.streams.worker",
            "--worker-index",
            str(index),
            "--web-port",
            str(web_port - index),
            "--flush-interval-ms",
            str(flush_interval_ms),
            "--batch-max",
            str(batch_max),
        ]
        # The child keeps its own copy of the descriptor; ours closes at once.
        with (self.state_dir / f"{name}.log").open("ab") as log:
            self.workers[name] = subprocess.Popen(
                command, cwd=REPO, env={**self.env, **(extra_env or {})}, stdout=log, stderr=log
            )
        return name

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers[name]
        proc.send_signal(sig)
        proc.wait(timeout=60)

    def stop_all(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def worker_log(self, name: str) -> str:
        return (self.state_dir / f"{name}.log").read_text(errors="replace")[-5000:]

    # -- producing -------------------------------------------------------------------------

    def produce(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if self.producer is None:
            self.producer = Producer(
                {
                    **connection_config(self.settings),
                    "linger.ms": 5,
                    "partitioner": self.partitioner,
                }
            )
        self.producer.produce(topic, value, key)

    def send_batch(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        """Publish `records` (key, value) through librdkafka's batch API, confirmed."""
        producer = Producer(
            {
                **connection_config(self.settings),
                "linger.ms": 20,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 1_000_000,
                "compression.type": "lz4",
                "partitioner": self.partitioner,
            }
        )
        try:
            # In chunks, each confirmed: a loaded machine acknowledges 100,000s slowly.
            for start in range(0, len(records), 50_000):
                produce_batch_confirmed(producer, topic, records[start : start + 50_000], 300.0)
        finally:
            producer.flush(30)

    def send_prediction(self, event: PredictionEvent) -> None:
        self.produce(
            self.topics.predictions, event.prediction_id.encode(), PREDICTION_CODEC.encode(event)
        )

    def send_outcome(self, event: OutcomeEvent) -> None:
        self.produce(
            self.topics.outcomes, event.prediction_id.encode(), OUTCOME_CODEC.encode(event)
        )

    def flush(self) -> None:
        if self.producer is not None:
            assert self.producer.flush(30) == 0

    # -- reading ---------------------------------------------------------------------------

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self.client().query(sql).result_rows)

    def count(self, sql: str) -> int:
        return int(self.query(sql)[0][0])

    def consume_all(self, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
        consumer = Consumer(
            {
                **connection_config(self.settings),
                "group.id": f"check-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(messages) < expected and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                messages.append(message)
        finally:
            consumer.close()
        return messages


def new_run(fresh: Settings, tmp: Path, window_ms: int = 600_000) -> Run:
    """A run over `fresh` (from `stack.fresh(label)`: topics created, DDL applied)."""
    settings = replace(fresh, state_dir=tmp)
    partitions = settings.partitions
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SAFELOOP_", "KAFKA_", "CLICKHOUSE_"))
        },
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        **settings.kafka_client_env(),
        "CLICKHOUSE_URL": settings.clickhouse_endpoint,
        "CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "SAFELOOP_TOPIC_PREFIX": settings.topic_prefix,
        "SAFELOOP_PARTITIONS": str(partitions),
        "SAFELOOP_STATE_DIR": str(tmp),
        "SAFELOOP_JOIN_WINDOW_MS": str(window_ms),
        "SAFELOOP_LOG_LEVEL": "INFO",
    }
    return Run(settings, tmp, env)


def prediction(
    pid: str,
    *,
    ts: int | None = None,
    route: Route = Route.PRODUCTION,
    model: str = "churn",
    version: str = "v1",
    value: float = 0.25,
) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=pid,
        model_name=model,
        model_version=version,
        timestamp=now_ms() if ts is None else ts,
        features={"age": 41.0, "tenure": 3.0},
        prediction=value,
        confidence=0.8,
        latency_ms=2.5,
        route=route,
        replica_id="replica-a",
        routing_key=pid,
        routing_hash_version=1,
    )


def outcome(pid: str, *, ts: int | None = None, truth: float = 1.0) -> OutcomeEvent:
    return OutcomeEvent(
        prediction_id=pid,
        ground_truth=truth,
        timestamp=now_ms() if ts is None else ts,
        source="crm",
    )
