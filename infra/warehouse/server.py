"""The endpoint as an object: bind, open chDB, serve on threads, stop gracefully."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from safeloop.infra.exceptions import PortInUseError
from safeloop.infra.settings import Secret, Settings
from safeloop.infra.warehouse.auth import NO_PASSWORD, Credentials, check_bind_auth
from safeloop.infra.warehouse.engine import Engine
from safeloop.infra.warehouse.executor import Executor
from safeloop.infra.warehouse.handler import Front, Handler
from safeloop.infra.warehouse.sessions import SessionStore

log = logging.getLogger(__name__)

WHAT = "the warehouse endpoint"


@dataclass(frozen=True)
class ServerConfig:
    """Where the endpoint keeps its data, where it listens, and whom it lets in."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8123
    user: str = "default"
    password: Secret = NO_PASSWORD

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerConfig:
        return cls(
            data_dir=warehouse_data_dir(settings),
            host=settings.warehouse_host,
            port=settings.warehouse_port,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password,
        )


def warehouse_data_dir(settings: Settings) -> Path:
    """The chDB data directory: `<state_dir>/warehouse`."""
    return settings.state_dir.resolve() / "warehouse"


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], front: Front) -> None:
        self.front = front
        self._active = 0
        self._idle = threading.Condition()
        self._sockets: set[socket.socket] = set()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)

    def request_started(self) -> None:
        with self._idle:
            self._active += 1

    def request_finished(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle:
            self._sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._idle:
            self._sockets.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Wake handlers idling on keep-alive connections so that they exit."""
        with self._idle:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class WarehouseServer:
    """The embedded ClickHouse HTTP endpoint, in this process.

    `start()` serves on a background thread (tests); `serve_forever()` blocks (the daemon).
    Only one may run per process: chDB hosts a single data directory per process.
    """

    def __init__(self, config: ServerConfig, display_name: str | None = None) -> None:
        check_bind_auth(config.host, config.user, config.password)
        self.config = config
        self._display_name = display_name or socket.gethostname()
        self._engine = Engine(config.data_dir)
        self._sessions = SessionStore(self._engine)
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._http is None:
            return self.config.port
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def open(self) -> None:
        """Bind the port and open chDB; `PortInUseError` or `WarehouseError` on failure."""
        info = self._engine.open()
        front = Front(
            executor=Executor(self._engine, self._sessions),
            info=info,
            credentials=Credentials(self.config.user, self.config.password),
            display_name=self._display_name,
        )
        try:
            self._http = _HttpServer((self.config.host, self.config.port), front)
        except OSError as exc:
            self._engine.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(self.config.host, self.config.port, WHAT) from exc
            raise
        log.info("%s listening on %s (data in %s)", WHAT, self.url, self.config.data_dir)

    def start(self) -> WarehouseServer:
        """Open and serve on a background thread; returns self."""
        self.open()
        assert self._http is not None
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="warehouse-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Open (unless opened) and serve on this thread until `stop()` is called elsewhere."""
        if self._http is None:
            self.open()
        assert self._http is not None
        self._http.serve_forever()

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let queries in flight finish (up to `grace` s), close chDB."""
        http = self._http
        if http is None:
            return
        self._http = None
        http.shutdown()
        if not http.wait_idle(grace):
            log.warning("%s: queries still running after %.0fs; closing anyway", WHAT, grace)
        http.drop_connections()
        http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=grace)
            self._thread = None
        self._sessions.close_all()
        # Let handlers woken by drop_connections leave chDB before the engine goes away.
        time.sleep(0.05)
        self._engine.close()
        log.info("%s stopped", WHAT)

    def __enter__(self) -> WarehouseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
