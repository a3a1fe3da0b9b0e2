"""`LocalStack`: the demo's services as child processes, health-waited, stopped in reverse.

Each service runs as `python -m safeloop.services.cli.main ...` in its own session (so a Ctrl-C
in the terminal reaches the demo, which stops the children in order) with its output in
`<log_dir>/<name>.log`. Stopping sends SIGTERM, waits, then SIGKILLs what is left.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from safeloop.services.demo.exceptions import StackError

logger = logging.getLogger(__name__)

CLI = (sys.executable, "-m", "safeloop.services.cli.main")
STOP_GRACE_S = 20.0
_TAIL_LINES = 15
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Probe = Callable[[], bool]


class Stoppable(Protocol):
    name: str

    def stop(self) -> None: ...


@dataclass
class ServiceSpec:
    name: str
    args: Sequence[str]
    ready: Probe
    timeout_s: float = 90.0
    # Over the stack's environment: who this service is to Kafka (its role's client file).
    env: Mapping[str, str] = field(default_factory=dict)


class ChildService:
    """One running child process and its log file."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if not self.alive:
            logger.info("%s already exited with %s", self.name, self.process.returncode)
            return
        logger.info("stopping %s (pid %s)", self.name, self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM for %ss; killing it", self.name, STOP_GRACE_S)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class CallbackService:
    """A service another module manages (the Kafka broker runner): stopped through a callback."""

    def __init__(self, name: str, stop: Callable[[], object]) -> None:
        self.name = name
        self._stop = stop

    def stop(self) -> None:
        logger.info("stopping %s", self.name)
        self._stop()


class LocalStack:
    """Starts services in order and stops all of them, newest first, whatever happens."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.services: list[Stoppable] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def adopt(self, name: str, stop: Callable[[], object]) -> None:
        """Register a service started elsewhere so that `stop` stops it in turn."""
        self.services.append(CallbackService(name, stop))

    def start(self, spec: ServiceSpec) -> ChildService:
        log_path = self.log_dir / f"{spec.name}.log"
        with log_path.open("ab") as log_file:
            process = self._spawn(spec.args, log_file, spec.env)
        child = ChildService(spec.name, process, log_path)
        self.services.append(child)
        deadline = time.monotonic() + spec.timeout_s
        while not spec.ready():
            if not child.alive:
                raise StackError(
                    f"{spec.name} exited with {process.returncode} while starting; see "
                    f"{log_path}:\n{tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{spec.name} not ready after {spec.timeout_s:g}s; see {log_path}:\n"
                    f"{tail(log_path)}"
                )
            time.sleep(0.25)
        logger.info("%s ready (pid %s, log %s)", spec.name, process.pid, log_path)
        return child

    def run(
        self,
        name: str,
        args: Sequence[str],
        timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
        ok_codes: Collection[int] = (0,),
    ) -> str:
        """Run one setup command to completion; its stdout is returned, stderr goes to its log.
        An exit code outside `ok_codes` raises `StackError`."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            done = subprocess.run(
                [*CLI, *args],
                env={**self.env, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=log_file,
                timeout=timeout_s,
                check=False,
            )
        output = done.stdout.decode(errors="replace")
        if done.returncode not in ok_codes:
            raise StackError(
                f"`safeloop {' '.join(args)}` failed with {done.returncode}: {output.strip()}\n"
                f"see {log_path}:\n{tail(log_path)}"
            )
        return output

    def check_alive(self) -> None:
        """Raise `StackError` naming the first child that exited on its own, with its log."""
        for service in self.services:
            if isinstance(service, ChildService) and not service.alive:
                raise StackError(
                    f"{service.name} exited with {service.process.returncode}; see "
                    f"{service.log_path}:\n{tail(service.log_path)}"
                )

    def stop(self) -> None:
        """Stop every service, newest first; one failing to stop does not spare the others.

        A second Ctrl-C (or a hang-up) while stopping is ignored: it would leave the older
        services running, and SIGKILL follows a stuck one anyway.
        """
        with _signals_ignored():
            while self.services:
                service = self.services.pop()
                try:
                    service.stop()
                except Exception:
                    logger.exception("stopping %s failed", service.name)

    def _spawn(
        self, args: Sequence[str], log_file: IO[bytes], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*CLI, *args],
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def http_ok(url: str) -> Probe:
    """A probe: does `url` answer 200 within a second."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    return probe


def log_says(path: Path, text: str) -> Probe:
    """A probe: has the service written `text` to its log."""

    def probe() -> bool:
        try:
            return text in path.read_text(errors="replace")
        except OSError:
            return False

    return probe


def tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
