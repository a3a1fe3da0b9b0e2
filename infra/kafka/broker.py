"""LocalKafkaBroker: one real Apache Kafka KRaft node (broker + controller) on this machine."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from safeloop.infra import daemon_process
from safeloop.infra.exceptions import ExternalClusterError, InfraError, PortInUseError, StartupError
from safeloop.infra.kafka import broker_process as process
from safeloop.infra.kafka.broker_config import (
    NODE_ID,
    BrokerPaths,
    broker_properties,
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
from safeloop.infra.kafka.clients import cluster_answers, security_config
from safeloop.infra.kafka.jars import fetch_kafka_jars, jars_present, require_tool
from safeloop.infra.kafka.provisioning import admin_settings, provision_roles
from safeloop.infra.kafka.secret_files import write_private
from safeloop.infra.portcheck import port_accepts_connections, port_is_free
from safeloop.infra.settings import Settings

# The configuration helpers lived here first; callers still import them from this module.
__all__ = [
    "JVM_FLAGS",
    "NODE_ID",
    "BrokerPaths",
    "BrokerStatus",
    "LocalKafkaBroker",
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


@dataclass(frozen=True)
class BrokerStatus:
    """What `safeloop kafka status` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    version: str | None
    data_dir: Path | None
    security: str = "plaintext"

    def as_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "security": self.security,
            "pid": self.pid,
            "bootstrap": self.bootstrap,
            "version": self.version,
            "data_dir": str(self.data_dir) if self.data_dir else None,
        }


class LocalKafkaBroker:
    """Start, stop and inspect the local broker; its process outlives the Python that started it."""

    def __init__(
        self, settings: Settings, start_timeout: float = 90.0, stop_timeout: float = 30.0
    ) -> None:
        self._settings = settings
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self.paths = BrokerPaths(settings.state_dir.resolve() / "kafka")

    def start(self, progress: Progress | None = None) -> BrokerStatus:
        """Start the broker and wait until it answers metadata requests; no-op if running."""
        self._refuse_external("start")
        with self._lifecycle_lock():
            return self._start(progress or _log_progress)

    def _start(self, report: Progress) -> BrokerStatus:
        self._clear_stale_pid_file()
        if process.owned_pid(self.paths) is not None:
            log.info("Kafka broker already running (pid file %s)", self.paths.pid_file)
            return self.status()
        self._check_ports_free()
        java = require_tool("java")
        if not jars_present(self._settings):
            report("fetching Kafka jars from Maven Central…")
        libs = fetch_kafka_jars(self._settings)
        self._check_format_mode()
        self._write_config()
        if not self.paths.meta_properties.is_file():
            report("formatting storage…")
            self._format_storage(java, libs)
        if process.clear_stale_lock(self.paths):
            log.info("removed stale lock file %s", self.paths.data_lock)
        started = time.monotonic()
        # Remember where this run's output begins, so a failure quotes this run only.
        log_offsets = (_size(self.paths.log_file), _size(self.paths.jvm_output))
        pid = self._launch(java, libs)
        report("waiting for broker…")
        self._wait_until_ready(pid, log_offsets)
        if self._settings.kafka_secured:
            report("creating users and ACLs…")
            provision_roles(self._settings, self.paths.security)
            log.info(
                "Kafka %s ready on %s in %.1fs (pid %d): SASL_SSL (%s), ACLs per role; "
                "client files in %s",
                self._settings.kafka_version,
                self._settings.bootstrap_servers,
                time.monotonic() - started,
                pid,
                self._settings.kafka_sasl_mechanism,
                self.paths.security.clients,
            )
        else:
            log.warning(
                "Kafka %s ready on %s in %.1fs (pid %d): PLAINTEXT, no authentication, no "
                "encryption, no ACLs: for local experiments only (SAFELOOP_KAFKA_SECURITY=sasl_ssl "
                "secures it)",
                self._settings.kafka_version,
                self._settings.bootstrap_servers,
                time.monotonic() - started,
                pid,
            )
        return self.status()

    def stop(self) -> BrokerStatus:
        """SIGTERM for a clean shutdown, SIGKILL after `stop_timeout`; no-op if not running."""
        self._refuse_external("stop")
        with self._lifecycle_lock():
            return self._stop()

    def _stop(self) -> BrokerStatus:
        self._clear_stale_pid_file()
        pid = process.owned_pid(self.paths)
        if pid is None:
            log.info("Kafka broker was not running; nothing to stop")
            return self.status()
        log.info("stopping Kafka broker (pid %d)", pid)
        what = f"Kafka broker pid {pid}"
        if not daemon_process.terminate(pid, self._stop_timeout, what=what, logger=log):
            raise InfraError(f"{what} survived SIGKILL")
        self.paths.pid_file.unlink(missing_ok=True)
        return self.status()

    def status(self) -> BrokerStatus:
        """Whether the broker runs; for an external cluster, whether it answers."""
        settings = self._settings
        if not settings.uses_local_kafka:
            reachable = cluster_answers(
                settings.bootstrap_servers, timeout=5.0, security=security_config(settings)
            )
            return BrokerStatus(
                reachable, None, settings.bootstrap_servers, None, None, settings.kafka_security
            )
        pid = process.owned_pid(self.paths)
        version = process.running_version(pid) if pid is not None else None
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=settings.bootstrap_servers,
            version=version or settings.kafka_version,
            data_dir=self.paths.data,
            security=settings.kafka_security,
        )

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

    def _clear_stale_pid_file(self) -> None:
        """A pid file left by a crash, or whose pid now belongs to another program, is removed."""
        reason = process.stale_pid_reason(self.paths)
        if reason is None:
            return
        log.warning("removing stale pid file %s: %s", self.paths.pid_file, reason)
        self.paths.pid_file.unlink(missing_ok=True)

    def _check_ports_free(self) -> None:
        host = self._settings.kafka_host
        for port, what in (
            (self._settings.kafka_port, "Kafka broker"),
            (self._settings.kafka_controller_port, "Kafka controller"),
        ):
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

    def _write_config(self) -> None:
        for directory in (self.paths.data, self.paths.logs):
            directory.mkdir(parents=True, exist_ok=True)
        properties = broker_properties(self._settings, self.paths.data)
        if self._settings.kafka_secured:
            security = prepare_broker_security(self.paths.security, self._settings)
            properties.update(secured_properties(self._settings, security))
        # The secured configuration holds the admin's password: readable by its owner only.
        write_private(self.paths.server_properties, render_properties(properties))
        self.paths.log4j_config.write_text(log4j2_properties(self.paths.log_file))

    def _format_storage(self, java: str, libs: Path) -> None:
        """Write meta.properties and the bootstrap metadata once, with a fresh cluster id."""
        command = process.java_command(
            java,
            libs,
            self.paths,
            _STORAGE_TOOL,
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self.paths.server_properties),
        )
        settings = self._settings
        if settings.kafka_secured:
            # The admin exists from the first metadata record on; only its salted form is passed.
            admin = admin_settings(settings, self.paths.security)
            command += [
                "--add-scram",
                scram_format_argument(
                    settings.kafka_sasl_mechanism, ADMIN_USER, admin.kafka_password
                ),
            ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise StartupError(f"formatting Kafka storage in {self.paths.data} failed:\n{output}")
        self.paths.security.format_mode.write_text(f"{settings.kafka_security}\n")
        log.info("formatted Kafka storage in %s (%s)", self.paths.data, settings.kafka_security)

    def _launch(self, java: str, libs: Path) -> int:
        command = process.broker_command(java, libs, self.paths, self._settings.kafka_version)
        log.debug("launching %s", " ".join(command))
        pid = process.spawn_detached(command, self.paths.jvm_output)
        self.paths.pid_file.write_text(f"{pid}\n")
        return pid

    def _wait_until_ready(self, pid: int, log_offsets: tuple[int, int]) -> None:
        settings = self._settings
        # The secured broker answers its admin; whoever runs `start` may hold another role.
        probe = (
            security_config(admin_settings(settings, self.paths.security))
            if settings.kafka_secured
            else None
        )
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if not daemon_process.is_alive(pid):
                self.paths.pid_file.unlink(missing_ok=True)
                raise StartupError(
                    self._failure_report("the Kafka broker exited during startup", log_offsets)
                )
            # Probe the socket first so librdkafka does not log a refused connection per poll.
            if port_accepts_connections(settings.kafka_host, settings.kafka_port) and (
                cluster_answers(settings.bootstrap_servers, timeout=2.0, security=probe)
            ):
                return
            time.sleep(_POLL_S)
        daemon_process.kill(pid)
        self.paths.pid_file.unlink(missing_ok=True)
        raise StartupError(
            self._failure_report(
                f"the Kafka broker did not answer on {settings.bootstrap_servers} "
                f"within {self._start_timeout:.0f}s and was killed",
                log_offsets,
            )
        )

    def _failure_report(self, what: str, log_offsets: tuple[int, int]) -> str:
        server_log = daemon_process.tail(self.paths.log_file, _TAIL_LINES, offset=log_offsets[0])
        report = f"{what}; see {self.paths.log_file}. Last lines:\n{server_log}"
        jvm_output = daemon_process.tail(self.paths.jvm_output, _TAIL_LINES, offset=log_offsets[1])
        if jvm_output:
            report += f"\nJVM output ({self.paths.jvm_output}):\n{jvm_output}"
        return report


def _log_progress(message: str) -> None:
    log.info("%s", message)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
