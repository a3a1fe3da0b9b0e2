"""The local broker's on-disk layout and generated configuration: server.properties, log4j2, id."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safeloop.infra.kafka.broker_security import SecurityPaths
from safeloop.infra.settings import (
    Settings,
    local_min_insync_replicas,
    local_replication_factor,
)

NODE_ID = 1


@dataclass(frozen=True)
class BrokerPaths:
    """Everything local node `node_id` keeps under `<state_dir>/kafka/` (node 1, the only one
    of a single-node cluster) or `<state_dir>/kafka/node-<id>/`; security and locks are shared."""

    root: Path
    node_id: int = NODE_ID

    @property
    def node_root(self) -> Path:
        return self.root if self.node_id == NODE_ID else self.root / f"node-{self.node_id}"

    def node(self, node_id: int) -> BrokerPaths:
        """The paths of another node of the same cluster."""
        return BrokerPaths(self.root, node_id)

    @property
    def node_count_file(self) -> Path:
        """How many nodes the cluster was formatted with (read by Settings.from_env)."""
        return self.root / "brokers"

    @property
    def data(self) -> Path:
        return self.node_root / "data"

    @property
    def logs(self) -> Path:
        return self.node_root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "server.log"

    @property
    def jvm_output(self) -> Path:
        return self.logs / "jvm.out"

    @property
    def pid_file(self) -> Path:
        return self.node_root / "broker.pid"

    @property
    def server_properties(self) -> Path:
        return self.node_root / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.node_root / "log4j2.properties"

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


def controller_ids(brokers: int) -> list[int]:
    """The KRaft voters of a local cluster: an odd number of nodes (at most 3), first ids first.

    A quorum of 2f+1 survives f lost voters; an even count adds no tolerance (2 voters survive
    no loss, like 1), so 2 nodes get 1 voter and 4+ nodes get 3. The voters are combined
    broker+controller nodes: a dedicated controller JVM per voter would double the memory of a
    laptop cluster for a guarantee (metadata survives a broker crash) it already has.
    """
    count = min(3, brokers)
    return list(range(1, (count if count % 2 else count - 1) + 1))


def broker_properties(settings: Settings, data_dir: Path, node_id: int = NODE_ID) -> dict[str, str]:
    """server.properties for local node `node_id` of `settings.kafka_brokers` KRaft nodes."""
    host = settings.kafka_host
    voters = controller_ids(settings.kafka_brokers)
    port = settings.kafka_node_port(node_id)
    listeners = f"PLAINTEXT://{host}:{port}"
    if node_id in voters:
        listeners += f",CONTROLLER://{host}:{settings.kafka_node_controller_port(node_id)}"
    replication = local_replication_factor(settings.kafka_brokers)
    min_isr = str(local_min_insync_replicas(replication))
    return {
        "process.roles": "broker,controller" if node_id in voters else "broker",
        "node.id": str(node_id),
        # A static voter set (not `format --standalone`): ports may change between runs
        # without re-formatting, because the voter address comes from this file.
        "controller.quorum.voters": ",".join(
            f"{voter}@{host}:{settings.kafka_node_controller_port(voter)}" for voter in voters
        ),
        "listeners": listeners,
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(settings.partitions),
        # Topics created without an explicit layout (and the internal ones) replicate as far as
        # the nodes allow, and an acks=all write needs all but one replica.
        "default.replication.factor": str(replication),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": min_isr,
        # After a crash the restarted node waits for its old registration to expire before it
        # can register again; a shorter session (default 9 s) shortens that wait.
        # Several nodes on one busy machine miss heartbeats now and then: a little more slack
        # there, or healthy nodes get fenced and leaders move for nothing.
        "broker.session.timeout.ms": "4000" if settings.kafka_brokers == 1 else "6000",
        "broker.heartbeat.interval.ms": "1000",
        # A replica that fell behind (its node was killed) leaves the ISR after 10 s, not 30 s.
        "replica.lag.time.max.ms": "10000",
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
