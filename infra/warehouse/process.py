"""`safeloop warehouse start|stop|status`: the endpoint as a detached daemon with a pid file."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from safeloop.infra import daemon_process
from safeloop.infra.exceptions import PortInUseError, StartupError
from safeloop.infra.portcheck import check_port_free
from safeloop.infra.settings import Settings
from safeloop.infra.warehouse.auth import check_bind_auth
from safeloop.infra.warehouse.daemon import EXIT_PORT_IN_USE, PASSWORD_ENV, USER_ENV
from safeloop.infra.warehouse.engine import data_dir_lock
from safeloop.infra.warehouse.server import WHAT, warehouse_data_dir

log = logging.getLogger(__name__)

_POLL = 0.1


@dataclass(frozen=True)
class WarehouseStatus:
    """Whether the daemon runs, and where to find it, its data and its log."""

    running: bool
    url: str
    pid: int | None
    data_dir: Path
    log_file: Path
    pid_file: Path
    stale_pid_file: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "url": self.url,
            "pid": self.pid,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
            "pid_file": str(self.pid_file),
            "stale_pid_file": self.stale_pid_file,
        }


class WarehouseProcess:
    """Start, stop and inspect the endpoint daemon described by `settings`."""

    def __init__(self, settings: Settings, startup_timeout: float = 60.0) -> None:
        self.settings = settings
        self.startup_timeout = startup_timeout
        state = settings.state_dir.resolve()
        self.data_dir = warehouse_data_dir(settings)
        self.pid_file = state / "warehouse.pid"
        self.log_file = state / "warehouse.log"
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the daemon listens, per the settings."""
        host = self.settings.warehouse_host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.settings.warehouse_port}"

    def status(self) -> WarehouseStatus:
        """Read the pid file; a pid file whose process is gone is reported as stale."""
        record = self._read_pid_file()
        if record is None:
            return self._status(False, self.url, None)
        pid, url = record
        if self._alive(pid):
            return self._status(True, url, pid)
        return self._status(False, url, pid, stale=True)

    def start(self) -> WarehouseStatus:
        """Start the daemon unless it runs; return once it answers /ping."""
        current = self.status()
        if current.running:
            log.info("%s already runs at %s (pid %s)", WHAT, current.url, current.pid)
            return current
        if current.stale_pid_file:
            log.warning("removing stale pid file %s (pid %s is gone)", self.pid_file, current.pid)
            self.pid_file.unlink(missing_ok=True)
        settings = self.settings
        check_bind_auth(
            settings.warehouse_host, settings.clickhouse_user, settings.clickhouse_password
        )
        check_port_free(settings.warehouse_host, settings.warehouse_port, WHAT)
        self._child = self._spawn()
        return self._wait_ready(self._child)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the daemon and wait for it to exit (SIGKILL after `timeout`); False if idle."""
        current = self.status()
        if not current.running or current.pid is None:
            if current.stale_pid_file:
                self.pid_file.unlink(missing_ok=True)
            return False
        pid = current.pid
        what = f"{WHAT} (pid {pid})"
        daemon_process.terminate(pid, timeout, what=what, logger=log, wait=self._wait_exit)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _spawn(self) -> subprocess.Popen[bytes]:
        settings = self.settings
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env[USER_ENV] = settings.clickhouse_user
        env[PASSWORD_ENV] = settings.clickhouse_password.value
        command = [
            sys.executable,
            "-m",
            "safeloop.infra.warehouse",
            "--data-dir",
            str(self.data_dir.resolve()),
            "--host",
            settings.warehouse_host,
            "--port",
            str(settings.warehouse_port),
            "--pid-file",
            str(self.pid_file.resolve()),
            "--log-level",
            settings.log_level,
        ]
        with self.log_file.open("ab") as log_out:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        log.info("started %s as pid %d, log in %s", WHAT, child.pid, self.log_file)
        return child

    def _wait_ready(self, child: subprocess.Popen[bytes]) -> WarehouseStatus:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = child.poll()
            if code is not None:
                if code == EXIT_PORT_IN_USE:
                    raise PortInUseError(
                        self.settings.warehouse_host, self.settings.warehouse_port, WHAT
                    )
                raise StartupError(
                    f"{WHAT} exited with code {code} while starting; see {self.log_file}:\n"
                    + self._log_tail()
                )
            record = self._read_pid_file()
            if record is not None and record[0] == child.pid and _ping(record[1]):
                return self._status(True, record[1], child.pid)
            time.sleep(_POLL)
        child.kill()
        child.wait()
        raise StartupError(
            f"{WHAT} did not answer /ping within {self.startup_timeout:.0f}s; "
            f"see {self.log_file}:\n" + self._log_tail()
        )

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._child is not None and self._child.pid == pid:
            try:
                self._child.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return daemon_process.wait_gone(pid, timeout)

    def _log_tail(self) -> str:
        return daemon_process.tail(self.log_file, 20, missing="(no log)")

    def _alive(self, pid: int) -> bool:
        """The daemon `pid` runs: it holds the data directory's lock (so a recycled pid or a
        process killed without cleanup does not count)."""
        return data_dir_lock(self.data_dir).holder() == pid

    def _read_pid_file(self) -> tuple[int, str] | None:
        try:
            record = json.loads(self.pid_file.read_text())
            return int(record["pid"]), str(record["url"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable pid file %s", self.pid_file)
            return None

    def _status(
        self, running: bool, url: str, pid: int | None, stale: bool = False
    ) -> WarehouseStatus:
        return WarehouseStatus(
            running=running,
            url=url,
            pid=pid,
            data_dir=self.data_dir,
            log_file=self.log_file,
            pid_file=self.pid_file,
            stale_pid_file=stale,
        )


# The daemon is local: an http_proxy from the environment must not get in the way.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _ping(url: str) -> bool:
    try:
        with _DIRECT.open(f"{url}/ping", timeout=1.0) as response:
            return bool(response.read() == b"Ok.\n")
    except (urllib.error.URLError, OSError):
        return False
