"""Running the endpoint as a process of its own: pid file, signals, graceful stop."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from safeloop.infra.exceptions import InfraError, PortInUseError
from safeloop.infra.process_logging import configure_logging
from safeloop.infra.settings import Secret
from safeloop.infra.warehouse.server import ServerConfig, WarehouseServer

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_PORT_IN_USE = 3
# Credentials reach the daemon through its environment, never its command line (visible in ps).
USER_ENV = "CLICKHOUSE_USER"
PASSWORD_ENV = "CLICKHOUSE_PASSWORD"  # noqa: S105 - the variable's name, not a password


def write_pid_file(path: Path, url: str) -> None:
    """Record this process and its URL, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
    tmp.replace(path)


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it is still ours."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def run(
    config: ServerConfig, pid_file: Path, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = WarehouseServer(config).start()
    try:
        write_pid_file(pid_file, server.url)
        if on_ready is not None:
            on_ready(server.url)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        remove_pid_file(pid_file)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m safeloop.infra.warehouse`, what `safeloop warehouse start` spawns."""
    parser = argparse.ArgumentParser(prog="python -m safeloop.infra.warehouse")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    config = ServerConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        user=os.environ.get(USER_ENV, "default") or "default",
        password=Secret(os.environ.get(PASSWORD_ENV, "")),
    )
    try:
        run(config, args.pid_file)
    except PortInUseError as exc:
        log.error("%s", exc)
        return EXIT_PORT_IN_USE
    except InfraError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    return 0
