"""Who may query the endpoint: nobody needs a password on loopback, everybody does elsewhere."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.settings import Secret
from safeloop.infra.warehouse import exceptions
from safeloop.infra.warehouse.exceptions import ServerError

NO_PASSWORD = Secret("")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_auth(host: str, user: str, password: Secret) -> None:
    """Refuse to serve beyond loopback without a user and password to check."""
    if not is_loopback(host) and not (user and password):
        raise WarehouseError(
            f"the warehouse endpoint would listen on {host}, reachable from other machines: "
            "set CLICKHOUSE_USER and CLICKHOUSE_PASSWORD so that it can check who connects, "
            "or bind it to 127.0.0.1 (SAFELOOP_WAREHOUSE_HOST)"
        )


@dataclass(frozen=True)
class Credentials:
    """The one account the endpoint accepts; checked only when a password is configured."""

    user: str = "default"
    password: Secret = NO_PASSWORD

    @property
    def required(self) -> bool:
        return bool(self.password)

    def check(
        self, headers: Mapping[str, str], user: str | None, password: str | None
    ) -> ServerError | None:
        """None if the request may proceed, else the AUTHENTICATION_FAILED error to answer.

        Credentials come from X-ClickHouse-User/Key headers, HTTP basic auth, or the
        `user`/`password` URL parameters, as the ClickHouse server accepts them. Header
        names in `headers` are lower-case.
        """
        if not self.required:
            return None
        given_user, given_password = _presented(headers, user, password)
        user_ok = hmac.compare_digest(given_user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(given_password.encode(), self.password.value.encode())
        if user_ok and password_ok:
            return None
        return exceptions.server_error(
            exceptions.AUTHENTICATION_FAILED,
            f"{given_user}: Authentication failed: password is incorrect, "
            "or there is no user with such name",
        )


def _presented(
    headers: Mapping[str, str], user: str | None, password: str | None
) -> tuple[str, str]:
    header_user = headers.get("x-clickhouse-user")
    if header_user is not None:
        return header_user, headers.get("x-clickhouse-key", "")
    basic = _basic_auth(headers.get("authorization", ""))
    if basic is not None:
        return basic
    return user or "default", password or ""


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password
