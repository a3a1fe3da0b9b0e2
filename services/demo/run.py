"""`run_demo`: set up the local stack, tell the story, print the summary, keep the dashboard
open until Ctrl-C (unless told not to), and stop every process whatever happened."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from clickhouse_connect.driver import Client

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.broker_security import ADMIN_USER, SecurityPaths
from safeloop.infra.kafka.provisioning import client_file_env, role_settings
from safeloop.infra.kafka.roles import Role
from safeloop.infra.settings import Settings
from safeloop.services.demo.config import (
    MIN_LABELLED,
    MIN_REQUESTS,
    MODEL,
    DemoConfig,
    DemoPorts,
    child_environment,
    demo_settings,
)
from safeloop.services.demo.corrupted_trainer import ENTRY_POINT as CORRUPTED_TRAINER
from safeloop.services.demo.figures import StoryFigures
from safeloop.services.demo.labels import LabelFeed
from safeloop.services.demo.models import train_story_models
from safeloop.services.demo.progress import Gauges, Progress
from safeloop.services.demo.stack import LocalStack, ServiceSpec, http_ok, log_says
from safeloop.services.demo.story import Story, StoryResult
from safeloop.services.demo.summary import render
from safeloop.services.demo.traffic import TrafficDriver
from safeloop.services.demo.watch import ReplicaWatcher
from safeloop.services.models.store import ModelStore
from safeloop.services.models.training import DEFAULT_FEATURES

logger = logging.getLogger(__name__)

FEEDBACK_GAUGE_EVERY_S = 3.0
# The demo's data is minutes old: a two-minute half-life makes the newest labels count most.
RETRAIN_HALF_LIFE_MS = 120_000
RETRAIN_SHADOW_PAIRS = 30
SETTLE_S = 8.0


@dataclass
class _Live:
    """What the progress gauges read; filled in as the stack comes up."""

    traffic: TrafficDriver | None = None
    figures: StoryFigures | None = None
    feedback_rows: int = 0
    feedback_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gauges(self) -> Gauges:
        rate, canary = self.traffic.recent() if self.traffic else (0.0, 0.0)
        sent = self.traffic.counts.sent if self.traffic else 0
        failed = self.traffic.counts.failed if self.traffic else 0
        now = time.monotonic()
        if self.figures is not None and now - self.feedback_at >= FEEDBACK_GAUGE_EVERY_S:
            self.feedback_at = now
            try:
                self.feedback_rows = sum(self.figures.feedback_rows().values())
            except Exception as exc:
                logger.debug("feedback count failed: %s", exc)
        return Gauges(rate, canary, self.feedback_rows, sent, failed)


def run_demo(config: DemoConfig, base: Settings, out: TextIO) -> StoryResult:
    """Run the whole demo; returns the story's result (its `missing` list decides the exit)."""
    ports = DemoPorts.pick()
    settings = demo_settings(config, ports, base)
    env = child_environment(settings)
    shutil.rmtree(config.run_dir, ignore_errors=True)
    config.log_dir.mkdir(parents=True)
    live = _Live()
    progress = Progress(out, live.gauges, live=out.isatty())
    stop = threading.Event()
    with LocalStack(config.log_dir, env) as stack:
        progress.start()
        try:
            progress.phase(f"starting the stack (logs in {config.log_dir})")
            client, roles = start_stack(stack, settings, config, ports, progress)
            since_ms = time.time_ns() // 1_000_000
            live.figures = StoryFigures(client, MODEL, since_ms)
            return _tell(
                config, settings=settings, stack=stack, client=client, live=live,
                ports=ports, progress=progress, stop=stop, out=out, roles=roles,
            )  # fmt: skip
        finally:
            # Before the stack stops: the display must not query a stopped endpoint.
            stop.set()
            progress.stop()


def start_stack(
    stack: LocalStack, settings: Settings, config: DemoConfig, ports: DemoPorts, progress: Progress
) -> tuple[Client, _RoleEnvironments]:
    """Start the whole loop (broker, ClickHouse, processor, replicas, metrics, dashboard, shadow
    scorer) in `stack`; the demo and bench.soak run on it."""
    roles = _RoleEnvironments(None)
    if settings.uses_local_kafka:
        broker = LocalKafkaBroker(settings, start_timeout=180.0)
        broker.start()
        stack.adopt("kafka", broker.stop)
        if settings.kafka_secured:
            roles = _RoleEnvironments(broker.paths.security)
            # The story's CLI commands are the operator's.
            stack.env.update(roles.of(Role.OPERATOR.value))
            progress.event(
                f"Kafka broker on {settings.bootstrap_servers} (SASL_SSL; every process acts "
                "as its own role)"
            )
        else:
            progress.event(f"Kafka broker on {settings.bootstrap_servers} (plaintext)")
    if settings.uses_embedded_clickhouse:
        stack.start(ServiceSpec(
            "warehouse", ["warehouse", "start", "--foreground"],
            http_ok(f"{settings.clickhouse_endpoint}/ping"), 120.0,
        ))  # fmt: skip
        progress.event(f"ClickHouse endpoint on {settings.clickhouse_endpoint}")
    stack.run("topics", ["topics", "create"], env=roles.of(ADMIN_USER))
    stack.run("migrate", ["migrate"])
    key_file = settings.control_key_file
    assert key_file is not None
    key_file.write_text(stack.run("keygen", ["keygen", "--key-id", "demo"]))
    key_file.chmod(0o600)
    versions = train_story_models(ModelStore(settings.models_path), MODEL)
    progress.event("trained " + "; ".join(f"{v}: {what}" for v, what in versions.items()))
    stack.start(ServiceSpec(
        "processor", ["process", "--web-port", str(ports.processor_web)],
        http_ok(f"http://127.0.0.1:{ports.processor_web}/metrics"), 120.0,
        roles.of(Role.PROCESSOR.value),
    ))  # fmt: skip
    for index, port in enumerate(ports.replicas):
        name = f"replica-{'ab'[index]}"
        stack.start(ServiceSpec(
            name, ["serve", "--replica-id", name, "--port", str(port)],
            http_ok(f"http://127.0.0.1:{port}/readyz"), env=roles.of(Role.REPLICA.value),
        ))  # fmt: skip
    progress.event("stream processor and two replicas ready")
    stack.start(ServiceSpec(
        "metrics", [
            "metrics", "run", "--snapshot-interval-s", "2", "--health-window-s", "60",
            "--performance-window-s", "120", "--drift-window-rows", "600",
            "--guard-window-rows", "300", "--rollout-tick-s", "0.5",
            "--retraining-interval-s", f"{max(5.0, config.bake_s * 2):g}",
            "--max-p99-latency-ratio", "0", "--max-performance-drop", "0.2",
            "--min-requests", str(MIN_REQUESTS), "--min-labelled", str(MIN_LABELLED),
            "--http-port", str(ports.metrics_http),
        ],
        log_says(config.log_dir / "metrics.log", "metrics running"),
        env=roles.of(Role.METRICS.value),
    ))  # fmt: skip
    stack.start(ServiceSpec(
        "dashboard", ["dashboard", "--port", str(ports.dashboard)],
        http_ok(f"http://127.0.0.1:{ports.dashboard}/healthz"), env=roles.nobody(),
    ))  # fmt: skip
    # No role of its own yet (it reads and writes `predictions`): it runs as the admin.
    stack.start(ServiceSpec(
        "shadow-scorer", ["shadow-scorer", "--scorer-id", "shadow-demo"],
        log_says(config.log_dir / "shadow-scorer.log", "shadow scorer shadow-demo running"),
        env=roles.of(ADMIN_USER),
    ))  # fmt: skip
    progress.event(f"metrics service and dashboard (http://127.0.0.1:{ports.dashboard}) ready")
    return clickhouse_client(settings), roles


@dataclass(frozen=True)
class _RoleEnvironments:
    """Each child's Kafka identity: its role's client file when the broker is secured."""

    paths: SecurityPaths | None

    def of(self, name: str) -> dict[str, str]:
        return {} if self.paths is None else client_file_env(self.paths, name)

    def nobody(self) -> dict[str, str]:
        """No Kafka credentials at all (the dashboard reads ClickHouse only)."""
        if self.paths is None:
            return {}
        return {**client_file_env(self.paths, ADMIN_USER), "SAFELOOP_KAFKA_CLIENT_FILE": ""}


def labels_role_settings(settings: Settings) -> Settings:
    """The demo's label pipeline publishes as the labels role on a secured local broker."""
    if not (settings.uses_local_kafka and settings.kafka_secured):
        return settings
    return role_settings(settings, LocalKafkaBroker(settings).paths.security, Role.LABELS)


def _tell(
    config: DemoConfig,
    *,
    settings: Settings,
    stack: LocalStack,
    client: Client,
    live: _Live,
    ports: DemoPorts,
    progress: Progress,
    stop: threading.Event,
    out: TextIO,
    roles: _RoleEnvironments,
) -> StoryResult:
    assert live.figures is not None

    def start_retraining() -> None:
        # Started once the story's own rollouts are done: the loop's canary is the next one.
        env = {
            **roles.of(Role.METRICS.value),
            "SAFELOOP_RETRAIN_HALF_LIFE_MS": str(RETRAIN_HALF_LIFE_MS),
        }
        checks = ["--performance-tolerance", "0.05"]
        if config.worse_candidate:
            # Offline checks off, so only the canary's guard stands between it and production.
            env["SAFELOOP_RETRAIN_TRAINER"] = CORRUPTED_TRAINER
            checks = ["--performance-tolerance", "1", "--min-agreement", "0"]
        stack.start(ServiceSpec(
            "retrain", [
                "retrain", "run", "--shadow-bake-s", f"{config.bake_s:g}",
                "--min-shadow-pairs", str(RETRAIN_SHADOW_PAIRS), *checks,
                "--steps", "50,100", "--bake-s", f"{config.bake_s:g}",
                "--min-sample", str(config.min_sample), "--max-p99-latency-ratio", "0",
                "--latency-ratio-tolerance", "0", "--tick-s", "0.5",
            ],
            log_says(config.log_dir / "retrain.log", "retrain running"),
            env=env,
        ))  # fmt: skip

    labels = LabelFeed(labels_role_settings(settings), DEFAULT_FEATURES, config.label_delay_s)
    replicas = [("127.0.0.1", port) for port in ports.replicas]
    traffic = TrafficDriver(
        replicas, MODEL, DEFAULT_FEATURES, rate=config.rate, on_answer=labels.submit
    )
    watcher = ReplicaWatcher([f"http://{host}:{port}" for host, port in replicas], MODEL)
    live.traffic = traffic
    labels.start()
    watcher.start()
    traffic.start()
    try:
        story = Story(
            config, stack=stack, client=client, figures=live.figures, traffic=traffic,
            watcher=watcher, progress=progress, stop=stop, start_retraining=start_retraining,
        )  # fmt: skip
        result = story.run()
    finally:
        traffic.stop()
        labels.close()
        watcher.stop()
    progress.phase("wind-down: last labels joined and landed")
    stop.wait(SETTLE_S)
    progress.stop()
    dashboard_url = f"http://127.0.0.1:{ports.dashboard}/"
    out.write(render(result, live.figures, traffic.counts, labels.published, dashboard_url))
    out.flush()
    if config.keep_open:
        out.write(f"\nThe dashboard stays open at {dashboard_url} - press Ctrl-C to stop.\n")
        out.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            out.write("\nstopping every process...\n")
    return result
