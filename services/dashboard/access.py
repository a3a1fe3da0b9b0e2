"""Who may read the dashboard (anyone on loopback; beyond it, only with the dashboard password)
and who may act from it (only with the operator token)."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from safeloop.infra.settings import Secret
from safeloop.infra.warehouse.auth import is_loopback
from safeloop.services.dashboard.exceptions import DashboardBindError

# Orchestrators probe health without credentials; it tells nothing about the data.
OPEN_PATHS = frozenset({"/healthz"})
_CHALLENGE = [(b"www-authenticate", b'Basic realm="safeloop dashboard", charset="UTF-8"')]


def check_dashboard_bind(host: str, password: Secret) -> None:
    """Refuse to serve beyond loopback unless a password protects the dashboard."""
    if not is_loopback(host) and not password:
        raise DashboardBindError(
            f"the dashboard would listen on {host}, reachable from other machines: set "
            "SAFELOOP_DASHBOARD_PASSWORD (or SAFELOOP_DASHBOARD_PASSWORD_FILE) so that it asks "
            "who connects, or bind it to 127.0.0.1 (--host)"
        )


def credentials_match(header: str | None, user: str, password: Secret) -> bool:
    """True when an `Authorization: Basic` header carries `user` and `password`."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, _, given_password = decoded.partition(":")
    # Both compared in constant time, and both always compared.
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.value.encode())
    return user_ok and password_ok


def operator_token_matches(given: str | None, token: Secret) -> bool:
    """True when `given` is the configured operator token (never true without one)."""
    if not token or given is None:
        return False
    return hmac.compare_digest(given.strip().encode(), token.value.encode())


class BasicAuth:
    """ASGI middleware: HTTP Basic authentication on every path but `OPEN_PATHS`."""

    def __init__(self, app: ASGIApp, user: str, password: Secret) -> None:
        self._app = app
        self._user = user
        self._password = password

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        header = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"),
            None,
        )
        if credentials_match(header, self._user, self._password):
            await self._app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *_CHALLENGE],
            }
        )
        await send({"type": "http.response.body", "body": b"authentication required\n"})
