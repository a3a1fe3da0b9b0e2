"""One prediction and its outcome travel through the real broker, the processor and ClickHouse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from confluent_kafka import Producer
from conftest import Stack

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.kafka.clients import producer_config
from safeloop.infra.portcheck import free_port
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import OutcomeEvent, PredictionEvent, Route


def test_a_prediction_and_its_outcome_land_joined_in_clickhouse(
    stack: Stack, tmp_path: Path
) -> None:
    settings = replace(stack.fresh("skeleton"), state_dir=tmp_path)
    env = {**os.environ, **settings.to_env()}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safeloop.services.cli.main",
            "process",
            "--web-port",
            str(free_port()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        now_ms = int(time.time() * 1000)
        prediction_id = uuid.uuid4().hex
        prediction = PredictionEvent(
            prediction_id=prediction_id,
            model_name="churn",
            model_version="v1",
            timestamp=now_ms,
            features={"age": 41.0, "tenure_months": 7.0},
            prediction=0.83,
            confidence=0.83,
            latency_ms=1.7,
            route=Route.PRODUCTION,
            replica_id="replica-a",
            routing_key="user-42",
            routing_hash_version=1,
        )
        outcome = OutcomeEvent(
            prediction_id=prediction_id, ground_truth=1.0, timestamp=now_ms + 1500, source="crm"
        )
        producer = Producer(producer_config(settings))
        producer.produce(
            settings.topics.predictions, PREDICTION_CODEC.encode(prediction), key=prediction_id
        )
        producer.produce(settings.topics.outcomes, OUTCOME_CODEC.encode(outcome), key=prediction_id)
        assert producer.flush(30) == 0

        client = clickhouse_client(settings)
        query = (
            "SELECT model_version, route, prediction, ground_truth, label_delay_ms, status "
            "FROM feedback FINAL WHERE prediction_id = {id:String}"
        )
        deadline = time.monotonic() + 90
        rows: list[tuple[object, ...]] = []
        while not rows and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else ""
            rows = [
                tuple(r) for r in client.query(query, parameters={"id": prediction_id}).result_rows
            ]
            time.sleep(0.5)
        assert rows == [("v1", "production", 0.83, 1.0, 1500, "joined")]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
