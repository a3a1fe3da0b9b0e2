"""`safeloop metrics run`'s HTTP side against the real broker and ClickHouse: /metrics counts
what the loop consumed, dead-lettered and wrote; /healthz follows the loop and its consumers."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _metrics_harness import (
    MODEL,
    TEST_POLICY,
    metrics_service,
    metrics_settings,
    settings_env,
    wait_for,
)
from confluent_kafka import Producer

from safeloop.infra.kafka.clients import producer_config
from safeloop.infra.portcheck import free_port
from safeloop.infra.prometheus_scrape import parse_samples
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.services.monitor.endpoint import serve_service
from safeloop.services.monitor.service import MetricsConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EVENTS = 500


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("metrics_http"), tmp_path / "models")


def _produce(settings: Settings) -> None:
    producer = Producer(producer_config(settings))
    rng = random.Random(7)
    now_ms = time.time_ns() // 1_000_000
    for index in range(EVENTS):
        score = rng.random()
        event = PredictionEvent(
            f"h{index}", MODEL, "v1", now_ms - (EVENTS - index), {"age": rng.gauss(0, 1)},
            score, max(score, 1 - score), rng.uniform(1, 20), Route.PRODUCTION, "r1",
            f"k{index}", 1, None,
        )  # fmt: skip
        producer.produce(
            settings.topics.predictions,
            key=event.prediction_id.encode(),
            value=PREDICTION_CODEC.encode(event),
        )
    producer.produce(settings.topics.predictions, key=b"junk", value=b"not avro at all")
    assert producer.flush(30) == 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def test_metrics_and_healthz_of_a_running_service(settings: Settings) -> None:
    _produce(settings)
    config = MetricsConfig(snapshot_interval_ms=300, guard_policy=TEST_POLICY)
    with contextlib.ExitStack() as cleanup:
        with metrics_service(settings, config) as service:
            endpoint = serve_service(service, "127.0.0.1", 0, stale_after_s=5.0)
            cleanup.callback(endpoint.close)
            healthz, metrics = f"{endpoint.url}/healthz", f"{endpoint.url}/metrics"
            assert wait_for(lambda: _get(healthz)[0] == 200, 60), _get(healthz)
            body = json.loads(_get(healthz)[1])
            assert body["status"] == "ok"
            assert body["loop_running"] is True
            assert set(body["consumers"]) == {"metrics-predictions", "metrics-feedback"}
            assert body["consumers"]["metrics-predictions"]["partitions"]

            predictions = settings.topics.predictions
            consumed = f'safeloop_metrics_events_consumed_total{{topic="{predictions}"}}'

            def scraped() -> dict[str, float] | None:
                status, text = _get(metrics)
                samples = parse_samples(text) if status == 200 else {}
                done = (
                    samples.get(consumed) == EVENTS
                    and samples.get("safeloop_metrics_rows_written_total", 0) > 0
                    and sum(
                        value
                        for name, value in samples.items()
                        if name.startswith(f'safeloop_metrics_consumer_lag{{topic="{predictions}"')
                    )
                    == 0
                )
                return samples if done else None

            samples = wait_for(scraped, 60)
            assert samples, _get(metrics)[1]
            assert samples[f'safeloop_metrics_dead_letters_total{{topic="{predictions}"}}'] == 1
            assert samples[f'safeloop_metrics_records_consumed_total{{topic="{predictions}"}}'] == (
                EVENTS + 1
            )
            assert samples["safeloop_metrics_snapshots_written_total"] >= 1
            assert samples["safeloop_metrics_snapshot_failures_total"] == 0
            assert 0 <= samples["safeloop_metrics_last_snapshot_age_seconds"] < 30
            assert samples['safeloop_metrics_guard_verdicts_total{kind="breach"}'] == 0
            assert samples["safeloop_metrics_rollbacks_total"] == 0
            assert samples['safeloop_metrics_rollout_transitions_total{phase="promoted"}'] == 0
            assert 'safeloop_metrics_retraining_decisions_total{urgency="none"}' in samples
            assert samples[f'safeloop_metrics_assigned_partitions{{topic="{predictions}"}}'] >= 1
        # The loop has stopped and closed its consumers: no longer healthy.
        status, text = _get(healthz)
        assert status == 503
        assert "metrics loop is not running" in json.loads(text)["reasons"]


def test_cli_serves_healthz_and_stops_cleanly(settings: Settings) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safeloop.services.cli.main",
            "metrics",
            "run",
            "--http-port",
            str(port),
        ],
        cwd=REPO,
        env={**os.environ, **settings_env(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(
            lambda: _get(f"{url}/healthz")[0] == 200 or process.poll() is not None, 90
        ), _get(f"{url}/healthz")
        assert process.poll() is None, process.communicate()[1]
        status, text = _get(f"{url}/metrics")
        assert status == 200
        assert "# TYPE safeloop_metrics_events_consumed_total counter" in text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
