"""The demo's knobs and the timings derived from them, and the environment every child shares."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safeloop.infra.portcheck import free_port, port_is_free
from safeloop.infra.settings import Secret, Settings

MODEL = "churn"
DRIFT_FEATURE = "income"
DRIFT_SHIFT = 2.0
DEFAULT_DURATION_S = 150.0
DEFAULT_RATE = 30.0
DASHBOARD_PORT = 8050
# The guard's and the rollout's evidence thresholds: small, so a short demo has enough of it.
MIN_REQUESTS = 30
MIN_LABELLED = 30
JOIN_WINDOW_MS = 30_000


@dataclass(frozen=True)
class DemoConfig:
    """What the user chose; the story's timings scale with `duration_s` and `rate`."""

    duration_s: float = DEFAULT_DURATION_S
    rate: float = DEFAULT_RATE
    keep_open: bool = True
    state_dir: Path = Path(".state")
    # The local broker's security; every process acts as its own role when it is secured.
    kafka_security: str = "sasl_ssl"
    # The retraining loop's candidate is trained on corrupted labels: it must be rolled back.
    worse_candidate: bool = False

    @property
    def run_dir(self) -> Path:
        return (self.state_dir / "demo").resolve()

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def label_delay_s(self) -> float:
        return min(5.0, max(1.0, self.duration_s / 60))

    @property
    def bake_s(self) -> float:
        return max(2.0, self.duration_s * 0.04)

    @property
    def warmup_s(self) -> float:
        return max(5.0, self.duration_s * 0.08)

    @property
    def min_sample(self) -> int:
        """Canary requests per rollout step: what the 5 % step receives in one bake time."""
        return max(10, min(100, int(self.rate * 0.05 * self.bake_s)))

    def phase_timeout_s(self, share: float) -> float:
        """How long a phase may take before its outcome counts as missing."""
        return max(60.0, self.duration_s * share * 3)


@dataclass(frozen=True)
class DemoPorts:
    kafka: int
    kafka_controller: int
    warehouse: int
    replicas: tuple[int, int]
    processor_web: int
    dashboard: int
    # The metrics service's /metrics endpoint: free, not its 6067 default another run may hold.
    metrics_http: int

    @classmethod
    def pick(cls) -> DemoPorts:
        dashboard = DASHBOARD_PORT if port_is_free("127.0.0.1", DASHBOARD_PORT) else free_port()
        return cls(
            kafka=free_port(),
            kafka_controller=free_port(),
            warehouse=free_port(),
            replicas=(free_port(), free_port()),
            processor_web=free_port(),
            dashboard=dashboard,
            metrics_http=free_port(),
        )


def demo_settings(config: DemoConfig, ports: DemoPorts, base: Settings) -> Settings:
    """The settings every demo process shares: fresh topics, the demo's state directory, key
    file and ports; an external Kafka or ClickHouse (KAFKA_BOOTSTRAP_SERVERS, CLICKHOUSE_URL)
    is kept."""
    return dataclasses.replace(
        base,
        kafka_security=config.kafka_security if base.uses_local_kafka else base.kafka_security,
        state_dir=config.run_dir,
        cache_dir=base.cache_dir.resolve(),
        kafka_port=ports.kafka,
        kafka_controller_port=ports.kafka_controller,
        warehouse_port=ports.warehouse,
        topic_prefix=f"{base.topic_prefix}demo-{uuid.uuid4().hex[:6]}.",
        model_dir=None,
        control_key_file=config.run_dir / "control.key",
        control_key=Secret(""),
        control_key_id="",
        status_heartbeat_ms=1000,
        replica_liveness_ms=5000,
    )


def child_environment(
    settings: Settings, parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of every child: `settings` through `Settings.to_env`, plus the short join
    window the stream processor reads from its own variable."""
    return {
        **(os.environ if parent is None else parent),
        **settings.to_env(),
        "SAFELOOP_JOIN_WINDOW_MS": str(JOIN_WINDOW_MS),
        "PYTHONUNBUFFERED": "1",
    }
