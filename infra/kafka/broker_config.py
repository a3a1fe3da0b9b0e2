"""The local broker's on-disk layout and generated configuration: server.properties, log4j2, id."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safeloop.infra.kafka.broker_security import SecurityPaths
from safeloop.infra.settings import Settings

NODE_ID = 1


@dataclass(frozen=True)
class BrokerPaths:
    """Everything the local broker keeps under `<state_dir>/kafka/`."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "server.log"

    @property
    def jvm_output(self) -> Path:
        return self.logs / "jvm.out"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def server_properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def lifecycle_lock(self) -> Path:
        return self.root / "lifecycle.lock"

    @property
    def data_lock(self) -> Path:
        return self.data / ".lock"

    @property
    def meta_properties(self) -> Path:
        return self.data / "meta.properties"

    @property
    def security(self) -> SecurityPaths:
        return SecurityPaths(self.root)


def broker_properties(settings: Settings, data_dir: Path) -> dict[str, str]:
    """server.properties for a single combined KRaft node listening on `settings.kafka_host`."""
    host = settings.kafka_host
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # A static voter set (not `format --standalone`): ports may change between runs
        # without re-formatting, because the voter address comes from this file.
        "controller.quorum.voters": f"{NODE_ID}@{host}:{settings.kafka_controller_port}",
        "listeners": (
            f"PLAINTEXT://{host}:{settings.kafka_port},"
            f"CONTROLLER://{host}:{settings.kafka_controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{host}:{settings.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(settings.partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # One node: every internal topic must fit on it, or groups and transactions never start.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # After a crash the restarted node waits for its old registration to expire before it
        # can register again; a shorter session (default 9 s) shortens that wait.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        # Nobody else will join: start the first rebalance at once instead of after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created by TopicAdmin with explicit partitions and configs; a typo'd topic
        # name must fail loudly rather than silently create a one-partition topic.
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "log.cleaner.enable": "true",
    }


def render_properties(properties: Mapping[str, str]) -> str:
    """Java .properties text, one `key=value` a line."""
    lines = ["# Written by safeloop (infra/kafka/broker.py) on every start; edits are lost."]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def log4j2_properties(log_file: Path) -> str:
    """Log4j 2 configuration: the broker logs to a size-capped rolling file."""
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {log_file}",
            f"appender.file.filePattern = {log_file}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 50MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            "",
        ]
    )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka rejects ids that would parse as a command-line flag.
        if not cluster_id.startswith("-"):
            return cluster_id
