"""The chDB engine behind the endpoint: one per process, many independent connections."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chdb

from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.warehouse import exceptions
from safeloop.infra.warehouse.lock import FileLock
from safeloop.infra.warehouse.results import Inserter, ResultStream, Stats, translate

log = logging.getLogger(__name__)

# chDB ships no annotations for connect(); its connections are used through EngineConnection.
_chdb_connect: Callable[[str], Any] = chdb.connect
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EngineInfo:
    """Facts the HTTP front reports in headers or needs for defaults."""

    version: str
    timezone: str
    http_compression: bool
    zlib_level: int


def quote_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def data_dir_lock(data_dir: Path) -> FileLock:
    """The lock a running endpoint holds on its data directory (`<data_dir>.lock`)."""
    return FileLock(data_dir.parent / f"{data_dir.name}.lock")


class Engine:
    """Owns the chDB data directory: a lock, and an anchor connection that keeps it open."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = data_dir_lock(data_dir)
        self._anchor: Any = None
        self._info: EngineInfo | None = None

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            raise WarehouseError("the warehouse engine is not open")
        return self._info

    def open(self) -> EngineInfo:
        """Lock the data directory and start chDB on it; `WarehouseError` if that fails."""
        if "?" in str(self.data_dir):
            raise WarehouseError(f"the warehouse directory {self.data_dir} may not contain '?'")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire(f"the warehouse directory {self.data_dir}")
        try:
            self._anchor = _chdb_connect(str(self.data_dir))
            row = self._anchor.query(
                "SELECT version(), timezone(), getSetting('enable_http_compression'), "
                "getSetting('http_zlib_compression_level')",
                "JSONCompactEachRow",
            )
            version, timezone, compression, level = json.loads(row.bytes())
        except Exception as exc:
            self._lock.release()
            raise WarehouseError(
                f"chDB could not open {self.data_dir}: {translate(exc).text}"
            ) from exc
        self._info = EngineInfo(str(version), str(timezone), bool(compression), int(level))
        log.info("chDB %s opened %s", version, self.data_dir)
        return self._info

    def connect(self) -> EngineConnection:
        """A new connection with its own settings, current database and temporary tables."""
        if self._anchor is None:
            raise WarehouseError("the warehouse engine is not open")
        try:
            return EngineConnection(_chdb_connect(str(self.data_dir)))
        except Exception as exc:
            raise translate(exc) from exc

    def close(self) -> None:
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None
            log.info("chDB closed %s", self.data_dir)
        self._lock.release()


class EngineConnection:
    """One chDB connection; used by one request (or one session) at a time."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def run(
        self, sql: bytes | str, fmt: str, params: Mapping[str, str] | None = None
    ) -> tuple[bytes, Stats]:
        """Execute a statement and return its whole output."""
        try:
            result = self._conn.query(sql, fmt, params=dict(params or {}))
        except Exception as exc:
            raise translate(exc) from exc
        stats = Stats()
        stats.add_result(result)
        return result.bytes() or b"", stats

    def stream(
        self, sql: bytes | str, fmt: str, params: Mapping[str, str] | None = None
    ) -> ResultStream:
        """Execute a query whose output is pulled block by block."""
        try:
            return ResultStream(self._conn.send_query(sql, fmt, params=dict(params or {})))
        except Exception as exc:
            raise translate(exc) from exc

    def insert(self, statement: str, fmt: str) -> Inserter:
        """Start an INSERT fed with data in `fmt`, pushed piece by piece."""
        try:
            return Inserter(self._conn.send_insert(statement, fmt))
        except Exception as exc:
            raise translate(exc) from exc

    def apply_settings(self, settings: Mapping[str, str]) -> None:
        """SET every setting on this connection, in one statement."""
        if settings:
            assignments = ", ".join(
                f"{_setting_name(k)} = {quote_string(v)}" for k, v in settings.items()
            )
            self.run(f"SET {assignments}", "TabSeparated")

    def snapshot_settings(self, names: list[str]) -> dict[str, str]:
        """Current values of settings, for `restore_settings` (getSetting: far cheaper than
        reading system.settings)."""
        if not names:
            return {}
        # Names pass _setting_name and are quoted as literals: nothing else reaches the SQL.
        columns = ", ".join(
            f"toString(getSetting({quote_string(_setting_name(n))}))" for n in names
        )
        data, _ = self.run(f"SELECT {columns}", "JSONCompactEachRow")
        return dict(zip(names, json.loads(data), strict=True))

    def restore_settings(self, snapshot: Mapping[str, str]) -> None:
        """Put settings back to the values `snapshot_settings` read."""
        self.apply_settings(snapshot)

    def use(self, database: str) -> None:
        self.run(f"USE {quote_identifier(database)}", "TabSeparated")

    def current_database(self) -> str:
        data, _ = self.run("SELECT currentDatabase()", "TabSeparatedRaw")
        return data.decode().rstrip("\n")

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:
            log.debug("closing a chDB connection failed", exc_info=True)


def _setting_name(name: str) -> str:
    if not _SETTING_NAME.match(name):
        raise exceptions.server_error(exceptions.UNKNOWN_SETTING, f"Unknown setting '{name}'")
    return name
