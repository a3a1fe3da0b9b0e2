"""Runs dashboard queries read-only through one shared clickhouse-connect client."""

from __future__ import annotations

import threading
from typing import Any, Final

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.settings import Settings
from safeloop.services.dashboard.exceptions import QueryFailedError
from safeloop.services.dashboard.queries import Query

# readonly=1 makes the server refuse any write, whatever the credentials allow; the time limit
# keeps one slow panel from tying up a worker thread.
READ_ONLY_SETTINGS: Final[dict[str, Any]] = {"readonly": 1, "max_execution_time": 15}

Row = dict[str, Any]


class Reader:
    """Connects on first use (the app starts even if ClickHouse is down) and reconnects after
    a failed connect; the client is shared across threads (no session id)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client | None = None
        self._lock = threading.Lock()

    def _connected(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = clickhouse_client(self._settings)
            return self._client

    def rows(self, query: Query) -> list[Row]:
        """The query's rows as dicts keyed by column name."""
        try:
            client = self._connected()
            result = client.query(
                query.sql, parameters=dict(query.parameters), settings=READ_ONLY_SETTINGS
            )
        except (ClickHouseError, WarehouseError) as exc:
            raise QueryFailedError(f"{query.name}: {_first_line(str(exc))}") from exc
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _first_line(text: str) -> str:
    # ClickHouse errors carry stack traces and URLs; the first lines say what went wrong.
    return " ".join(text.strip().splitlines()[:2])[:500]
