"""LocalKafkaBroker: one real Apache Kafka KRaft node (broker + controller) on this machine."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from safeloop.infra import daemon_process
from safeloop.infra.exceptions import (
    ExternalClusterError,
    InfraError,
    KafkaAdminError,
    PortInUseError,
    StartupError,
)
from safeloop.infra.kafka import broker_process as process
from safeloop.infra.kafka.broker_config import (
    NODE_ID,
    BrokerPaths,
    broker_properties,
    controller_ids,
    log4j2_properties,
    new_cluster_id,
    render_properties,
)
from safeloop.infra.kafka.broker_process import JVM_FLAGS
from safeloop.infra.kafka.broker_security import (
    ADMIN_USER,
    prepare_broker_security,
    scram_format_argument,
    secured_properties,
)
from safeloop.infra.kafka.clients import cluster_answers, probe_admin, security_config
from safeloop.infra.kafka.cluster_status import cluster_load
from safeloop.infra.kafka.jars import fetch_kafka_jars, jars_present, require_tool
from safeloop.infra.kafka.provisioning import admin_settings, provision_roles
from safeloop.infra.kafka.secret_files import write_private
from safeloop.infra.portcheck import port_accepts_connections, port_is_free
from safeloop.infra.settings import Settings, recorded_kafka_brokers

# The configuration helpers lived here first; callers still import them from this module.
__all__ = [
    "JVM_FLAGS",
    "NODE_ID",
    "BrokerPaths",
    "BrokerStatus",
    "LocalKafkaBroker",
    "NodeStatus",
    "Progress",
    "broker_properties",
    "log4j2_properties",
    "new_cluster_id",
    "render_properties",
]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

_STORAGE_TOOL = "kafka.tools.StorageTool"
_POLL_S = 0.2
_TAIL_LINES = 30
# A metadata answer waited for while the node starts; a loaded box needs seconds for TLS+SCRAM.
_METADATA_WAIT_S = 10.0


@dataclass(frozen=True)
class NodeStatus:
    """One local node: its process, its role, and (while the cluster answers) what it leads."""

    node_id: int
    running: bool
    pid: int | None
    port: int
    roles: str
    partitions_led: int | None = None
    under_replicated: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "running": self.running,
            "pid": self.pid,
            "port": self.port,
            "roles": self.roles,
            "partitions_led": self.partitions_led,
            "under_replicated": self.under_replicated,
        }


@dataclass(frozen=True)
class BrokerStatus:
    """What `safeloop kafka status` reports; `running` means every node runs."""

    running: bool
    pid: int | None
    bootstrap: str
    version: str | None
    data_dir: Path | None
    security: str = "plaintext"
    nodes: tuple[NodeStatus, ...] = ()
    offline_partitions: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "security": self.security,
            "pid": self.pid,
            "bootstrap": self.bootstrap,
            "version": self.version,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "nodes": [node.as_dict() for node in self.nodes],
            "offline_partitions": self.offline_partitions,
        }


class LocalKafkaBroker:
    """Start, stop and inspect the local cluster (`settings.kafka_brokers` KRaft nodes, one by
    default); its processes outlive the Python that started them."""

    def __init__(
        self, settings: Settings, start_timeout: float = 90.0, stop_timeout: float = 30.0
    ) -> None:
        self._settings = settings
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        # Node 1's paths; the cluster's shared files (security, locks) hang off the same root.
        self.paths = BrokerPaths(settings.state_dir.resolve() / "kafka")

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self._settings.kafka_brokers + 1))

    def node_paths(self, node_id: int) -> BrokerPaths:
        return self.paths.node(node_id)

    def node_pid(self, node_id: int) -> int | None:
        """The pid of local node `node_id` while it runs."""
        return process.owned_pid(self.node_paths(node_id))

    def start(self, progress: Progress | None = None) -> BrokerStatus:
        """Start every node that is not running and wait until all answer; no-op if all run."""
        self._refuse_external("start")
        with self._lifecycle_lock():
            return self._start(progress or _log_progress)

    def _start(self, report: Progress) -> BrokerStatus:
        nodes = [self.node_paths(node) for node in self.node_ids]
        for paths in nodes:
            self._clear_stale_pid_file(paths)
        stopped = [paths for paths in nodes if process.owned_pid(paths) is None]
        if not stopped:
            log.info("Kafka already running (%d node(s))", len(nodes))
            return self.status()
        self._check_node_count()
        for paths in stopped:
            self._check_ports_free(paths.node_id)
        java = require_tool("java")
        if not jars_present(self._settings):
            report("fetching Kafka jars from Maven Central…")
        libs = fetch_kafka_jars(self._settings)
        self._check_format_mode()
        cluster_id = self._cluster_id()
        for paths in stopped:
            self._write_config(paths)
        unformatted = [paths for paths in stopped if not paths.meta_properties.is_file()]
        if unformatted:
            report("formatting storage…")
            self._format_storage(java, libs, unformatted, cluster_id)
        for paths in stopped:
            if process.clear_stale_lock(paths):
                log.info("removed stale lock file %s", paths.data_lock)
        self.paths.node_count_file.write_text(f"{len(nodes)}\n")
        started = time.monotonic()
        # Remember where this run's output begins, so a failure quotes this run only.
        launched = {
            paths.node_id: (_size(paths.log_file), _size(paths.jvm_output)) for paths in stopped
        }
        # All nodes first: a quorum of voters cannot elect a leader until a majority runs.
        pids = {paths.node_id: self._launch(java, libs, paths) for paths in stopped}
        report("waiting for broker…" if len(nodes) == 1 else f"waiting for {len(nodes)} nodes…")
        self._wait_until_ready(pids, launched)
        if self._settings.kafka_secured:
            report("creating users and ACLs…")
            provision_roles(self._settings, self.paths.security)
        log.info(
            "Kafka %s ready on %s in %.1fs (%d node(s), started pids %s): %s",
            self._settings.kafka_version,
            self._settings.bootstrap_servers,
            time.monotonic() - started,
            len(nodes),
            sorted(pids.values()),
            f"SASL_SSL ({self._settings.kafka_sasl_mechanism}), ACLs per role; client files in "
            f"{self.paths.security.clients}"
            if self._settings.kafka_secured
            else "PLAINTEXT, no authentication, no encryption, no ACLs: for local experiments "
            "only (SAFELOOP_KAFKA_SECURITY=sasl_ssl secures it)",
        )
        return self.status()

    def stop(self) -> BrokerStatus:
        """SIGTERM for a clean shutdown, SIGKILL after `stop_timeout`; no-op if not running."""
        self._refuse_external("stop")
        with self._lifecycle_lock():
            return self._stop()

    def _stop(self) -> BrokerStatus:
        running: dict[int, int] = {}
        for node in self._known_node_ids():
            paths = self.node_paths(node)
            self._clear_stale_pid_file(paths)
            pid = process.owned_pid(paths)
            if pid is not None:
                running[node] = pid
        if not running:
            log.info("Kafka was not running; nothing to stop")
            return self.status()
        # All at once: stopped one by one, the last voters lose their quorum and each waits
        # for a controlled shutdown nobody can grant.
        for node, pid in running.items():
            log.info("stopping Kafka node %d (pid %d)", node, pid)
            daemon_process.send_signal(pid, signal.SIGTERM)
        for node, pid in running.items():
            what = f"Kafka node {node} pid {pid}"
            if not daemon_process.terminate(pid, self._stop_timeout, what=what, logger=log):
                raise InfraError(f"{what} survived SIGKILL")
            self.node_paths(node).pid_file.unlink(missing_ok=True)
        return self.status()

    def kill_node(self, node_id: int) -> int:
        """SIGKILL node `node_id` (a crash, for failover tests); returns the pid it had."""
        pid = self.node_pid(node_id)
        if pid is None:
            raise InfraError(f"Kafka node {node_id} is not running")
        if not daemon_process.kill(pid):
            raise InfraError(f"Kafka node {node_id} pid {pid} survived SIGKILL")
        return pid

    def status(self) -> BrokerStatus:
        """Whether every node runs, and what each leads; for an external cluster, whether it
        answers."""
        settings = self._settings
        if not settings.uses_local_kafka:
            reachable = cluster_answers(
                settings.bootstrap_servers, timeout=5.0, security=security_config(settings)
            )
            return BrokerStatus(
                reachable, None, settings.bootstrap_servers, None, None, settings.kafka_security
            )
        voters = controller_ids(settings.kafka_brokers)
        nodes = [
            NodeStatus(
                node,
                (pid := process.owned_pid(self.node_paths(node))) is not None,
                pid,
                settings.kafka_node_port(node),
                "broker,controller" if node in voters else "broker",
            )
            for node in self._known_node_ids()
        ]
        nodes, offline = self._with_load(nodes)
        first = nodes[0]
        version = process.running_version(first.pid) if first.pid is not None else None
        return BrokerStatus(
            running=all(node.running for node in nodes),
            pid=first.pid,
            bootstrap=settings.bootstrap_servers,
            version=version or settings.kafka_version,
            data_dir=self.paths.data,
            security=settings.kafka_security,
            nodes=tuple(nodes),
            offline_partitions=offline,
        )

    def _with_load(self, nodes: list[NodeStatus]) -> tuple[list[NodeStatus], int | None]:
        """`nodes` with partitions led and under-replicated filled in, if the cluster answers."""
        settings = self._settings
        if not any(node.running for node in nodes):
            return nodes, None
        viewer = (
            admin_settings(settings, self.paths.security) if settings.kafka_secured else settings
        )
        if not cluster_answers(settings.bootstrap_servers, 5.0, security_config(viewer)):
            return nodes, None
        try:
            load = cluster_load(viewer, [node.node_id for node in nodes])
        except KafkaAdminError as exc:
            log.warning("could not describe the cluster: %s", exc)
            return nodes, None
        by_id = {entry.node_id: entry for entry in load.nodes}
        filled = [
            replace(
                node,
                partitions_led=by_id[node.node_id].partitions_led,
                under_replicated=by_id[node.node_id].under_replicated,
            )
            for node in nodes
        ]
        return filled, load.offline_partitions

    def _known_node_ids(self) -> list[int]:
        """The configured nodes plus any other this state dir holds (to stop what was started)."""
        recorded = recorded_kafka_brokers(self._settings.state_dir.resolve()) or 1
        return list(range(1, max(recorded, self._settings.kafka_brokers) + 1))

    def _check_node_count(self) -> None:
        """A quorum formatted for one voter set cannot be restarted with another."""
        if not self.paths.meta_properties.is_file():
            return
        recorded = recorded_kafka_brokers(self._settings.state_dir.resolve()) or 1
        if recorded != self._settings.kafka_brokers:
            raise StartupError(
                f"the local Kafka in {self.paths.root} was formatted with {recorded} node(s), "
                f"not {self._settings.kafka_brokers}; start it with --brokers {recorded}, or "
                f"remove {self.paths.root} (its topics go with it) to make a new cluster"
            )

    def _cluster_id(self) -> str:
        """One cluster id for every node, kept beside them so a node added later agrees."""
        id_file = self.paths.root / "cluster-id"
        if id_file.is_file():
            return id_file.read_text().strip()
        for line in _read_lines(self.paths.meta_properties):
            if line.startswith("cluster.id="):
                cluster_id = line.removeprefix("cluster.id=").strip()
                break
        else:
            cluster_id = new_cluster_id()
        id_file.write_text(f"{cluster_id}\n")
        return cluster_id

    def _refuse_external(self, action: str) -> None:
        if not self._settings.uses_local_kafka:
            raise ExternalClusterError(
                f"KAFKA_BOOTSTRAP_SERVERS={self._settings.kafka_bootstrap_servers} points at an "
                f"external cluster, so there is no local broker to {action}. "
                "Unset it to use the local broker."
            )

    @contextlib.contextmanager
    def _lifecycle_lock(self) -> Iterator[None]:
        """Serialise start/stop across processes (a CLI and a test session, say)."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with self.paths.lifecycle_lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _clear_stale_pid_file(self, paths: BrokerPaths) -> None:
        """A pid file left by a crash, or whose pid now belongs to another program, is removed."""
        reason = process.stale_pid_reason(paths)
        if reason is None:
            return
        log.warning("removing stale pid file %s: %s", paths.pid_file, reason)
        paths.pid_file.unlink(missing_ok=True)

    def _check_ports_free(self, node_id: int) -> None:
        settings = self._settings
        host = settings.kafka_host
        ports = [(settings.kafka_node_port(node_id), f"Kafka broker (node {node_id})")]
        if node_id in controller_ids(settings.kafka_brokers):
            ports.append(
                (settings.kafka_node_controller_port(node_id), f"Kafka controller (node {node_id})")
            )
        for port, what in ports:
            if not port_is_free(host, port):
                raise PortInUseError(host, port, what)

    def _check_format_mode(self) -> None:
        """Storage formatted for plaintext has no admin user: it cannot be run secured."""
        if not self._settings.kafka_secured or not self.paths.meta_properties.is_file():
            return
        mode_file = self.paths.security.format_mode
        mode = mode_file.read_text().strip() if mode_file.is_file() else "plaintext"
        if mode != "sasl_ssl":
            raise StartupError(
                f"Kafka storage in {self.paths.data} was formatted for plaintext, so it has no "
                "SCRAM admin user; remove that directory (its topics go with it) to re-format "
                "it secured, or set SAFELOOP_KAFKA_SECURITY=plaintext"
            )

    def _write_config(self, paths: BrokerPaths) -> None:
        for directory in (paths.data, paths.logs):
            directory.mkdir(parents=True, exist_ok=True)
        node = paths.node_id
        properties = broker_properties(self._settings, paths.data, node)
        if self._settings.kafka_secured:
            security = prepare_broker_security(self.paths.security, self._settings)
            voter = node in controller_ids(self._settings.kafka_brokers)
            properties.update(secured_properties(self._settings, security, node, voter))
        # The secured configuration holds the admin's password: readable by its owner only.
        write_private(paths.server_properties, render_properties(properties))
        paths.log4j_config.write_text(log4j2_properties(paths.log_file))

    def _format_storage(
        self, java: str, libs: Path, nodes: list[BrokerPaths], cluster_id: str
    ) -> None:
        """Write each node's meta.properties and bootstrap metadata once, with the cluster's id;
        the nodes' storage tools (a JVM start each) run side by side."""
        settings = self._settings
        extra: list[str] = []
        if settings.kafka_secured:
            # The admin exists from the first metadata record on; only its salted form is passed.
            admin = admin_settings(settings, self.paths.security)
            extra = [
                "--add-scram",
                scram_format_argument(
                    settings.kafka_sasl_mechanism, ADMIN_USER, admin.kafka_password
                ),
            ]
        tools = {
            paths.node_id: subprocess.Popen(
                process.java_command(
                    java,
                    libs,
                    paths,
                    _STORAGE_TOOL,
                    "format",
                    "--cluster-id",
                    cluster_id,
                    "--config",
                    str(paths.server_properties),
                    *extra,
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for paths in nodes
        }
        failures = []
        for paths in nodes:
            tool = tools[paths.node_id]
            try:
                output, _ = tool.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                tool.kill()
                output, _ = tool.communicate()
            if tool.returncode != 0:
                failures.append(f"formatting Kafka storage in {paths.data} failed:\n{output}")
            else:
                log.info("formatted Kafka storage in %s (%s)", paths.data, settings.kafka_security)
        if failures:
            raise StartupError("\n".join(failures).strip())
        if any(paths.node_id == NODE_ID for paths in nodes):
            self.paths.security.format_mode.write_text(f"{settings.kafka_security}\n")

    def _launch(self, java: str, libs: Path, paths: BrokerPaths) -> int:
        command = process.broker_command(java, libs, paths, self._settings.kafka_version)
        log.debug("launching %s", " ".join(command))
        pid = process.spawn_detached(command, paths.jvm_output)
        paths.pid_file.write_text(f"{pid}\n")
        return pid

    def _wait_until_ready(
        self, pids: dict[int, int], log_offsets: dict[int, tuple[int, int]]
    ) -> None:
        """Until every node answers and the cluster lists them all (a restarted node has
        registered again)."""
        settings = self._settings
        # The secured broker answers its admin; whoever runs `start` may hold another role.
        probe = (
            security_config(admin_settings(settings, self.paths.security))
            if settings.kafka_secured
            else {}
        )
        wanted = set(self.node_ids)
        deadline = time.monotonic() + self._start_timeout
        # One client for every probe: a TLS and SCRAM handshake per probe, under a 2 s
        # time-out, never completed on a box at load 60, and the start gave up on a broker
        # that was serving all along.
        admin: AdminClient | None = None
        while time.monotonic() < deadline:
            for node, pid in pids.items():
                if not daemon_process.is_alive(pid):
                    paths = self.node_paths(node)
                    paths.pid_file.unlink(missing_ok=True)
                    raise StartupError(
                        self._failure_report(
                            f"Kafka node {node} exited during startup", paths, log_offsets[node]
                        )
                    )
            # Probe the sockets first so librdkafka does not log a refused connection per poll.
            if all(
                port_accepts_connections(settings.kafka_host, settings.kafka_node_port(node))
                for node in pids
            ):
                if admin is None:
                    admin = probe_admin(settings.bootstrap_servers, probe)
                if wanted <= _registered_brokers(admin, deadline):
                    return
            time.sleep(_POLL_S)
        for node, pid in pids.items():
            daemon_process.kill(pid)
            self.node_paths(node).pid_file.unlink(missing_ok=True)
        first = min(pids)
        raise StartupError(
            self._failure_report(
                f"the Kafka cluster did not list nodes {sorted(wanted)} on "
                f"{settings.bootstrap_servers} within {self._start_timeout:.0f}s; killed",
                self.node_paths(first),
                log_offsets[first],
            )
        )

    def _failure_report(self, what: str, paths: BrokerPaths, log_offsets: tuple[int, int]) -> str:
        server_log = daemon_process.tail(paths.log_file, _TAIL_LINES, offset=log_offsets[0])
        report = f"{what}; see {paths.log_file}. Last lines:\n{server_log}"
        jvm_output = daemon_process.tail(paths.jvm_output, _TAIL_LINES, offset=log_offsets[1])
        if jvm_output:
            report += f"\nJVM output ({paths.jvm_output}):\n{jvm_output}"
        return report


def _registered_brokers(admin: AdminClient, deadline: float) -> set[int]:
    """The broker ids the cluster's metadata lists (empty while it does not answer)."""
    try:
        timeout = min(_METADATA_WAIT_S, max(0.5, deadline - time.monotonic()))
        return set(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return set()


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _log_progress(message: str) -> None:
    log.info("%s", message)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
