"""The parameters of one HTTP request: transport options, settings, query parameters."""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from safeloop.infra.warehouse import exceptions
from safeloop.infra.warehouse.exceptions import ServerError

DEFAULT_SESSION_TIMEOUT = 60
MAX_SESSION_TIMEOUT = 3600

# Parameters the HTTP layer consumes itself; everything else (except param_*, credentials and
# external-table descriptors) is a ClickHouse setting for this query.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "quota_key",
        "buffer_size",
        "wait_end_of_query",
        "compress",
        "decompress",
        "client_protocol_version",
        "role",
        "user",
        "password",
        "stacktrace",
        "default_format",
    }
)
_EXTERNAL_SUFFIXES = ("_structure", "_types", "_format")


@dataclass(frozen=True)
class ExternalTable:
    """A table sent with the query as a multipart file (ClickHouse "external data")."""

    name: str
    data: bytes
    structure: str | None = None
    types: str | None = None
    format: str = "TabSeparated"

    def columns(self) -> str:
        """The column list for CREATE TABLE: the structure, or `_1 T1, _2 T2` from types."""
        if self.structure:
            return self.structure
        if self.types:
            names = [t.strip() for t in self.types.split(",") if t.strip()]
            return ", ".join(f"_{i} {t}" for i, t in enumerate(names, start=1))
        raise exceptions.server_error(
            exceptions.BAD_ARGUMENTS,
            f"Neither structure nor types have not been provided for external table {self.name}. "
            f"Use fields {self.name}_structure or {self.name}_types to do so",
        )


@dataclass(frozen=True)
class RequestParams:
    """Everything a request says besides its body."""

    query: str = ""
    database: str | None = None
    session_id: str | None = None
    session_timeout: int = DEFAULT_SESSION_TIMEOUT
    session_check: bool = False
    query_id: str | None = None
    default_format: str | None = None
    wait_end_of_query: bool = False
    native_compression: bool = False  # compress/decompress=1: ClickHouse's own block format
    # The client's protocol revision: how Native output is laid out for it (native.py).
    client_protocol_version: int = 0
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    settings: dict[str, str] = field(default_factory=dict)
    query_params: dict[str, str] = field(default_factory=dict)
    external: tuple[ExternalTable, ...] = ()

    def setting(self, name: str) -> str | None:
        return self.settings.get(name)


def parse_params(
    pairs: Iterable[tuple[str, str]],
    files: Iterable[tuple[str, bytes]] = (),
) -> RequestParams:
    """Sort URL/form parameters into transport options, settings and `param_*` values.

    `files` are multipart file parts `(field name, content)`; `<name>_structure`, `_types` and
    `_format` describe them. The first occurrence of a repeated parameter wins, as in ClickHouse.
    """
    values: dict[str, str] = {}
    for key, value in pairs:
        values.setdefault(key, value)
    file_list = list(files)
    external_keys = _external_keys({name for name, _ in file_list})
    settings = {
        key: value
        for key, value in values.items()
        if key not in TRANSPORT_PARAMS and not key.startswith("param_") and key not in external_keys
    }
    return RequestParams(
        query=values.get("query", ""),
        database=values.get("database") or None,
        session_id=values.get("session_id") or None,
        session_timeout=_session_timeout(values.get("session_timeout")),
        session_check=_flag(values.get("session_check")),
        query_id=values.get("query_id") or None,
        default_format=values.get("default_format") or None,
        wait_end_of_query=_flag(values.get("wait_end_of_query")),
        native_compression=_flag(values.get("compress")) or _flag(values.get("decompress")),
        client_protocol_version=_revision(values.get("client_protocol_version")),
        user=values.get("user"),
        password=values.get("password"),
        settings=settings,
        query_params={k[6:]: v for k, v in values.items() if k.startswith("param_")},
        external=tuple(
            ExternalTable(
                name=name,
                data=data,
                structure=values.get(f"{name}_structure"),
                types=values.get(f"{name}_types"),
                format=values.get(f"{name}_format") or "TabSeparated",
            )
            for name, data in file_list
        ),
    )


def _revision(raw: str | None) -> int:
    # As the server does: a revision that is not a number is none at all.
    return int(raw) if raw is not None and raw.strip().isdigit() else 0


def _external_keys(names: Set[str]) -> set[str]:
    return {f"{name}{suffix}" for name in names for suffix in _EXTERNAL_SUFFIXES}


def _flag(raw: str | None) -> bool:
    return raw is not None and raw.strip().lower() in {"1", "true", "yes", "on"}


def _session_timeout(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_SESSION_TIMEOUT
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0 or value > MAX_SESSION_TIMEOUT:
        raise _invalid_timeout(raw)
    return value


def _invalid_timeout(raw: str) -> ServerError:
    return exceptions.server_error(
        exceptions.INVALID_SESSION_TIMEOUT,
        f"Invalid session timeout: '{raw}', max session timeout is {MAX_SESSION_TIMEOUT} seconds",
    )
