"""Every setting safeloop reads, parsed once from the environment into one typed object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from safeloop.infra.exceptions import SettingsError

_DAY_MS = 24 * 60 * 60 * 1000

_TRUE = {"1", "true", "yes", "on"}
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
    kafka_version: str = "4.4.0"
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
    # Operator keys for signed control commands: a file of `key_id:hexsecret` lines (or JSON),
    # and/or one hex key from the environment; `control_key_id` picks the signing key.
    control_key_file: Path | None = None
    control_key: Secret = Secret("")
    control_key_id: str = ""
    # Empty means: `<hostname>-<pid>`, chosen when the replica starts.
    replica_id: str = ""
    serving_host: str = "127.0.0.1"
    serving_port: int = 8080
    status_heartbeat_ms: int = 2000
    # A replica silent for longer than this is no longer waited for by `--wait`.
    replica_liveness_ms: int = 10_000
    event_buffer_messages: int = 100_000
    shadow_queue_size: int = 1000
    # How long a prediction waits for its outcome: the default, and per model name.
    join_window_ms: int = 30 * _DAY_MS
    join_windows_ms: tuple[tuple[str, int], ...] = ()
    # How long an outcome that came before its prediction waits for it (and how long a closed
    # prediction_id is remembered, so an outcome after its window counts as late at once).
    early_outcome_wait_ms: int = 60 * 60 * 1000

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect: the configured cluster or the local broker."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def models_path(self) -> Path:
        """Where the model store lives."""
        return self.model_dir if self.model_dir is not None else self.state_dir / "models"

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
        reader = _EnvReader(source)
        defaults = cls()
        url = reader.text("CLICKHOUSE_URL", "") or None
        if url is not None:
            _check_url("CLICKHOUSE_URL", url)
        return cls(
            state_dir=Path(reader.text("SAFELOOP_STATE_DIR", str(defaults.state_dir))),
            cache_dir=Path(reader.text("SAFELOOP_CACHE_DIR", str(defaults.cache_dir))),
            kafka_bootstrap_servers=reader.text("KAFKA_BOOTSTRAP_SERVERS", "") or None,
            kafka_host=reader.text("SAFELOOP_KAFKA_HOST", defaults.kafka_host),
            kafka_port=reader.port("SAFELOOP_KAFKA_PORT", defaults.kafka_port),
            kafka_controller_port=reader.port(
                "SAFELOOP_KAFKA_CONTROLLER_PORT", defaults.kafka_controller_port
            ),
            kafka_version=reader.text("SAFELOOP_KAFKA_VERSION", defaults.kafka_version),
            topic_prefix=reader.text("SAFELOOP_TOPIC_PREFIX", defaults.topic_prefix),
            partitions=reader.positive_int("SAFELOOP_PARTITIONS", defaults.partitions),
            replication_factor=reader.positive_int(
                "SAFELOOP_REPLICATION_FACTOR", defaults.replication_factor
            ),
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
            control_key_file=reader.path("SAFELOOP_CONTROL_KEY_FILE"),
            control_key=Secret(reader.text("SAFELOOP_CONTROL_KEY", "")),
            control_key_id=reader.text("SAFELOOP_CONTROL_KEY_ID", defaults.control_key_id),
            replica_id=reader.text("SAFELOOP_REPLICA_ID", defaults.replica_id),
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
            shadow_queue_size=reader.positive_int(
                "SAFELOOP_SHADOW_QUEUE_SIZE", defaults.shadow_queue_size
            ),
            join_window_ms=reader.positive_int("SAFELOOP_JOIN_WINDOW_MS", defaults.join_window_ms),
            join_windows_ms=reader.model_millis("SAFELOOP_JOIN_WINDOWS"),
            early_outcome_wait_ms=reader.positive_int(
                "SAFELOOP_EARLY_OUTCOME_WAIT_MS", defaults.early_outcome_wait_ms
            ),
        )

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
            "SAFELOOP_KAFKA_VERSION": self.kafka_version,
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
            "SAFELOOP_CONTROL_KEY_FILE": str(self.control_key_file or ""),
            "SAFELOOP_CONTROL_KEY": self.control_key.value,
            "SAFELOOP_CONTROL_KEY_ID": self.control_key_id,
            "SAFELOOP_REPLICA_ID": self.replica_id,
            "SAFELOOP_SERVING_HOST": self.serving_host,
            "SAFELOOP_SERVING_PORT": str(self.serving_port),
            "SAFELOOP_STATUS_HEARTBEAT_MS": str(self.status_heartbeat_ms),
            "SAFELOOP_REPLICA_LIVENESS_MS": str(self.replica_liveness_ms),
            "SAFELOOP_EVENT_BUFFER_MESSAGES": str(self.event_buffer_messages),
            "SAFELOOP_SHADOW_QUEUE_SIZE": str(self.shadow_queue_size),
            "SAFELOOP_JOIN_WINDOW_MS": str(self.join_window_ms),
            "SAFELOOP_JOIN_WINDOWS": ",".join(f"{m}={ms}" for m, ms in self.join_windows_ms),
            "SAFELOOP_EARLY_OUTCOME_WAIT_MS": str(self.early_outcome_wait_ms),
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

    def port(self, name: str, default: int) -> int:
        value = self.positive_int(name, default)
        if value > 65535:
            raise SettingsError(name, str(value), "a TCP port between 1 and 65535")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default).upper()
        if value not in allowed:
            raise SettingsError(name, value, "one of " + ", ".join(allowed))
        return value

    def identifier(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not value or not all(ch.isalnum() or ch == "_" for ch in value):
            raise SettingsError(name, value, "letters, digits and underscores")
        return value


def _check_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(name, url, "an http(s)://host:port URL")
