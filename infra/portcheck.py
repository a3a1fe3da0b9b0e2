"""TCP port probes: is a port free to bind, is something listening on it, pick a free one."""

from __future__ import annotations

import errno
import socket

from safeloop.infra.exceptions import PortInUseError


def port_is_free(host: str, port: int) -> bool:
    """True when nothing holds `host:port`, so a server could bind it now."""
    try:
        _try_bind(host, port)
    except OSError:
        return False
    return True


def check_port_free(host: str, port: int, what: str) -> None:
    """`PortInUseError` naming `what` if `host:port` is taken; other bind errors propagate.

    Port 0 (any free port) always passes."""
    if port == 0:
        return
    try:
        _try_bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port, what) from exc
        raise


def _try_bind(host: str, port: int) -> None:
    """Bind `host:port` (IPv6 if `host` has a colon) as a server would, then let it go."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR mirrors how servers bind, so sockets in TIME_WAIT do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def port_accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to `host:port` succeeds within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port
