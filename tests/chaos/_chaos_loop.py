"""The loop the chaos scenarios break, built once for the tier: a 3-node cluster, two processor
workers into a ClickHouse endpoint of the tier's own (so it can be stopped), two in-process
serving replicas under steady traffic plus one `safeloop serve` process (so it can be
SIGKILLed), `safeloop metrics run` with its guard (a process, for the same reason), and a
label feed: predictions and outcomes produced idempotently with acks=all, each acknowledged
one remembered.

Each scenario takes a `Mark` before its fault and hands it to `ChaosLoop.report`, which counts
ClickHouse without FINAL (every acknowledged event exactly once) and writes the figures to
bench/results/chaos_<scenario>.json, the source of README's "Failures we test".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from _metrics_harness import (
    MODEL,
    TEST_POLICY,
    FlakyModel,
    Fleet,
    Traffic,
    fleet,
    metrics_settings,
    publish,
)
from _metrics_process import MetricsProcess, get_json, metrics_process
from _stream_harness import Run, new_run, now_ms, outcome, prediction
from _waiting import poller

from safeloop.infra.clickhouse.migrate import migrate
from safeloop.infra.kafka.clients import admin_client, make_producer
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.portcheck import free_port
from safeloop.infra.prometheus_scrape import scrape
from safeloop.infra.settings import Settings
from safeloop.infra.warehouse.process import WarehouseProcess
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import CommandKind
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.fleet import FleetWatcher
from safeloop.services.guard.local import CanaryVerdict, ReplicaGuard
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "bench" / "results"
wait_for = poller(180.0, 0.5)
# Modest: the tier runs on a shared 2-core machine beside three brokers and two workers.
PAIRS_PER_SECOND = 50
TICK_S = 0.1
REQUESTS_PER_SECOND = 40
# The label feed's events are a model of their own, so the guard judges only the replicas'.
LOAD_MODEL = "chaos-load"
LOAD_PREFIX = "c-"
PROCESS_REPLICA = "replica-process"
GUARD_MIN_REQUESTS = 100
METRICS_ARGS = [
    "--snapshot-interval-s", "0.5", "--rollout-tick-s", "0.2",
    "--min-requests", str(GUARD_MIN_REQUESTS),
    "--max-p99-latency-ratio", "0", "--max-performance-drop", "0",
]  # fmt: skip
# The replicas' local guards judge as the central guard does (METRICS_ARGS), on the same minimum
# sample (services.guard.local says why it must not be smaller).
LOCAL_GUARD_POLICY = replace(TEST_POLICY, min_requests=GUARD_MIN_REQUESTS)
CLI = [sys.executable, "-m", "safeloop.services.cli.main"]
# Where each acknowledged event must be exactly once (never FINAL: doubles must not hide).
SOURCES = {
    "predictions": "predictions",
    "outcomes": "outcomes",
    "feedback": "feedback WHERE status = 'joined'",
}


@dataclass
class Load:
    """Predictions and outcomes produced (idempotent, acks=all) and which were acknowledged."""

    predictions: set[str] = field(default_factory=set)
    outcomes: set[str] = field(default_factory=set)
    failed: int = 0
    sent: int = 0
    # id -> "topic partition:offset" of every acknowledged record (a loss's first clue).
    where: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acknowledged(self) -> tuple[set[str], set[str]]:
        with self.lock:
            return set(self.predictions), set(self.outcomes)

    def acked_predictions(self) -> int:
        with self.lock:
            return len(self.predictions)


def produce_load(settings: Settings, stop: threading.Event, load: Load) -> None:
    """PAIRS_PER_SECOND prediction+outcome pairs until `stop`; then flush everything.

    Ticks of a tenth of a second's pairs on a fixed schedule, so the load (and the backlog a
    scenario's recovery must work off) does not scale with how fast the machine acknowledges.
    A tick that comes late (a stalled process) is caught up, at most a second's worth."""
    producer = make_producer(settings)
    names = settings.topics

    def acked(into: set[str]) -> Any:
        def on_delivery(error: object, message: Any) -> None:
            with load.lock:
                if error is None:
                    key = message.key().decode()
                    into.add(key)
                    load.where[f"{message.topic()}/{key}"] = (
                        f"{message.partition()}:{message.offset()}"
                    )
                else:
                    load.failed += 1

        return on_delivery

    on_prediction, on_outcome = acked(load.predictions), acked(load.outcomes)
    next_tick = time.monotonic()
    while not stop.is_set():
        for _ in range(round(PAIRS_PER_SECOND * TICK_S)):
            pid = f"{LOAD_PREFIX}{uuid.uuid4().hex[:16]}"
            event = prediction(pid, ts=now_ms(), model=LOAD_MODEL)
            value = PREDICTION_CODEC.encode(event)
            producer.produce(names.predictions, value, pid.encode(), on_delivery=on_prediction)
            value = OUTCOME_CODEC.encode(outcome(pid, truth=1.0))
            producer.produce(names.outcomes, value, pid.encode(), on_delivery=on_outcome)
            load.sent += 1
        next_tick = max(next_tick + TICK_S, time.monotonic() - 1.0)
        # `poll` returns on the first delivery report: serve reports until the tick is due.
        while not stop.is_set() and (due_in := next_tick - time.monotonic()) > 0:
            producer.poll(due_in)
    assert producer.flush(120) == 0


def leaders(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """Partition -> (leader, in-sync replica count)."""
    topics = admin_client(settings).list_topics(topic, timeout=10).topics
    return {n: (p.leader, len(p.isrs)) for n, p in topics[topic].partitions.items()}


def fully_in_sync(settings: Settings, topic: str, replicas: int = 3) -> bool:
    """Every partition of `topic` has all `replicas` in sync again."""
    return all(isr == replicas for _, isr in leaders(settings, topic).values())


@dataclass(frozen=True)
class Mark:
    """Where the loop stood when a scenario began."""

    at: float
    acked_predictions: int
    requests: int
    errors: int
    latencies: int


@dataclass(frozen=True)
class Tally:
    """ClickHouse counted without FINAL against what Kafka acknowledged."""

    acknowledged: dict[str, int]
    # Acknowledged but not in ClickHouse when counted: lost, if everything had landed in time.
    lost: dict[str, int]
    doubled: dict[str, int]
    # Seconds the count waited for ClickHouse to hold as many rows as were acknowledged; None
    # if it never did within the wait (the processor still behind: `lost` then is an upper bound).
    landed_after_s: float | None
    # A few of the ids `lost` counts, per table (where to start looking).
    lost_ids: dict[str, list[str]] = field(default_factory=dict)


class ArmableGuard(ReplicaGuard):
    """A replica's local guard that counts all along but acts only while armed: the failover
    scenario measures it; the others measure the central guard alone."""

    def __init__(self, policy: GuardPolicy) -> None:
        super().__init__(policy)
        self.armed = threading.Event()

    def check(self) -> list[CanaryVerdict]:
        verdicts = super().check()
        return verdicts if self.armed.is_set() else []


@dataclass
class ChaosLoop:
    settings: Settings
    run: Run
    warehouse: WarehouseProcess
    fleet: Fleet
    traffic: Traffic
    load: Load
    processes: ExitStack
    # Versions that fail on demand, by version: v2 (the rollout's), v3 (the failover's canary).
    flaky: dict[str, FlakyModel]
    metrics: MetricsProcess | None = None
    replica: subprocess.Popen[bytes] | None = None
    replica_port: int = 0
    # The in-process replicas' local guards, disarmed unless a scenario arms them.
    local_guards: list[ArmableGuard] = field(default_factory=list)

    # -- marks and reports -----------------------------------------------------------------

    def mark(self) -> Mark:
        return Mark(
            time.monotonic(),
            self.load.acked_predictions(),
            self.traffic.sent,
            self.traffic.failed,
            len(self.traffic.latencies_ms),
        )

    def serving_since(self, mark: Mark) -> dict[str, Any]:
        """Requests, errors and p99 of the two in-process replicas since `mark`."""
        latencies = sorted(self.traffic.latencies_ms[mark.latencies :])
        p99 = latencies[int(len(latencies) * 0.99)] if latencies else None
        return {
            "requests": self.traffic.sent - mark.requests,
            "errors": self.traffic.failed - mark.errors,
            "p99_ms": None if p99 is None else round(p99, 2),
        }

    def wait_landed(self, timeout_s: float = 300.0) -> tuple[dict[str, set[str]], float | None]:
        """Wait until ClickHouse holds every id of the label feed Kafka acknowledged so far (in
        predictions, outcomes and joined feedback); those acknowledged ids by table, and how
        long that took (None: not within `timeout_s`). Ids, not counts: the load goes on, and
        newer rows must not make up for older ones still missing."""
        started = time.monotonic()
        predictions, outcomes = self.load.acknowledged()
        wanted = {
            "predictions": predictions,
            "outcomes": outcomes,
            "feedback": predictions & outcomes,
        }
        mine = f"startsWith(prediction_id, '{LOAD_PREFIX}')"

        def landed() -> bool:
            return all(
                ids
                <= {
                    row[0]
                    for row in self.run.query(
                        f"SELECT DISTINCT prediction_id FROM {SOURCES[t]}"
                        f" {'AND' if 'WHERE' in SOURCES[t] else 'WHERE'} {mine}"
                    )
                }
                for t, ids in wanted.items()
            )

        if not wait_for(landed, timeout_s):
            return wanted, None
        return wanted, round(time.monotonic() - started, 1)

    def tally(self, timeout_s: float = 300.0) -> Tally:
        """Every event acknowledged so far, counted in ClickHouse once it has all landed."""
        wanted, landed_after_s = self.wait_landed(timeout_s)
        lost, doubled, lost_ids = {}, {}, {}
        for table, ids in wanted.items():
            source = SOURCES[table]
            stored = {row[0] for row in self.run.query(f"SELECT prediction_id FROM {source}")}
            lost[table] = len(ids - stored)
            names = self.settings.topics
            topic = names.outcomes if table == "outcomes" else names.predictions
            lost_ids[table] = [
                f"{key}@{self.load.where.get(f'{topic}/{key}')}"
                for key in sorted(ids - stored)[:20]
            ]
            doubled[table] = self.run.count(
                f"SELECT count() - uniqExact(prediction_id) FROM {source}"
            )
        acknowledged = {t: len(ids) for t, ids in wanted.items()}
        return Tally(acknowledged, lost, doubled, landed_after_s, lost_ids)

    def report(self, scenario: str, mark: Mark, **figures: Any) -> Tally:
        """Count ClickHouse and write bench/results/chaos_<scenario>.json; the tally."""
        serving = self.serving_since(mark)
        tally = self.tally()
        record = {
            "scenario": scenario,
            **{k: v for k, v in figures.items() if k in ("fault",)},
            "load": {
                "pairs_per_s": PAIRS_PER_SECOND,
                "requests_per_s": REQUESTS_PER_SECOND,
                "workers": 2,
                "replicas_in_process": 2,
                "replica_processes": 1,
            },
            "acknowledged_during_scenario": self.load.acked_predictions() - mark.acked_predictions,
            "acknowledged_total": tally.acknowledged,
            "lost": tally.lost,
            **({"lost_ids": tally.lost_ids} if any(tally.lost.values()) else {}),
            "landed_after_s": tally.landed_after_s,
            "doubled": tally.doubled,
            "producer_failures": self.load.failed,
            "serving": serving,
            **{k: v for k, v in figures.items() if k != "fault"},
            "scenario_s": round(time.monotonic() - mark.at, 1),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"chaos_{scenario}.json").write_text(json.dumps(record, indent=2) + "\n")
        return tally

    # -- the processes a scenario kills ----------------------------------------------------

    def start_metrics(self, *, ready: bool = True) -> MetricsProcess:
        """`safeloop metrics run` with the guard (once /readyz says 200 unless told otherwise)."""
        log = self.run.state_dir / "metrics.log"
        # One id across restarts, as a StatefulSet pod keeps its name: a restarted service gets
        # its partitions back at once instead of after the killed one's session.
        instance = ["--instance-id", f"{self.settings.topic_prefix}metrics"]
        self.metrics = self.processes.enter_context(
            metrics_process(self.settings, *METRICS_ARGS, *instance, ready=ready, log=log)
        )
        return self.metrics

    def metrics_log(self, since: int | None = None) -> str:
        """The metrics log's tail, or everything after byte `since` (from `metrics_log_size`)."""
        with (self.run.state_dir / "metrics.log").open("rb") as log:
            if since is not None:
                log.seek(since)
                return log.read().decode(errors="replace")
            return log.read().decode(errors="replace")[-5000:]

    def guard_diagnosis(self) -> str:
        """What a failed rollback needs explained: the replicas' event delivery, the central
        guard's figures and what its log says about guarding, control and rebuilding."""
        sinks = [replica.sink.stats() for replica in self.fleet.replicas]
        figures = ""
        if self.metrics is not None and (code := self.metrics.process.poll()) is not None:
            figures = f"(the metrics process exited with {code})"
        elif self.metrics is not None:
            try:
                text = scrape(f"http://127.0.0.1:{self.metrics.port}/metrics")
                figures = "\n".join(
                    line
                    for line in text.splitlines()
                    if not line.startswith("#")
                    and any(w in line for w in ("guard", "rollback", "judg", "rebuil", "lag"))
                )
            except OSError as exc:
                figures = f"(no /metrics: {exc})"
        log = [
            line
            for line in self.metrics_log(since=0).splitlines()
            if any(w in line.lower() for w in ("guard", "rollback", "rolled", "control", "rebuil"))
        ]
        return (
            f"configs: {self.fleet.configs()}\nreplica sinks: {sinks}\n"
            f"central guard figures:\n{figures}\nmetrics log (guarding):\n" + "\n".join(log[-40:])
        )

    def metrics_log_size(self) -> int:
        return (self.run.state_dir / "metrics.log").stat().st_size

    def metrics_ready(self) -> bool:
        return self.metrics is not None and get_json(self.metrics.port, "/readyz")[0] == 200

    def start_replica(self) -> None:
        """`safeloop serve` as a process of its own (a third replica, followed by control)."""
        self.replica_port = free_port()
        log = (self.run.state_dir / f"{PROCESS_REPLICA}.log").open("ab")
        self.processes.callback(log.close)
        self.replica = subprocess.Popen(
            [*CLI, "serve", "--replica-id", PROCESS_REPLICA, "--port", str(self.replica_port)],
            cwd=REPO,
            env={**os.environ, **self.settings.to_env()},
            stdout=log,
            stderr=log,
        )

    def kill_replica(self) -> None:
        assert self.replica is not None
        self.replica.send_signal(signal.SIGKILL)
        self.replica.wait(30)

    def stop_replica(self) -> None:
        if self.replica is not None and self.replica.poll() is None:
            self.replica.terminate()
            try:
                self.replica.wait(30)
            except subprocess.TimeoutExpired:
                self.replica.kill()
                self.replica.wait(30)

    def replica_ready(self) -> bool:
        return get_json(self.replica_port, "/readyz")[0] == 200

    def process_replica_applied(self, watcher: FleetWatcher) -> int:
        """The control sequence the replica process last reported applied for MODEL."""
        status = watcher.update(0.2).replicas.get(PROCESS_REPLICA)
        return 0 if status is None else status.config_versions.get(MODEL, 0)

    def fleet_watcher(self) -> FleetWatcher:
        reader = make_broadcast_reader(self.settings, self.settings.topics.replica_status, "c")
        return FleetWatcher(reader, self.settings.replica_liveness_ms)

    def publish(self, kind: CommandKind, change: Any) -> int:
        return publish(self.settings, kind, change)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.settings.to_env()}
        return subprocess.run(
            [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )

    def logs(self) -> str:
        return "\n".join(self.run.worker_log(name) for name in self.run.workers)


def _train_more_versions(settings: Settings) -> None:
    """v3 and v4 beside v1 and v2: the guard's windows are per version and count-based, so
    each scenario's canary is a version no earlier scenario's failures are remembered for."""
    store = ModelStore(settings.models_path)
    for seed, version in enumerate(("v3", "v4"), start=2):
        if version not in store.versions(MODEL):
            dataset = make_dataset(ModelTask.CLASSIFICATION, 2000, seed=seed)
            store.save(*train_model(MODEL, version, ModelTask.CLASSIFICATION, dataset))
            time.sleep(0.002)  # created_at_ms orders versions; keep them distinct.


def _make_flaky(replicas: Fleet, version: str) -> FlakyModel:
    """`version` on both replicas, failing on demand (the fleet's own `flaky` is v2)."""
    flaky = FlakyModel(ModelStore(replicas.settings.models_path).load(MODEL, version).model)
    for replica in replicas.replicas:
        loaded = replica.catalog.get(MODEL, version)
        assert loaded is not None
        replica.catalog.add(LoadedModel(flaky, loaded.metadata))
    return flaky


def _settled(run: Run, worker: str) -> bool:
    """Whether `worker` finished recovering its latest assignment."""
    text = (run.state_dir / f"{worker}.log").read_text(errors="replace")
    assigned = text.rfind("Setting newly assigned partitions")
    return assigned >= 0 and text.find("Worker ready", assigned) >= 0


def build_loop(cluster: Settings, tmp: Path, stack: ExitStack) -> ChaosLoop:
    """Start everything (torn down by `stack`); returns once events flow into ClickHouse."""
    suffix = uuid.uuid4().hex[:6]
    base = replace(
        cluster,
        topic_prefix=f"chaos-{suffix}.",
        clickhouse_database=f"chaos_{suffix}",
        status_heartbeat_ms=300,
        replica_liveness_ms=3000,
    )
    # The tier's own endpoint, in its own process: the outage scenario stops it.
    own = replace(
        base, state_dir=tmp / "warehouse", warehouse_port=free_port(), clickhouse_url=None
    )
    warehouse = WarehouseProcess(own, startup_timeout=120.0)
    warehouse.start()
    stack.callback(warehouse.stop)
    settings = metrics_settings(replace(base, clickhouse_url=warehouse.url), tmp / "models")
    _train_more_versions(settings)
    TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
    migrate(settings)

    run = new_run(settings, tmp / "run", window_ms=600_000)
    (tmp / "run").mkdir(exist_ok=True)
    # Workers given KAFKA_BOOTSTRAP_SERVERS would replicate their changelogs once.
    run.env["SAFELOOP_REPLICATION_FACTOR"] = str(settings.replication_factor)
    stack.callback(run.stop_all)
    run.start_worker(0, free_port())
    run.start_worker(1, free_port())

    load, stop = Load(), threading.Event()
    producing = threading.Thread(target=produce_load, args=(settings, stop, load), daemon=True)
    producing.start()

    def stop_load() -> None:
        stop.set()
        producing.join(180)

    stack.callback(stop_load)
    guards: list[ArmableGuard] = []

    def local_guard() -> ArmableGuard:
        guards.append(ArmableGuard(LOCAL_GUARD_POLICY))
        return guards[-1]

    replicas = stack.enter_context(fleet(settings, local_guard=local_guard))
    traffic = Traffic(replicas, REQUESTS_PER_SECOND).start()
    stack.callback(traffic.stop)
    flaky = {"v2": replicas.flaky, "v3": _make_flaky(replicas, "v3")}
    loop = ChaosLoop(
        settings, run, warehouse, replicas, traffic, load, stack, flaky, local_guards=guards
    )
    # Production is v1 from the start (without a command the store's newest would serve).
    first = publish(settings, CommandKind.PROMOTE, lambda c: replace(c, production_version="v1"))
    assert wait_for(lambda: min(replicas.applied_sequence()) >= first, 60)
    loop.start_replica()
    stack.callback(loop.stop_replica)
    loop.start_metrics(ready=False)
    joined = (
        f"SELECT countIf(startsWith(prediction_id, '{LOAD_PREFIX}')) FROM {SOURCES['feedback']}"
    )
    # The workers' first rebalances on a busy machine take minutes, not seconds.
    assert wait_for(lambda: loop.run.count(joined) >= 200, 600), loop.logs()
    # Steady load, as the scenarios say: the first worker can be joining and recovering while
    # the second has long joined rows; a fault then lands mid-rebalance (another scenario).
    assert wait_for(lambda: all(_settled(run, name) for name in run.workers), 300), loop.logs()
    assert wait_for(loop.metrics_ready, 300), loop.metrics_log()
    assert wait_for(loop.replica_ready, 120), "the replica process never became ready"
    return loop
