"""Rollback latency: from the first failing canary request to the rollback applied everywhere.

Two in-process replicas serve `churn` (v1 production, v2 a canary whose model fails from its
first request); a `safeloop metrics run` process (the central guard) watches `predictions`.
Per round: publish SET_CANARY v2 at 10 %, send traffic at the target rate, and time
- first failing canary request -> rollback applied on every replica;
- breach measurable (the guard's min sample, 100 canary requests, all failing) -> applied
  on every replica. Target: under 1 s at 500 and 5,000 requests/s.
Then the metrics consumers' throughput: N pre-produced predictions and feedback records
through the full metrics service (decode, windows, drift, guard, rollout hooks), in events/s.
Run: `python -m bench.rollback_latency [--rounds N] [--events N]`; writes
bench/results/rollback_latency.json. Uses KAFKA_BOOTSTRAP_SERVERS / CLICKHOUSE_URL if set,
else starts a private broker and embedded ClickHouse endpoint.

`--cold-start [--rounds 20]`: the first rollback right after `metrics run` starts. Each round
starts a new `safeloop metrics run` while the replicas serve 500 requests/s, waits for its
GET /readyz to answer 200, then at once publishes the failing canary and times breach
measurable -> applied on both replicas. Round 1 runs on a broker started seconds before.
Writes bench/results/rollback_cold_start.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.migrate import migrate
from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.clients import make_producer, producer_config
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.portcheck import free_port
from safeloop.infra.prometheus_scrape import scrape_total
from safeloop.infra.settings import Secret, Settings
from safeloop.infra.warehouse.process import WarehouseProcess
from safeloop.schemas.codec import FEEDBACK_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import (
    CommandKind,
    FeedbackRecord,
    FeedbackStatus,
    ModelConfig,
    PredictionEvent,
    Route,
)
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.publisher import ControlPublisher, read_control_topic
from safeloop.services.control.state import AppliedConfig
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.monitor.service import MetricsConfig
from safeloop.services.monitor.wiring import build_metrics_service
from safeloop.services.serving.replica import Replica, load_catalog

RESULTS = Path(__file__).parent / "results" / "rollback_latency.json"
COLD_RESULTS = Path(__file__).parent / "results" / "rollback_cold_start.json"
COLD_RATE = 500
BREACH_TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parents[1]
MODEL = "churn"
FEATURES = {"age": 0.3, "income": -1.2, "tenure_months": 0.8, "sessions_7d": 1.5}
CANARY_BASIS_POINTS = 1_000
MIN_REQUESTS = 100
TARGET_S = 1.0
RATES = (500, 5000)


class FailingModel:
    """Always raises; records when its first and its MIN_REQUESTS-th failure happened."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.failures = 0
            self.first_s: float | None = None
            self.measurable_s: float | None = None

    @property
    def version(self) -> str:
        return str(self._inner.version)

    def predict(self, features: Mapping[str, float]) -> float:
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            if self.failures == 1:
                self.first_s = now
            if self.failures == MIN_REQUESTS:
                self.measurable_s = now
        raise RuntimeError("injected canary failure")


class Traffic:
    """One thread per replica, together at `rate_per_s`; counts what was actually sent."""

    def __init__(self, replicas: list[Replica], rate_per_s: float) -> None:
        self._replicas = replicas
        self._rate = rate_per_s / len(replicas)
        self._stop = threading.Event()
        self.sent = 0
        self._threads = [
            threading.Thread(target=self._run, args=(replica,), daemon=True) for replica in replicas
        ]

    def __enter__(self) -> Traffic:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self.elapsed_s = time.monotonic() - self.started

    def _run(self, replica: Replica) -> None:
        interval = 1.0 / self._rate
        next_at = time.perf_counter()
        sent = 0
        while not self._stop.is_set():
            # Failing canary requests are the point: their errors are expected.
            with contextlib.suppress(Exception):
                replica.predictor.predict(MODEL, os.urandom(8).hex(), FEATURES)
            sent += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self.sent += sent


def _settings(state_dir: Path) -> Settings:
    env = {
        "SAFELOOP_STATE_DIR": str(state_dir),
        "SAFELOOP_CACHE_DIR": str(REPO / ".cache"),
        "SAFELOOP_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:8]}.",
        "CLICKHOUSE_DATABASE": f"bench_{uuid.uuid4().hex[:8]}",
        "SAFELOOP_CONTROL_KEY": os.urandom(32).hex(),
        "SAFELOOP_CONTROL_KEY_ID": "bench",
        "SAFELOOP_LOG_LEVEL": "WARNING",
    }
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    if "KAFKA_BOOTSTRAP_SERVERS" not in env:
        env["SAFELOOP_KAFKA_PORT"] = str(free_port())
        env["SAFELOOP_KAFKA_CONTROLLER_PORT"] = str(free_port())
    if "CLICKHOUSE_URL" not in env:
        env["SAFELOOP_WAREHOUSE_PORT"] = str(free_port())
    return Settings.from_env(env)


def _env_of(settings: Settings) -> dict[str, str]:
    env = {
        "SAFELOOP_STATE_DIR": str(settings.state_dir),
        "SAFELOOP_CACHE_DIR": str(settings.cache_dir),
        "SAFELOOP_KAFKA_PORT": str(settings.kafka_port),
        "SAFELOOP_TOPIC_PREFIX": settings.topic_prefix,
        "SAFELOOP_WAREHOUSE_PORT": str(settings.warehouse_port),
        "CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "SAFELOOP_CONTROL_KEY": settings.control_key.value,
        "SAFELOOP_CONTROL_KEY_ID": settings.control_key_id,
        "SAFELOOP_LOG_LEVEL": "WARNING",
    }
    if settings.kafka_bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    if settings.clickhouse_url:
        env["CLICKHOUSE_URL"] = settings.clickhouse_url
    return env


def _provision(settings: Settings, canaries: tuple[str, ...] = ()) -> None:
    TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
    migrate(settings)
    store = ModelStore(settings.models_path)
    for seed, version in enumerate(("v1", "v2", *canaries)):
        dataset = make_dataset(ModelTask.CLASSIFICATION, 2000, seed=seed)
        store.save(*train_model(MODEL, version, ModelTask.CLASSIFICATION, dataset))
        time.sleep(0.002)


def _replicas(
    settings: Settings, failing: FailingModel, canaries: tuple[str, ...] = ("v2",)
) -> list[Replica]:
    store = ModelStore(settings.models_path)
    replicas = []
    for index in range(2):
        catalog = load_catalog(store, [MODEL])
        for version in canaries:
            loaded = catalog.get(MODEL, version)
            assert loaded is not None
            catalog.add(LoadedModel(failing, loaded.metadata))
        # No local fast path: it would suppress the canary on its own and this measures the
        # signed rollback (and see the report: its stale windows can starve the central guard).
        replica = Replica(settings, f"bench-{index}", catalog=catalog)
        replica.start()
        replicas.append(replica)
    for replica in replicas:
        # Ready: control state rebuilt and the event producer delivers (slow on a cold broker).
        assert replica.wait_ready(120)
    return replicas


def _metrics_process(
    settings: Settings, http_port: int = 0, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`safeloop metrics run`; with `log`, its INFO log goes there (stderr otherwise)."""
    argv = [
        sys.executable, "-m", "safeloop.services.cli.main", "metrics", "run",
        "--snapshot-interval-s", "1", "--max-p99-latency-ratio", "0",
        "--max-performance-drop", "0", "--min-requests", str(MIN_REQUESTS),
        "--http-port", str(http_port),
    ]  # fmt: skip
    env = {**os.environ, **_env_of(settings)}
    if log is None:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    with log.open("ab") as stderr:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env={**env, "SAFELOOP_LOG_LEVEL": "INFO"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


class AppliedClock:
    """When each replica applied a config with no canary, per sequence."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.applied: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        for replica in replicas:
            replica.state.subscribe(self._listener(replica.replica_id))

    def _listener(self, replica_id: str) -> Any:
        def on_apply(model_name: str, applied: AppliedConfig) -> None:
            if applied.config.canary_version is None:
                with self._lock:
                    self.applied[(replica_id, applied.sequence)] = time.monotonic()

        return on_apply

    def all_after(self, replica_ids: list[str], sequence: int) -> float | None:
        with self._lock:
            times = []
            for replica_id in replica_ids:
                found = [
                    t for (r, s), t in self.applied.items() if r == replica_id and s > sequence
                ]
                if not found:
                    return None
                times.append(min(found))
        return max(times)


def _publish_canary(settings: Settings, publisher: ControlPublisher, version: str = "v2") -> int:
    keys = load_keyring(settings)
    view = read_control_topic(make_broadcast_reader(settings, settings.topics.control, "b"), keys)
    command = publisher.next_command(
        view,
        MODEL,
        CommandKind.SET_CANARY,
        lambda c: dataclasses.replace(
            c, canary_version=version, canary_basis_points=CANARY_BASIS_POINTS
        ),
        reason="bench: canary",
        initial=ModelConfig(production_version="v1"),
    )
    publisher.send(command)
    return command.sequence


def _wait_for_metrics(settings: Settings, replicas: list[Replica], timeout_s: float) -> None:
    """Healthy production traffic until the metrics process has written a snapshot."""
    client = clickhouse_client(settings)
    deadline = time.monotonic() + timeout_s
    with Traffic(replicas, 200):
        while time.monotonic() < deadline:
            rows = client.query("SELECT count() FROM health_metrics").result_rows
            if rows and int(rows[0][0]) > 0:
                return
            time.sleep(0.5)
    raise TimeoutError("the metrics process wrote no snapshot")


def _latency(settings: Settings, rounds: int) -> list[dict[str, Any]]:
    failing = FailingModel(ModelStore(settings.models_path).load(MODEL, "v2").model)
    replicas = _replicas(settings, failing)
    clock = AppliedClock(replicas)
    ids = [replica.replica_id for replica in replicas]
    publisher = ControlPublisher(
        make_producer(settings, **{"linger.ms": 0}),
        settings.topics.control,
        load_keyring(settings),
        issuer="bench",
    )
    metrics = _metrics_process(settings)
    cases = []
    try:
        _wait_for_metrics(settings, replicas, 90)
        for rate in RATES:
            samples: list[dict[str, float]] = []
            for _ in range(rounds):
                failing.reset()
                with Traffic(replicas, rate) as traffic:
                    time.sleep(0.5)
                    sequence = _publish_canary(settings, publisher)
                    deadline = time.monotonic() + 30
                    applied = None
                    while applied is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                        applied = clock.all_after(ids, sequence)
                    time.sleep(0.2)
                if applied is None or failing.first_s is None:
                    raise TimeoutError(
                        f"no rollback within 30 s at {rate}/s: canary sequence {sequence}, "
                        f"applied {clock.applied}, failures {failing.failures}, "
                        f"configs {[r.state.applied(MODEL) for r in replicas]}"
                    )
                sample = {
                    "first_failure_to_applied_s": applied - failing.first_s,
                    "achieved_rate_per_s": traffic.sent / traffic.elapsed_s,
                    "canary_failures": float(failing.failures),
                }
                if failing.measurable_s is not None:
                    sample["measurable_to_applied_s"] = applied - failing.measurable_s
                samples.append(sample)
                time.sleep(0.5)
            cases.append(_summarise(rate, samples))
    finally:
        metrics.send_signal(signal.SIGTERM)
        metrics.wait(30)
        for replica in replicas:
            replica.stop()
    return cases


def _summarise(rate: int, samples: list[dict[str, float]]) -> dict[str, Any]:
    def stat(name: str) -> dict[str, float] | None:
        values = [s[name] for s in samples if name in s]
        if not values:
            return None
        return {
            "p50": round(float(np.median(values)), 4),
            "max": round(float(np.max(values)), 4),
        }

    measurable = stat("measurable_to_applied_s")
    return {
        "target_rate_per_s": rate,
        "rounds": len(samples),
        "achieved_rate_per_s": stat("achieved_rate_per_s"),
        "first_failure_to_applied_s": stat("first_failure_to_applied_s"),
        "measurable_to_applied_s": measurable,
        "canary_failures_before_applied": stat("canary_failures"),
        "meets_target": measurable is not None and measurable["max"] < TARGET_S,
    }


def _throughput(settings: Settings, events: int) -> dict[str, Any]:
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    rng = random.Random(3)
    now_ms = time.time_ns() // 1_000_000
    for index in range(events):
        route = Route.CANARY if index % 10 == 0 else Route.PRODUCTION
        version = "v2" if route is Route.CANARY else "v1"
        score = rng.random()
        features = {name: rng.gauss(0, 1) for name in FEATURES}
        prediction = PredictionEvent(
            f"p{index}", MODEL, version, now_ms, features, score, max(score, 1 - score),
            rng.lognormvariate(0, 0.5), route, "bench", f"k{index}", 1,
        )  # fmt: skip
        feedback = FeedbackRecord(
            f"p{index}", MODEL, version, route, "bench", features, score, max(score, 1 - score),
            now_ms, FeedbackStatus.JOINED, float(rng.random() < score), now_ms + 1000, 1000,
            "bench", now_ms + 1000,
        )  # fmt: skip
        key = prediction.prediction_id.encode()
        producer.produce(
            settings.topics.predictions, key=key, value=PREDICTION_CODEC.encode(prediction)
        )
        producer.produce(settings.topics.feedback, key=key, value=FEEDBACK_CODEC.encode(feedback))
        if index % 10_000 == 0:
            producer.poll(0)
            producer.flush(30)
    producer.flush(60)
    config = MetricsConfig(
        snapshot_interval_ms=1_000,
        guard_policy=GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None),
    )
    service = build_metrics_service(settings, config, group_prefix=f"bench-{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    first_event: float | None = None
    deadline = started + 600
    while time.monotonic() < deadline:
        service.step()
        if first_event is None and service.predictions.counts.events:
            first_event = time.monotonic()
        done = service.predictions.counts.events + service.feedback.counts.events
        if done >= 2 * events:
            break
    elapsed = time.monotonic() - (first_event or started)
    counts = service.predictions.counts.events + service.feedback.counts.events
    service.flush()
    service.close()
    return {
        "events": counts,
        "predictions_plus_feedback_events_per_s": round(counts / elapsed),
        "elapsed_s": round(elapsed, 2),
        "snapshots_written": service.counts.snapshots,
        "what": "decode + health (count+time windows) + drift + CBPE + guard + rollout hooks, "
        "one thread; snapshot inserts on a second thread every 1 s",
    }


# -- cold start ---------------------------------------------------------------------------------


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _first_breach_after_start(
    settings: Settings,
    replicas: list[Replica],
    failing: FailingModel,
    clock: AppliedClock,
    publisher: ControlPublisher,
    canary: str,
    log: Path,
) -> dict[str, float]:
    """Start `metrics run` under production traffic; the moment its /readyz answers 200,
    publish the failing canary and time the rollback; then stop the process."""
    ids = [replica.replica_id for replica in replicas]
    port = free_port()
    failing.reset()
    metrics = None
    try:
        with Traffic(replicas, COLD_RATE):
            started = time.monotonic()
            metrics = _metrics_process(settings, port, log)
            deadline = started + 120
            while not _ready(f"http://127.0.0.1:{port}/readyz"):
                if time.monotonic() > deadline or metrics.poll() is not None:
                    raise TimeoutError("metrics run never answered /readyz 200")
                time.sleep(0.01)
            ready_s = time.monotonic() - started
            sequence = _publish_canary(settings, publisher, canary)
            deadline = time.monotonic() + BREACH_TIMEOUT_S
            applied = None
            behind: dict[str, float] = {}
            while applied is None and time.monotonic() < deadline:
                time.sleep(0.005)
                applied = clock.all_after(ids, sequence)
                if not behind and failing.measurable_s is not None:
                    behind = _behind_at_measurable(replicas, port)
    finally:
        if metrics is not None:
            metrics.send_signal(signal.SIGTERM)
            try:
                metrics.wait(60)
            except subprocess.TimeoutExpired:
                metrics.kill()  # a loaded box: the next round must not wait on this one
                metrics.wait()
    if applied is None or failing.first_s is None:
        stats = [replica.sink.stats() for replica in replicas]
        raise TimeoutError(
            f"no rollback within {BREACH_TIMEOUT_S:g} s: canary sequence {sequence}, "
            f"{failing.failures} failing canary requests, event sinks {stats}"
        )
    # Applied before the MIN_REQUESTS-th failing request: the guard acted before this bench's
    # count called the breach measurable, so the round is 0 s late rather than missing (its
    # failing_requests says how many it took).
    measurable_s = applied if failing.measurable_s is None else failing.measurable_s
    return {
        "ready_after_start_s": ready_s,
        "measurable_to_applied_s": applied - measurable_s,
        "first_failure_to_applied_s": applied - failing.first_s,
        "failing_requests": float(failing.failures),
        **behind,
    }


def _behind_at_measurable(replicas: list[Replica], port: int) -> dict[str, float]:
    """Where a late rollback waits, sampled when the breach becomes measurable: events the
    replicas produced that Kafka has not acknowledged, and predictions `metrics run` has not
    read yet (its /metrics consumer lag, refreshed each second; -1 if unreadable)."""
    lag = -1.0
    with contextlib.suppress(OSError, ValueError):
        lag = scrape_total(
            f"http://127.0.0.1:{port}/metrics",
            "safeloop_metrics_consumer_lag",
            2.0,
            containing="predictions",
        )
    return {
        "replicas_unacknowledged_at_measurable": float(sum(r.sink.pending() for r in replicas)),
        "metrics_predictions_lag_at_measurable": lag,
    }


def cold_start(rounds: int) -> dict[str, Any]:
    """Round 1 on a broker started moments before; every round a new `metrics run`."""
    samples: list[dict[str, float]] = []
    failures: list[str] = []
    # Kept after the run: each round's `metrics run` log (INFO), to see where a late round went.
    logs = Path(tempfile.mkdtemp(prefix="safeloop-cold-start-logs-"))
    with tempfile.TemporaryDirectory(prefix="safeloop-bench-") as state:
        settings = _settings(Path(state))
        broker = LocalKafkaBroker(settings) if settings.uses_local_kafka else None
        warehouse = WarehouseProcess(settings) if settings.uses_embedded_clickhouse else None
        if broker is not None:
            broker.start()
        if warehouse is not None:
            warehouse.start()
        replicas: list[Replica] = []
        try:
            # A new canary version per round: the guard keeps the newest requests per version,
            # and a version rolled back in an earlier round would be judged on that round's
            # failures the moment it is a canary again (after one failing request).
            canaries = tuple(f"c{index + 1}" for index in range(rounds))
            _provision(settings, canaries)
            failing = FailingModel(ModelStore(settings.models_path).load(MODEL, "v2").model)
            replicas = _replicas(settings, failing, canaries)
            clock = AppliedClock(replicas)
            publisher = ControlPublisher(
                make_producer(settings, **{"linger.ms": 0}),
                settings.topics.control,
                load_keyring(settings),
                issuer="bench",
            )
            publisher.warm_up()  # the operator's own producer is not what is measured
            for index in range(rounds):
                try:
                    sample = _first_breach_after_start(
                        settings,
                        replicas,
                        failing,
                        clock,
                        publisher,
                        canaries[index],
                        logs / f"metrics-round-{index + 1}.log",
                    )
                except TimeoutError as exc:
                    failures.append(str(exc))
                    sys.stdout.write(f"round {index + 1}/{rounds}: FAILED {exc}\n")
                    continue
                samples.append(sample)
                sys.stdout.write(f"round {index + 1}/{rounds}: {json.dumps(sample)}\n")
                sys.stdout.flush()
        finally:
            for replica in replicas:
                replica.stop()
            if warehouse is not None:
                warehouse.stop()
            if broker is not None:
                broker.stop()

    def stat(name: str) -> dict[str, float] | None:
        if not samples:
            return None
        values = np.asarray([sample[name] for sample in samples])
        return {
            "p50": round(float(np.median(values)), 4),
            "p95": round(float(np.percentile(values, 95)), 4),
            "max": round(float(values.max()), 4),
        }

    cold = stat("measurable_to_applied_s")
    return {
        "benchmark": "rollback_cold_start",
        "what": "per round a new `safeloop metrics run` process (new control producer, group "
        f"re-join) while two replicas serve {COLD_RATE} requests/s; the moment its GET /readyz "
        "answers 200 the failing canary (10 %) is published: breach measurable "
        f"({MIN_REQUESTS} failing canary requests) -> rollback applied on both replicas. "
        "Round 1 runs on a Kafka broker started seconds before (nothing loaded yet)",
        "target_s": TARGET_S,
        "rounds": rounds,
        "measurable_to_applied_s": cold,
        "first_failure_to_applied_s": stat("first_failure_to_applied_s"),
        "ready_after_start_s": stat("ready_after_start_s"),
        "meets_target": cold is not None and cold["max"] < TARGET_S and not failures,
        "rounds_without_rollback": failures,
        "metrics_logs": str(logs),
        "samples": [{k: round(v, 4) for k, v in sample.items()} for sample in samples],
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--cold-start", action="store_true", help="the first rollback after a cold start"
    )
    args = parser.parse_args()
    if args.cold_start:
        result = cold_start(args.rounds)
        COLD_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        COLD_RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        summary = {k: v for k, v in result.items() if k not in ("samples", "what")}
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="safeloop-bench-") as state:
        settings = _settings(Path(state))
        settings = dataclasses.replace(settings, control_key=Secret(settings.control_key.value))
        broker = LocalKafkaBroker(settings) if settings.uses_local_kafka else None
        warehouse = WarehouseProcess(settings) if settings.uses_embedded_clickhouse else None
        if broker is not None:
            broker.start()
        if warehouse is not None:
            warehouse.start()
        try:
            _provision(settings)
            cases = _latency(settings, args.rounds)
            throughput_settings = dataclasses.replace(
                settings, topic_prefix=f"{settings.topic_prefix}tp."
            )
            TopicAdmin.from_settings(throughput_settings).ensure(topic_specs(throughput_settings))
            throughput = _throughput(throughput_settings, args.events)
        finally:
            if warehouse is not None:
                warehouse.stop()
            if broker is not None:
                broker.stop()
    result = {
        "benchmark": "rollback_latency",
        "what": "first failing canary request (and breach measurable: 100 failing canary "
        "requests) -> rollback applied on both replicas; canary at 10 %, central guard in a "
        "separate `safeloop metrics run` process, replicas and traffic in this process",
        "target_s": TARGET_S,
        "cases": cases,
        "metrics_consumer_throughput": throughput,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
