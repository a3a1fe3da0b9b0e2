"""Runs one request on chDB: connection or session, settings, external data, then the statement."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

from safeloop.infra.warehouse import exceptions, framing, native, sql
from safeloop.infra.warehouse.body import QueryStream
from safeloop.infra.warehouse.engine import Engine, EngineConnection, quote_identifier
from safeloop.infra.warehouse.exceptions import NativeLayoutError
from safeloop.infra.warehouse.native import NativeRewriter
from safeloop.infra.warehouse.params import RequestParams
from safeloop.infra.warehouse.reply import Reply
from safeloop.infra.warehouse.results import Stats
from safeloop.infra.warehouse.sessions import SessionStore
from safeloop.infra.warehouse.statement import MAX_QUERY_SIZE, InsertPlan, QueryPlan, read_statement

log = logging.getLogger(__name__)

SPOOL_MEMORY = 32 * 1024 * 1024  # a buffered result larger than this goes to a temp file
_SPOOL_READ = 1 << 20


@dataclass(frozen=True)
class Request:
    """One parsed HTTP request, its body not yet read."""

    params: RequestParams
    stream: QueryStream
    query_id: str
    method: str = "POST"


class Executor:
    """Turns requests into replies; thread-safe, one chDB connection per request or session."""

    def __init__(
        self, engine: Engine, sessions: SessionStore, max_query_size: int = MAX_QUERY_SIZE
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._max_query_size = max_query_size

    def execute(self, request: Request) -> Reply:
        """Run the request; errors before any output raise `ServerError`."""
        params = request.params
        plan = read_statement(request.stream, self._max_query_size)
        read_only = isinstance(plan, QueryPlan) and plan.read_only
        if request.method == "GET" and not read_only:
            raise exceptions.server_error(
                exceptions.READONLY,
                "Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
                "readonly. You should use method POST for modifying queries",
            )
        tz = params.setting("session_timezone") or self._engine.info.timezone
        reply = Reply(query_id=request.query_id, timezone=tz)
        with ExitStack() as stack:
            conn = self._connection(params, plan, stack)
            if isinstance(plan, InsertPlan):
                reply.summary = _insert(conn, plan, request.stream).summary()
            else:
                self._run_query(conn, plan, params, reply, stack)
            reply.resources = stack.pop_all()
        return reply

    def _connection(
        self, params: RequestParams, plan: InsertPlan | QueryPlan, stack: ExitStack
    ) -> EngineConnection:
        """A prepared connection; cleanups (restore, drop, close) are pushed on `stack`."""
        keyword = plan.keyword if isinstance(plan, QueryPlan) else "INSERT"
        if params.session_id is None:
            conn = self._engine.connect()
            stack.callback(conn.close)
            conn.apply_settings(params.settings)
            if params.database:
                conn.use(params.database)
        else:
            conn = stack.enter_context(
                self._sessions.acquire(
                    params.session_id, params.session_timeout, params.session_check
                )
            )
            _prepare_session(conn, params, plan, keyword, stack)
        for table in params.external:
            if params.session_id is not None:
                drop = f"DROP TEMPORARY TABLE IF EXISTS {quote_identifier(table.name)}"
                stack.callback(_quietly, conn.run, drop, "TabSeparated")
            _load_external(conn, table.name, table.columns(), table.format, table.data)
        return conn

    def _run_query(
        self,
        conn: EngineConnection,
        plan: QueryPlan,
        params: RequestParams,
        reply: Reply,
        stack: ExitStack,
    ) -> None:
        default_format = params.default_format or params.setting("default_format") or "TabSeparated"
        fmt = (sql.output_format(plan.text) if plan.has_result else None) or default_format
        framer = framing.framer_for(fmt) if plan.streamable else None
        if framer is None:
            rewrite = self._native_rewriter(conn, plan, params, fmt)
            data, stats = conn.run(plan.text, default_format, params.query_params)
            if rewrite is not None and data:
                data = _native(rewrite, data)
            reply.summary = stats.summary()
            reply.format = fmt if plan.has_result or data else None
            reply.body = iter((data,) if data else ())
            return
        reply.format = fmt
        rewrite = self._native_rewriter(conn, plan, params, fmt)
        stream = conn.stream(plan.text, default_format, params.query_params)
        stack.callback(stream.close)
        blocks = _framed(stream, framer)
        if rewrite is not None:
            blocks = _rewritten(blocks, rewrite)
        if params.wait_end_of_query:
            body, empty = _spool(blocks, stack)
        else:
            # Pull the first block now: a query failing at once still gets a proper HTTP error.
            first = next(blocks, None)
            body, empty = _chain(first, blocks), first is None
        if empty and framing.has_header(fmt):
            # No rows: chDB streamed nothing, but these formats still owe the client a header.
            data, _ = conn.run(plan.text, default_format, params.query_params)
            body = iter((data,))
        reply.body = body
        reply.summary = stream.stats.summary()

    def _native_rewriter(
        self, conn: EngineConnection, plan: QueryPlan, params: RequestParams, fmt: str
    ) -> NativeRewriter | None:
        """For Native output to a client that declared its revision: how to rewrite it."""
        if fmt.lower() != "native" or not params.client_protocol_version or not plan.has_result:
            return None
        types: list[str] = []
        if params.client_protocol_version >= native.WITH_TIME_ZONE and plan.streamable:
            types = _result_types(conn, plan, params)
        return NativeRewriter(params.client_protocol_version, types)


def _result_types(conn: EngineConnection, plan: QueryPlan, params: RequestParams) -> list[str]:
    """The query's column types as the server knows them (chDB's Native drops DateTime zones)."""
    describe = b"DESCRIBE (" + sql.without_format(plan.text) + b"\n)"
    try:
        data, _ = conn.run(describe, "JSONCompactEachRow", params.query_params)
    except exceptions.ServerError:
        # The query itself will say what is wrong with it; the types only refine the answer.
        log.debug("cannot describe the result of a query; Native types as chDB writes them")
        return []
    return [str(json.loads(line)[1]) for line in data.splitlines() if line.strip()]


def _native(rewrite: NativeRewriter, data: bytes) -> bytes:
    try:
        return rewrite.rewrite(data)
    except NativeLayoutError as exc:
        raise exceptions.server_error(
            exceptions.NOT_IMPLEMENTED,
            f"the embedded endpoint cannot lay out this Native result for client_protocol_version "
            f"{rewrite.revision}: {exc}; query without client_protocol_version or in another "
            "format",
        ) from exc


def _rewritten(blocks: Iterator[bytes], rewrite: NativeRewriter) -> Iterator[bytes]:
    for block in blocks:
        yield _native(rewrite, block)


def _framed(blocks: Iterator[bytes], framer: framing.Framer) -> Iterator[bytes]:
    first = True
    for block in blocks:
        if not block:
            continue
        data = framer(block, first)
        first = False
        if data:
            yield data


def _chain(first: bytes | None, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first is None:
        return
    yield first
    yield from rest


def _spool(blocks: Iterator[bytes], stack: ExitStack) -> tuple[Iterator[bytes], bool]:
    """Run the query to its end first (`wait_end_of_query=1`); large results go to disk."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
    stack.callback(spool.close)
    size = 0
    for block in blocks:
        spool.write(block)
        size += len(block)
    spool.seek(0)
    return iter(lambda: spool.read(_SPOOL_READ), b""), size == 0


def _quietly(action: Callable[..., object], *args: object) -> None:
    """Run a cleanup step; a failure is logged, never raised over the query's own outcome."""
    try:
        action(*args)
    except Exception:
        log.warning("cleanup step %s failed", getattr(action, "__name__", action), exc_info=True)


def _prepare_session(
    conn: EngineConnection,
    params: RequestParams,
    plan: InsertPlan | QueryPlan,
    keyword: str,
    stack: ExitStack,
) -> None:
    """Apply request settings and database to a session, restoring them afterwards.

    As in ClickHouse, URL settings last for one query while `SET`/`USE` statements persist.
    """
    keep = (
        sql.assigned_settings(plan.text)
        if isinstance(plan, QueryPlan) and keyword == "SET"
        else set()
    )
    names = [name for name in params.settings if name.lower() not in keep]
    stack.callback(_quietly, conn.restore_settings, conn.snapshot_settings(names))
    conn.apply_settings(params.settings)
    if params.database:
        previous = conn.current_database()
        conn.use(params.database)
        if keyword != "USE":
            stack.callback(_quietly, conn.use, previous)


def _load_external(conn: EngineConnection, name: str, columns: str, fmt: str, data: bytes) -> None:
    """Create the temporary table an external-data part describes and fill it."""
    table = quote_identifier(name)
    conn.run(f"CREATE TEMPORARY TABLE {table} ({columns}) ENGINE = Memory", "TabSeparated")
    inserter = conn.insert(f"INSERT INTO {table}", fmt)
    try:
        inserter.append(data)
        inserter.finish()
    finally:
        inserter.cancel()


def _insert(conn: EngineConnection, plan: InsertPlan, stream: QueryStream) -> Stats:
    inserter = conn.insert(plan.statement, plan.format)
    try:
        for piece in stream.pieces():
            inserter.append(piece)
        return inserter.finish()
    finally:
        inserter.cancel()
