"""The HTTP side of `safeloop metrics run`: `GET /metrics`, `/healthz` and `/readyz`, on a daemon
thread.

The standard library's threading HTTP server is enough for a scrape every few seconds and a
container health check; it never touches the loop, only reads what the loop counts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from safeloop.infra.prometheus import CONTENT_TYPE, Registry
from safeloop.services.monitor.consumer import GroupMembership
from safeloop.services.monitor.exposition import metrics_registry
from safeloop.services.monitor.liveness import (
    DEFAULT_STALE_AFTER_S,
    Liveness,
    check_liveness,
    check_readiness,
)
from safeloop.services.monitor.service import MetricsService

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        registry: Registry,
        health: Callable[[], Liveness],
        ready: Callable[[], Liveness],
    ) -> None:
        self.registry = registry
        self.health = health
        self.ready = ready
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE, self.server.registry.render().encode())
        elif path in ("/healthz", "/readyz"):
            verdict = self.server.health() if path == "/healthz" else self.server.ready()
            status = HTTPStatus.OK if verdict.ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, JSON_TYPE, json.dumps(verdict.body()).encode())
        else:
            body = json.dumps({"error": f"no route {path}"}).encode()
            self._send(HTTPStatus.NOT_FOUND, JSON_TYPE, body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class MetricsEndpoint:
    """Serves `registry`, `health` and `ready` on `host:port` (port 0: any free port)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: Registry,
        health: Callable[[], Liveness],
        ready: Callable[[], Liveness] | None = None,
    ) -> None:
        self._server = _Server((host, port), registry, health, ready or health)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsEndpoint:
        self._thread.start()
        logger.info("metrics endpoint on %s (/metrics, /healthz, /readyz)", self.url)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


def serve_service(
    service: MetricsService,
    host: str,
    port: int,
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> MetricsEndpoint:
    """Start serving `service`'s metrics, liveness and readiness; OSError if `host:port` cannot
    be bound."""

    def consumers() -> dict[str, GroupMembership]:
        return {c.name: c.membership for c in (service.predictions, service.feedback)}

    def health() -> Liveness:
        return check_liveness(service.loop, consumers(), time.monotonic(), stale_after_s)

    def ready() -> Liveness:
        return check_readiness(service.loop, consumers(), time.monotonic(), stale_after_s)

    return MetricsEndpoint(host, port, metrics_registry(service), health, ready).start()
