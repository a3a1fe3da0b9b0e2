"""The one way safeloop code gets a ClickHouse client: clickhouse-connect over HTTP."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver import Client
from clickhouse_connect.driver import options as driver_options
from clickhouse_connect.driver.exceptions import Error as ClickHouseError
from clickhouse_connect.driver.exceptions import OperationalError

from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.settings import Settings

UNKNOWN_DATABASE = 81  # ClickHouse's error code


def clickhouse_client(settings: Settings, database: str | None = None, **kw: Any) -> Client:
    """A client for `settings.clickhouse_endpoint` (a real server, or the embedded endpoint).

    `database` defaults to `settings.clickhouse_database`; "" means the server's default one.
    Keyword arguments go to `clickhouse_connect.get_client`. Unlike clickhouse-connect's default,
    no session id is generated, so one client can serve several threads (a session runs one
    query at a time); pass `session_id=...` where temporary tables or SET must persist.
    """
    _skip_pandas()
    endpoint = settings.clickhouse_endpoint
    url = urlsplit(endpoint)
    secure = url.scheme == "https"
    options: dict[str, Any] = {
        "interface": url.scheme,
        "host": url.hostname,
        "port": url.port or (8443 if secure else 8123),
        "username": settings.clickhouse_user,
        "password": settings.clickhouse_password.value,
        "database": settings.clickhouse_database if database is None else database or None,
        "autogenerate_session_id": False,
        "client_name": "safeloop",
    }
    if url.path and url.path != "/":
        options["proxy_path"] = url.path
    options.update(kw)
    try:
        return clickhouse_connect.get_client(**options)
    except ClickHouseError as exc:
        raise WarehouseError(
            f"cannot use ClickHouse at {endpoint}: {exc}{_hint(settings, exc)}"
        ) from exc


def _skip_pandas() -> None:
    """Tell clickhouse-connect that pandas is absent unless something already imported it.

    Its first insert imports pandas only to ask whether the data is a DataFrame (68 MB of RSS
    and 0.3-0.9 s of CPU in every process that inserts); safeloop passes rows and columns. A
    client's `query_df`/`insert_df` then say pandas is not installed.
    """
    if "pandas" not in sys.modules and "pd" not in vars(driver_options):
        driver_options.pd = None
        driver_options.pd_time_test = None


def _hint(settings: Settings, exc: ClickHouseError) -> str:
    """What the operator most likely has to do about a failed connect."""
    if getattr(exc, "code", None) == UNKNOWN_DATABASE:
        return ". Create it with `safeloop migrate`."
    if isinstance(exc, OperationalError) and settings.uses_embedded_clickhouse:
        return ". Is the endpoint running? Start it with `safeloop warehouse start`."
    return ""
