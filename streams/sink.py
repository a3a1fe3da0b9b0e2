"""ClickHouseSink: batched idempotent inserts with backoff; callbacks run after the insert."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from clickhouse_connect.driver import Client

from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.clickhouse.progress import read_marks, write_marks
from safeloop.infra.clickhouse.stored_rows import stored_identities
from safeloop.schemas.tables import Row, Table
from safeloop.streams.exactly_once import ReplayGuard, SourceKey, Span, add_span, unseen
from safeloop.streams.exceptions import SinkUnavailableError

log = logging.getLogger(__name__)


class BatchWriter(Protocol):
    """Writes one batch into one table; blocking (the sink calls it from a thread)."""

    def insert(self, table: Table[Any], rows: Sequence[Row], dedup_token: str) -> None: ...


class ProgressStore(Protocol):
    """Where the exactly-once marks live and what a table already holds; blocking."""

    def read_marks(self, partitions: Sequence[int]) -> dict[SourceKey, int]: ...

    def write_marks(self, marks: Mapping[SourceKey, int]) -> None: ...

    def stored(self, table: Table[Any], rows: Sequence[Row]) -> set[tuple[object, ...]]: ...


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """How the sink batches and retries."""

    max_rows: int = 20_000
    flush_interval_ms: int = 250
    initial_backoff_ms: int = 100
    max_backoff_ms: int = 10_000
    # None: retry until ClickHouse comes back (loudly: every failure is logged and counted).
    give_up_after_ms: int | None = None
    # While a flush runs, keep collecting up to this many rows before blocking the stream.
    max_buffered_rows: int = 100_000


@dataclass(slots=True)
class SinkStats:
    """Totals since start; observability reads them."""

    batches: int = 0
    rows: int = 0
    retries: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_flush_ms: float = 0.0
    flush_ms_total: float = 0.0
    # Exactly once: batches checked against ClickHouse, rows found there already (so not
    # inserted again), and writes of stream_progress marks.
    checked_batches: int = 0
    replayed_rows: int = 0
    progress_writes: int = 0


@dataclass(slots=True)
class _Batch:
    rows: dict[str, list[Row]] = field(default_factory=dict)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    started_ms: float | None = None
    size: int = 0
    # What the rows derive from (see exactly_once), and whether a replay re-emitted some.
    spans: dict[SourceKey, Span] = field(default_factory=dict)
    suspect: bool = False


class ClickHouseSink:
    """Collects rows per table and flushes them by size or time, one batch at a time, in order.

    A batch's insert deduplication token is a digest of the identities of its rows (the table
    registry's), so a retry of a batch ClickHouse already took is dropped; callbacks registered with
    `after_flush` run once every row added before them is in ClickHouse. With a `progress` store,
    replays are exact too (`exactly_once`): a flush first raises the marks of the sources its
    rows derive from, and a batch that may repeat stored rows inserts only the missing ones.
    """

    def __init__(
        self,
        writer: BatchWriter,
        tables: Iterable[Table[Any]],
        config: SinkConfig | None = None,
        *,
        executor: Executor | None = None,
        monotonic_ms: Callable[[], float] | None = None,
        barrier: Callable[[], None] | None = None,
        progress: ProgressStore | None = None,
        guard: ReplayGuard | None = None,
    ) -> None:
        # `barrier` (blocking, retried like an insert) must succeed before callbacks run:
        # e.g. flushing the Kafka producer of the feedback and dead-letter topics.
        self.barrier = barrier
        self.writer = writer
        self.tables = {table.name: table for table in tables}
        self.config = config or SinkConfig()
        self.stats = SinkStats()
        self._executor = executor or ThreadPoolExecutor(
            len(self.tables) + 1, thread_name_prefix="clickhouse-sink"
        )
        self._monotonic_ms = monotonic_ms or (lambda: time.monotonic() * 1000.0)
        self._batch = _Batch()
        self._inflight: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.progress = progress
        self.guard = guard or ReplayGuard()

    # -- collecting ----------------------------------------------------------------------

    def add(self, table: Table[Any], rows: Sequence[Row]) -> None:
        """Buffer `rows` (in `table.columns` order) for `table`."""
        if self.tables.get(table.name) is not table:
            raise KeyError(f"sink does not write table {table.name!r}")
        if not rows:
            return
        batch = self._batch
        if batch.started_ms is None:
            batch.started_ms = self._monotonic_ms()
        batch.rows.setdefault(table.name, []).extend(rows)
        batch.size += len(rows)

    def derived_from(
        self, source: SourceKey, first: int, last: int, *, suspect: bool = False
    ) -> None:
        """Rows added to this batch derive from coordinates `first`..`last` of `source`;
        `suspect`: some may repeat rows emitted (and maybe stored) before."""
        batch = self._batch
        add_span(batch.spans, source, first, last)
        batch.suspect = batch.suspect or suspect

    def mark_suspect(self) -> None:
        """Check this batch's rows against ClickHouse before inserting them."""
        self._batch.suspect = True

    async def recover(self, partitions: Sequence[int]) -> None:
        """Read back the marks of newly assigned `partitions` (before any of their input)."""
        progress = self.progress
        if progress is None or not partitions:
            return
        marks: dict[SourceKey, int] = {}

        def read() -> None:
            assert progress is not None
            marks.update(progress.read_marks(partitions))

        loop = asyncio.get_running_loop()
        await self._with_retry(loop, f"stream progress of {list(partitions)}", read)
        self.guard.recover(partitions, marks)
        if marks:
            log.info(
                "partitions %s: rows at or below %s are checked before insert", partitions, marks
            )

    def after_flush(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything added so far is in ClickHouse."""
        if self._batch.started_ms is None:
            self._batch.started_ms = self._monotonic_ms()
        self._batch.callbacks.append(callback)

    @property
    def buffered_rows(self) -> int:
        return self._batch.size

    @property
    def flushing(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    def due(self) -> bool:
        """Whether the current batch is full or old enough to flush."""
        batch = self._batch
        if batch.started_ms is None:
            return False
        if batch.size >= self.config.max_rows:
            return True
        return self._monotonic_ms() - batch.started_ms >= self.config.flush_interval_ms

    # -- flushing ------------------------------------------------------------------------

    async def maybe_flush(self) -> None:
        """Start a flush if due; block only while a flush runs and the buffer is full."""
        await self._raise_failed()
        if not self.due():
            return
        if self.flushing:
            if self._batch.size < self.config.max_buffered_rows:
                return
            # Backpressure: ClickHouse is slow or down, so stop reading and let lag grow.
            assert self._inflight is not None
            await asyncio.shield(self._inflight)
        self._start_flush()

    async def flush(self) -> None:
        """Flush everything buffered now and wait for it (and for any earlier flush)."""
        await self._raise_failed()
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        if self._batch.started_ms is not None:
            self._start_flush()
            assert self._inflight is not None
            await asyncio.shield(self._inflight)
        await self._raise_failed()

    async def close(self) -> None:
        """Flush what is buffered, then release the writer thread."""
        try:
            await self.flush()
        finally:
            self._executor.shutdown(wait=False)

    def _start_flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        self._inflight = asyncio.get_running_loop().create_task(self._write(batch))

    async def _raise_failed(self) -> None:
        task = self._inflight
        if task is not None and task.done() and task.exception() is not None:
            self._inflight = None
            raise task.exception()  # type: ignore[misc]

    async def _write(self, batch: _Batch) -> None:
        async with self._lock:
            started = self._monotonic_ms()
            loop = asyncio.get_running_loop()
            rows_by_table = batch.rows
            if self.progress is not None:
                rows_by_table = await self._exactly_once(loop, self.progress, batch)
            # Tables and the barrier are independent: run them side by side, then commit.
            steps = [
                self._with_retry(
                    loop,
                    f"insert into {name} ({len(rows)} rows)",
                    functools.partial(
                        self.writer.insert,
                        self.tables[name],
                        rows,
                        self.tables[name].dedup_token(rows),
                    ),
                )
                for name, rows in rows_by_table.items()
                if rows
            ]
            if self.barrier is not None:
                steps.append(self._with_retry(loop, "sink barrier", self.barrier))
            await asyncio.gather(*steps)
            for callback in batch.callbacks:
                callback()
            elapsed = self._monotonic_ms() - started
            self.stats.batches += 1
            self.stats.rows += batch.size
            self.stats.last_flush_ms = elapsed
            self.stats.flush_ms_total += elapsed
            log.debug("flushed %s rows in %.1f ms", batch.size, elapsed)

    async def _exactly_once(
        self, loop: asyncio.AbstractEventLoop, progress: ProgressStore, batch: _Batch
    ) -> dict[str, list[Row]]:
        """Raise the batch's marks; if it may repeat stored rows, keep only the missing ones."""
        plan = self.guard.plan(batch.spans, batch.suspect)
        if plan.marks:
            # Before the rows: a crash after their insert must find them covered by a mark.
            marks = dict(plan.marks)
            await self._with_retry(
                loop, "stream progress", functools.partial(progress.write_marks, marks)
            )
            self.guard.wrote(marks)
            self.stats.progress_writes += 1
        if not plan.check:
            return batch.rows
        self.stats.checked_batches += 1
        kept: dict[str, list[Row]] = {}
        for name, rows in batch.rows.items():
            table = self.tables[name]
            if table.replay is None:
                kept[name] = rows
                continue
            stored: set[tuple[object, ...]] = set()

            def look_up(
                table: Table[Any] = table,
                rows: list[Row] = rows,
                stored: set[tuple[object, ...]] = stored,
            ) -> None:
                stored.update(progress.stored(table, rows))

            await self._with_retry(loop, f"look-up in {name} ({len(rows)} rows)", look_up)
            kept[name] = unseen(rows, table.replay_identity, stored)
            if len(kept[name]) < len(rows):
                self.stats.replayed_rows += len(rows) - len(kept[name])
                log.info(
                    "%s: %s of %s replayed rows were stored already",
                    name,
                    len(rows) - len(kept[name]),
                    len(rows),
                )
        return kept

    async def _with_retry(
        self, loop: asyncio.AbstractEventLoop, what: str, call: Callable[[], None]
    ) -> None:
        backoff_ms = float(self.config.initial_backoff_ms)
        first_failure: float | None = None
        attempt = 0
        failures = 0
        while True:
            attempt += 1
            try:
                await loop.run_in_executor(self._executor, call)
            except Exception as exc:
                now = self._monotonic_ms()
                first_failure = now if first_failure is None else first_failure
                waited_ms = now - first_failure
                self.stats.retries += 1
                self.stats.consecutive_failures += 1
                failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                limit = self.config.give_up_after_ms
                if limit is not None and waited_ms >= limit:
                    log.error(
                        "%s failed %s times over %.0f ms; giving up: %s",
                        what,
                        attempt,
                        waited_ms,
                        exc,
                    )
                    raise SinkUnavailableError(
                        f"{what} failed {attempt} times over {waited_ms:.0f} ms: {exc}"
                    ) from exc
                log.warning(
                    "%s failed (attempt %s, retry in %.0f ms): %s",
                    what,
                    attempt,
                    backoff_ms,
                    exc,
                )
                await asyncio.sleep(backoff_ms / 1000.0)
                backoff_ms = min(backoff_ms * 2, float(self.config.max_backoff_ms))
                continue
            if attempt > 1:
                log.info("%s succeeded after %s attempts", what, attempt)
            # Steps run side by side: clear only this step's failures, not a sibling's.
            self.stats.consecutive_failures -= failures
            return


class ClickHouseWriter:
    """A `BatchWriter` and `ProgressStore` over a clickhouse-connect client (one insert per call,
    deduplicated); `group` is the consumer group whose marks it keeps."""

    def __init__(self, client: Client, group: str = "") -> None:
        self.client = client
        self.group = group

    def insert(self, table: Table[Any], rows: Sequence[Row], dedup_token: str) -> None:
        insert_idempotent(self.client, table, rows, dedup_token)

    def read_marks(self, partitions: Sequence[int]) -> dict[SourceKey, int]:
        return read_marks(self.client, self.group, partitions)

    def write_marks(self, marks: Mapping[SourceKey, int]) -> None:
        write_marks(self.client, self.group, marks)

    def stored(self, table: Table[Any], rows: Sequence[Row]) -> set[tuple[object, ...]]:
        return stored_identities(self.client, table, rows)
