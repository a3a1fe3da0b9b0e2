"""Every setting safeloop reads, parsed once from the environment into one typed object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from safeloop.infra.cpu_priority import CpuPriority
from safeloop.infra.exceptions import SettingsError

_DAY_MS = 24 * 60 * 60 * 1000

_ALERT_KINDS = ("webhook", "slack", "pagerduty")
_SEVERITIES = ("info", "warning", "critical")

_TRUE = {"1", "true", "yes", "on"}
# How clients reach Kafka and how `safeloop kafka start` runs the local broker.
KAFKA_SECURITY_CHOICES = ("plaintext", "sasl_ssl")
MODEL_STORE_CHOICES = ("folder", "mlflow")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
KAFKA_CLIENT_VARIABLES = (
    "SAFELOOP_KAFKA_SECURITY",
    "SAFELOOP_KAFKA_SASL_MECHANISM",
    "SAFELOOP_KAFKA_USERNAME",
    "SAFELOOP_KAFKA_PASSWORD",
    "SAFELOOP_KAFKA_PASSWORD_FILE",
    "SAFELOOP_KAFKA_CA_FILE",
    "SAFELOOP_KAFKA_CLIENT_FILE",
)
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Secret:
    """A value that must never appear in logs or reprs."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class TopicNames:
    """The topic names in use, with the configured prefix applied."""

    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def predictions(self) -> str:
        return self._name("predictions")

    @property
    def outcomes(self) -> str:
        return self._name("outcomes")

    @property
    def feedback(self) -> str:
        return self._name("feedback")

    @property
    def control(self) -> str:
        return self._name("control")

    @property
    def replica_status(self) -> str:
        return self._name("replica-status")

    @property
    def retraining(self) -> str:
        return self._name("retraining")

    @property
    def dead_letter(self) -> str:
        return self._name("dead-letter")

    @property
    def metrics_summaries(self) -> str:
        """The guard's per-partition window summaries, shared by the metrics instances."""
        return self._name("metrics-summaries")

    @property
    def repartition(self) -> str:
        """The processor's internal topic: records re-routed to their prediction_id's partition."""
        return self._name("join-repartition")

    def all(self) -> tuple[str, ...]:
        return (
            self.predictions,
            self.outcomes,
            self.feedback,
            self.control,
            self.replica_status,
            self.retraining,
            self.dead_letter,
            self.repartition,
            self.metrics_summaries,
        )


@dataclass(frozen=True)
class Settings:
    """One immutable view of the configuration; build it with `Settings.from_env()`."""

    state_dir: Path = Path(".state")
    cache_dir: Path = Path(".cache")
    # None means: run and use the local broker started by `safeloop kafka start`.
    kafka_bootstrap_servers: str | None = None
    kafka_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    # Nodes of the local cluster (`safeloop kafka start --brokers N`); node k listens on
    # kafka_port + 2(k-1) and kafka_controller_port + 2(k-1). Unset, the count the local
    # cluster was formatted with (<state_dir>/kafka/brokers), else 1.
    kafka_brokers: int = 1
    kafka_version: str = "4.4.0"
    # "plaintext" (anyone who reaches the port may do anything) or "sasl_ssl" (TLS, SCRAM
    # users, ACLs per role); the local broker listens the same way its clients connect.
    kafka_security: str = "plaintext"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: Secret = Secret("")
    # The CA that signed the brokers' certificates (PEM); None: the system's trust store.
    kafka_ca_file: Path | None = None
    topic_prefix: str = ""
    partitions: int = 4
    replication_factor: int = 1
    # None means: use the embedded endpoint started by `safeloop warehouse start`.
    clickhouse_url: str | None = None
    clickhouse_user: str = "default"
    clickhouse_password: Secret = Secret("")
    clickhouse_database: str = "safeloop"
    warehouse_host: str = "127.0.0.1"
    warehouse_port: int = 8123
    log_level: str = "INFO"
    # None means: `<state_dir>/models`.
    model_dir: Path | None = None
    # Where models are registered: "folder" (`models_path`, no dependency) or "mlflow".
    model_store: str = "folder"
    # MLflow's tracking (and registry) server; None means: the embedded SQLite registry under
    # `<state_dir>/mlflow`, no server. Not in the repr: the URI may carry credentials.
    mlflow_tracking_uri: str | None = field(default=None, repr=False)
    mlflow_experiment: str = "safeloop"
    # Operator keys for signed control commands: a file of `key_id:hexsecret` lines (or JSON),
    # and/or one hex key from the environment; `control_key_id` picks the signing key.
    control_key_file: Path | None = None
    control_key: Secret = Secret("")
    control_key_id: str = ""
    # Empty means: `<hostname>-<pid>`, chosen when the replica starts.
    replica_id: str = ""
    # The dashboard's HTTP Basic credentials; required to bind it beyond loopback.
    dashboard_user: str = "safeloop"
    dashboard_password: Secret = Secret("")
    # Operators type it into the dashboard to approve or reject rollouts; empty: read-only.
    dashboard_operator_token: Secret = Secret("")
    serving_host: str = "127.0.0.1"
    serving_port: int = 8080
    status_heartbeat_ms: int = 2000
    # A replica silent for longer than this is no longer waited for by `--wait`.
    replica_liveness_ms: int = 10_000
    event_buffer_messages: int = 100_000
    # How long a prediction waits for its outcome: the default, and per model name.
    join_window_ms: int = 30 * _DAY_MS
    join_windows_ms: tuple[tuple[str, int], ...] = ()
    # How long an outcome that came before its prediction waits for it (and how long a closed
    # prediction_id is remembered, so an outcome after its window counts as late at once).
    early_outcome_wait_ms: int = 60 * 60 * 1000
    # All RocksDB memory of one stream worker process: its block cache, with the memtables
    # charged to it (flushed past half). Blocks of compacted-away files fill any cache to its
    # capacity, so more helps only when the joins' working set is larger.
    stream_rocksdb_memory_mb: int = 16
    # Alert targets as (kind, minimum severity, URL); kinds: webhook, slack, pagerduty. Not in
    # the repr: a Slack incoming-webhook URL is itself a secret.
    alert_targets: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    # Signs generic webhooks (HMAC-SHA256); PagerDuty's Events v2 routing key.
    alert_webhook_secret: Secret = Secret("")
    pagerduty_routing_key: Secret = Secret("")
    # Where alerts link to.
    dashboard_url: str = "http://127.0.0.1:8050"
    # Dead letters per minute above which the metrics service raises an alert.
    alert_dead_letters_per_minute: int = 100
    # The bearer token the HTTP ingest checks; required to bind it beyond loopback.
    ingest_token: Secret = Secret("")
    # The retraining loop: the training entry point (`module:function`, taking the window and
    # returning a model), how far back the labelled window reaches, the recency half-life.
    retrain_trainer: str = "safeloop.services.retraining.linear_trainer:train"
    retrain_window_ms: int = 30 * _DAY_MS
    retrain_half_life_ms: int = 7 * _DAY_MS
    # `safeloop shadow-scorer`'s CPU priority: idle (SCHED_IDLE, default), low (nice 19) or
    # normal. A shadow must never take a core from requests, so by default it runs only on
    # cycles nothing else wants (its answers come later under load, never the users' later).
    shadow_cpu_priority: CpuPriority = CpuPriority.IDLE

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect: the configured cluster or the local broker."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        # Every node, so a client started while one is down still finds the cluster.
        nodes = range(1, self.kafka_brokers + 1)
        return ",".join(f"{self.kafka_host}:{self.kafka_node_port(node)}" for node in nodes)

    def kafka_node_port(self, node_id: int) -> int:
        """The client listener of local node `node_id` (1-based)."""
        return self.kafka_port + 2 * (node_id - 1)

    def kafka_node_controller_port(self, node_id: int) -> int:
        """The controller listener of local node `node_id` (1-based)."""
        return self.kafka_controller_port + 2 * (node_id - 1)

    def with_kafka_brokers(self, count: int) -> Settings:
        """These settings for a local cluster of `count` nodes: replication factor min(3, N)."""
        return replace(
            self, kafka_brokers=count, replication_factor=local_replication_factor(count)
        )

    @property
    def kafka_secured(self) -> bool:
        """True when clients authenticate with SASL over TLS."""
        return self.kafka_security == "sasl_ssl"

    @property
    def kafka_principal(self) -> str:
        """The Kafka principal these settings act as, for error messages and ACLs."""
        if self.kafka_secured and self.kafka_username:
            return f"User:{self.kafka_username}"
        return "User:ANONYMOUS"

    @property
    def models_path(self) -> Path:
        """Where the model store lives."""
        return self.model_dir if self.model_dir is not None else self.state_dir / "models"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking/registry URI: the configured server or the embedded SQLite file."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.state_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> Path | None:
        """Where the embedded registry keeps artifacts; a server decides its own (None)."""
        return None if self.mlflow_tracking_uri else self.state_dir / "mlflow" / "artifacts"

    @property
    def uses_local_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def uses_embedded_clickhouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def clickhouse_endpoint(self) -> str:
        """The ClickHouse HTTP URL: the configured server or the embedded endpoint."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"http://{self.warehouse_host}:{self.warehouse_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse the environment (or `env`) once; invalid values raise `SettingsError`."""
        source = os.environ if env is None else env
        source = _with_client_file(source)
        reader = _EnvReader(source)
        defaults = cls()
        url = reader.text("CLICKHOUSE_URL", "") or None
        if url is not None:
            _check_url("CLICKHOUSE_URL", url)
        state_dir = Path(reader.text("SAFELOOP_STATE_DIR", str(defaults.state_dir)))
        bootstrap = reader.text("KAFKA_BOOTSTRAP_SERVERS", "") or None
        brokers = reader.positive_int(
            "SAFELOOP_KAFKA_BROKERS", recorded_kafka_brokers(state_dir) or defaults.kafka_brokers
        )
        # The local cluster replicates as far as its nodes allow; an external one as told.
        replication = local_replication_factor(brokers) if bootstrap is None else 1
        return cls(
            state_dir=state_dir,
            cache_dir=Path(reader.text("SAFELOOP_CACHE_DIR", str(defaults.cache_dir))),
            kafka_bootstrap_servers=bootstrap,
            kafka_brokers=brokers,
            kafka_host=reader.text("SAFELOOP_KAFKA_HOST", defaults.kafka_host),
            kafka_port=reader.port("SAFELOOP_KAFKA_PORT", defaults.kafka_port),
            kafka_controller_port=reader.port(
                "SAFELOOP_KAFKA_CONTROLLER_PORT", defaults.kafka_controller_port
            ),
            kafka_version=reader.text("SAFELOOP_KAFKA_VERSION", defaults.kafka_version),
            kafka_security=reader.choice(
                "SAFELOOP_KAFKA_SECURITY", defaults.kafka_security, KAFKA_SECURITY_CHOICES
            ).lower(),
            kafka_sasl_mechanism=reader.choice(
                "SAFELOOP_KAFKA_SASL_MECHANISM", defaults.kafka_sasl_mechanism, SASL_MECHANISMS
            ),
            kafka_username=reader.text("SAFELOOP_KAFKA_USERNAME", defaults.kafka_username),
            kafka_password=reader.secret("SAFELOOP_KAFKA_PASSWORD"),
            kafka_ca_file=reader.path("SAFELOOP_KAFKA_CA_FILE"),
            topic_prefix=reader.text("SAFELOOP_TOPIC_PREFIX", defaults.topic_prefix),
            partitions=reader.positive_int("SAFELOOP_PARTITIONS", defaults.partitions),
            replication_factor=reader.positive_int("SAFELOOP_REPLICATION_FACTOR", replication),
            clickhouse_url=url,
            clickhouse_user=reader.text("CLICKHOUSE_USER", defaults.clickhouse_user),
            clickhouse_password=Secret(reader.text("CLICKHOUSE_PASSWORD", "")),
            clickhouse_database=reader.identifier(
                "CLICKHOUSE_DATABASE", defaults.clickhouse_database
            ),
            warehouse_host=reader.text("SAFELOOP_WAREHOUSE_HOST", defaults.warehouse_host),
            warehouse_port=reader.port("SAFELOOP_WAREHOUSE_PORT", defaults.warehouse_port),
            log_level=reader.choice(
                "SAFELOOP_LOG_LEVEL", defaults.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
            model_dir=reader.path("SAFELOOP_MODEL_DIR"),
            model_store=reader.choice(
                "SAFELOOP_MODEL_STORE", defaults.model_store, MODEL_STORE_CHOICES
            ).lower(),
            mlflow_tracking_uri=reader.text("MLFLOW_TRACKING_URI", "") or None,
            mlflow_experiment=reader.text("SAFELOOP_MLFLOW_EXPERIMENT", defaults.mlflow_experiment),
            control_key_file=reader.path("SAFELOOP_CONTROL_KEY_FILE"),
            control_key=Secret(reader.text("SAFELOOP_CONTROL_KEY", "")),
            control_key_id=reader.text("SAFELOOP_CONTROL_KEY_ID", defaults.control_key_id),
            replica_id=reader.text("SAFELOOP_REPLICA_ID", defaults.replica_id),
            dashboard_user=reader.text("SAFELOOP_DASHBOARD_USER", defaults.dashboard_user),
            dashboard_password=reader.secret("SAFELOOP_DASHBOARD_PASSWORD"),
            dashboard_operator_token=reader.secret("SAFELOOP_DASHBOARD_OPERATOR_TOKEN"),
            serving_host=reader.text("SAFELOOP_SERVING_HOST", defaults.serving_host),
            serving_port=reader.port("SAFELOOP_SERVING_PORT", defaults.serving_port),
            status_heartbeat_ms=reader.positive_int(
                "SAFELOOP_STATUS_HEARTBEAT_MS", defaults.status_heartbeat_ms
            ),
            replica_liveness_ms=reader.positive_int(
                "SAFELOOP_REPLICA_LIVENESS_MS", defaults.replica_liveness_ms
            ),
            event_buffer_messages=reader.positive_int(
                "SAFELOOP_EVENT_BUFFER_MESSAGES", defaults.event_buffer_messages
            ),
            join_window_ms=reader.positive_int("SAFELOOP_JOIN_WINDOW_MS", defaults.join_window_ms),
            join_windows_ms=reader.model_millis("SAFELOOP_JOIN_WINDOWS"),
            early_outcome_wait_ms=reader.positive_int(
                "SAFELOOP_EARLY_OUTCOME_WAIT_MS", defaults.early_outcome_wait_ms
            ),
            stream_rocksdb_memory_mb=reader.positive_int(
                "SAFELOOP_STREAM_ROCKSDB_MEMORY_MB", defaults.stream_rocksdb_memory_mb
            ),
            alert_targets=reader.alert_targets("SAFELOOP_ALERT_TARGETS"),
            alert_webhook_secret=Secret(reader.text("SAFELOOP_ALERT_WEBHOOK_SECRET", "")),
            pagerduty_routing_key=Secret(reader.text("SAFELOOP_PAGERDUTY_ROUTING_KEY", "")),
            dashboard_url=reader.text("SAFELOOP_DASHBOARD_URL", defaults.dashboard_url),
            alert_dead_letters_per_minute=reader.positive_int(
                "SAFELOOP_ALERT_DEAD_LETTERS_PER_MINUTE", defaults.alert_dead_letters_per_minute
            ),
            ingest_token=Secret(reader.text("SAFELOOP_INGEST_TOKEN", "")),
            retrain_trainer=reader.text("SAFELOOP_RETRAIN_TRAINER", defaults.retrain_trainer),
            retrain_window_ms=reader.positive_int(
                "SAFELOOP_RETRAIN_WINDOW_MS", defaults.retrain_window_ms
            ),
            retrain_half_life_ms=reader.positive_int(
                "SAFELOOP_RETRAIN_HALF_LIFE_MS", defaults.retrain_half_life_ms
            ),
            shadow_cpu_priority=CpuPriority.parse(
                "SAFELOOP_SHADOW_CPU_PRIORITY",
                reader.text("SAFELOOP_SHADOW_CPU_PRIORITY", defaults.shadow_cpu_priority.value),
            ),
        )

    def kafka_client_env(self) -> dict[str, str]:
        """The variables that say how a child process authenticates to Kafka (holds secrets)."""
        return {key: value for key, value in self.to_env().items() if key in KAFKA_CLIENT_VARIABLES}

    def to_env(self) -> dict[str, str]:
        """The variables that make `from_env` return these settings, for child processes.

        The result holds secrets: pass it to a child's environment, never to a log.
        """
        return {
            "SAFELOOP_STATE_DIR": str(self.state_dir),
            "SAFELOOP_CACHE_DIR": str(self.cache_dir),
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers or "",
            "SAFELOOP_KAFKA_HOST": self.kafka_host,
            "SAFELOOP_KAFKA_PORT": str(self.kafka_port),
            "SAFELOOP_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "SAFELOOP_KAFKA_BROKERS": str(self.kafka_brokers),
            "SAFELOOP_KAFKA_VERSION": self.kafka_version,
            "SAFELOOP_KAFKA_SECURITY": self.kafka_security,
            "SAFELOOP_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "SAFELOOP_KAFKA_USERNAME": self.kafka_username,
            "SAFELOOP_KAFKA_PASSWORD": self.kafka_password.value,
            "SAFELOOP_KAFKA_PASSWORD_FILE": "",
            "SAFELOOP_KAFKA_CA_FILE": str(self.kafka_ca_file or ""),
            "SAFELOOP_KAFKA_CLIENT_FILE": "",
            "SAFELOOP_TOPIC_PREFIX": self.topic_prefix,
            "SAFELOOP_PARTITIONS": str(self.partitions),
            "SAFELOOP_REPLICATION_FACTOR": str(self.replication_factor),
            "CLICKHOUSE_URL": self.clickhouse_url or "",
            "CLICKHOUSE_USER": self.clickhouse_user,
            "CLICKHOUSE_PASSWORD": self.clickhouse_password.value,
            "CLICKHOUSE_DATABASE": self.clickhouse_database,
            "SAFELOOP_WAREHOUSE_HOST": self.warehouse_host,
            "SAFELOOP_WAREHOUSE_PORT": str(self.warehouse_port),
            "SAFELOOP_LOG_LEVEL": self.log_level,
            "SAFELOOP_MODEL_DIR": str(self.model_dir) if self.model_dir else "",
            "SAFELOOP_MODEL_STORE": self.model_store,
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri or "",
            "SAFELOOP_MLFLOW_EXPERIMENT": self.mlflow_experiment,
            "SAFELOOP_CONTROL_KEY_FILE": str(self.control_key_file or ""),
            "SAFELOOP_CONTROL_KEY": self.control_key.value,
            "SAFELOOP_CONTROL_KEY_ID": self.control_key_id,
            "SAFELOOP_REPLICA_ID": self.replica_id,
            "SAFELOOP_DASHBOARD_USER": self.dashboard_user,
            "SAFELOOP_DASHBOARD_PASSWORD": self.dashboard_password.value,
            "SAFELOOP_DASHBOARD_PASSWORD_FILE": "",
            "SAFELOOP_DASHBOARD_OPERATOR_TOKEN": self.dashboard_operator_token.value,
            "SAFELOOP_DASHBOARD_OPERATOR_TOKEN_FILE": "",
            "SAFELOOP_SERVING_HOST": self.serving_host,
            "SAFELOOP_SERVING_PORT": str(self.serving_port),
            "SAFELOOP_STATUS_HEARTBEAT_MS": str(self.status_heartbeat_ms),
            "SAFELOOP_REPLICA_LIVENESS_MS": str(self.replica_liveness_ms),
            "SAFELOOP_EVENT_BUFFER_MESSAGES": str(self.event_buffer_messages),
            "SAFELOOP_JOIN_WINDOW_MS": str(self.join_window_ms),
            "SAFELOOP_JOIN_WINDOWS": ",".join(f"{m}={ms}" for m, ms in self.join_windows_ms),
            "SAFELOOP_EARLY_OUTCOME_WAIT_MS": str(self.early_outcome_wait_ms),
            "SAFELOOP_STREAM_ROCKSDB_MEMORY_MB": str(self.stream_rocksdb_memory_mb),
            "SAFELOOP_ALERT_TARGETS": ",".join(
                f"{kind}@{severity}={url}" for kind, severity, url in self.alert_targets
            ),
            "SAFELOOP_ALERT_WEBHOOK_SECRET": self.alert_webhook_secret.value,
            "SAFELOOP_PAGERDUTY_ROUTING_KEY": self.pagerduty_routing_key.value,
            "SAFELOOP_DASHBOARD_URL": self.dashboard_url,
            "SAFELOOP_ALERT_DEAD_LETTERS_PER_MINUTE": str(self.alert_dead_letters_per_minute),
            "SAFELOOP_INGEST_TOKEN": self.ingest_token.value,
            "SAFELOOP_RETRAIN_TRAINER": self.retrain_trainer,
            "SAFELOOP_RETRAIN_WINDOW_MS": str(self.retrain_window_ms),
            "SAFELOOP_RETRAIN_HALF_LIFE_MS": str(self.retrain_half_life_ms),
            "SAFELOOP_SHADOW_CPU_PRIORITY": self.shadow_cpu_priority.value,
        }


class _EnvReader:
    """Typed accessors over a mapping of strings; every failure names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, default).strip()

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise SettingsError(name, raw, "one of true/false, 1/0, yes/no, on/off")

    def path(self, name: str) -> Path | None:
        value = self.text(name, "")
        return Path(value) if value else None

    def positive_int(self, name: str, default: int) -> int:
        raw = self._env.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = int(raw.strip())
        except ValueError as exc:
            raise SettingsError(name, raw, "a positive integer") from exc
        if value <= 0:
            raise SettingsError(name, raw, "a positive integer")
        return value

    def model_millis(self, name: str) -> tuple[tuple[str, int], ...]:
        """`model=ms,model=ms` (empty: none) as (model, ms) pairs; a repeated model: last wins."""
        raw = self._env.get(name, "")
        pairs: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            model, sep, value = item.partition("=")
            model = model.strip()
            try:
                ms = int(value.strip())
            except ValueError:
                ms = 0
            if not sep or not model or ms <= 0:
                raise SettingsError(
                    name, raw, f"MODEL=MILLISECONDS pairs separated by commas (bad: {item!r})"
                )
            pairs[model] = ms
        return tuple(pairs.items())

    def alert_targets(self, name: str) -> tuple[tuple[str, str, str], ...]:
        """`kind[@severity]=url,...` as (kind, severity, url); severity defaults to info."""
        raw = self._env.get(name, "")
        targets = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            spec, sep, url = item.partition("=")
            kind, _, severity = spec.strip().lower().partition("@")
            severity = severity or "info"
            scheme = urlsplit(url.strip()).scheme
            if (
                not sep
                or kind not in _ALERT_KINDS
                or severity not in _SEVERITIES
                or scheme
                not in (
                    "http",
                    "https",
                )
            ):
                raise SettingsError(
                    name,
                    "(not shown: it may hold a token)",
                    "KIND[@SEVERITY]=http(s)://URL items separated by commas, KIND one of "
                    f"{', '.join(_ALERT_KINDS)}, SEVERITY one of {', '.join(_SEVERITIES)}",
                )
            targets.append((kind, severity, url.strip()))
        return tuple(targets)

    def port(self, name: str, default: int) -> int:
        value = self.positive_int(name, default)
        if value > 65535:
            raise SettingsError(name, str(value), "a TCP port between 1 and 65535")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default).upper()
        if value not in {choice.upper() for choice in allowed}:
            raise SettingsError(name, value, "one of " + ", ".join(allowed))
        return value

    def secret(self, name: str) -> Secret:
        """`NAME`, or the first line of the file `NAME_FILE` names (the file wins if both)."""
        file_name = f"{name}_FILE"
        path = self.path(file_name)
        if path is None:
            return Secret(self.text(name, ""))
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise SettingsError(file_name, str(path), f"a readable file ({exc.strerror})") from exc
        return Secret(lines[0].strip() if lines else "")

    def identifier(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not value or not all(ch.isalnum() or ch == "_" for ch in value):
            raise SettingsError(name, value, "letters, digits and underscores")
        return value


def local_replication_factor(brokers: int) -> int:
    """Replicas per partition on a local cluster of `brokers` nodes: three once there are three."""
    return min(3, brokers)


def local_min_insync_replicas(replication_factor: int) -> int:
    """With acks=all a write reaches all but one replica: one node may be down (or restarting)."""
    return replication_factor - 1 if replication_factor > 1 else 1


def recorded_kafka_brokers(state_dir: Path) -> int | None:
    """The node count the local cluster under `state_dir` was formatted with, if any."""
    try:
        return int((state_dir / "kafka" / "brokers").read_text().strip())
    except (OSError, ValueError):
        return None


def _with_client_file(env: Mapping[str, str]) -> Mapping[str, str]:
    """`env` over the `KEY=VALUE` lines of SAFELOOP_KAFKA_CLIENT_FILE (a role's client file)."""
    name = "SAFELOOP_KAFKA_CLIENT_FILE"
    raw = env.get(name, "").strip()
    if not raw:
        return env
    try:
        text = Path(raw).read_text()
    except OSError as exc:
        raise SettingsError(name, raw, f"a readable file ({exc.strerror})") from exc
    merged: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(name, raw, f"KEY=VALUE lines (bad: {key[:40]!r})")
        merged[key.strip()] = value.strip()
    # What the environment says explicitly wins over the file.
    merged.update({key: value for key, value in env.items() if value.strip()})
    return merged


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(name, url, "an http(s)://host:port URL")
