"""ClickHouseSink with a fake writer: batching by size and time, tokens, retries, ordering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from safeloop.schemas.tables import Row, Table
from safeloop.streams.exceptions import SinkUnavailableError
from safeloop.streams.sink import ClickHouseSink, SinkConfig

T: Table[Row] = Table("t", ("a", "b"), tuple, identity_columns=("a", "b"))
U: Table[Row] = Table("u", ("c",), tuple, identity_columns=("c",))


class FakeWriter:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, list[Row], str]] = []
        self.accepted: dict[str, list[Row]] = {}
        self.tokens: set[str] = set()
        self.lock = threading.Lock()

    def insert(self, table: Table[Row], rows: Sequence[Row], dedup_token: str) -> None:
        with self.lock:
            self.calls.append((table.name, list(rows), dedup_token))
            if self.failures:
                self.failures -= 1
                raise ConnectionError("clickhouse down")
            if dedup_token in self.tokens:  # what ClickHouse insert deduplication does
                return
            self.tokens.add(dedup_token)
            self.accepted.setdefault(table.name, []).extend(rows)


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 0.0

    def __call__(self) -> float:
        return self.now_ms


def make_sink(writer: FakeWriter, **config: int | None) -> tuple[ClickHouseSink, FakeClock]:
    clock = FakeClock()
    base = {"max_rows": 3, "flush_interval_ms": 100, "initial_backoff_ms": 1, "max_backoff_ms": 2}
    base.update(config)
    return ClickHouseSink(writer, (T, U), SinkConfig(**base), monotonic_ms=clock), clock  # type: ignore[arg-type]


def test_flushes_by_size() -> None:
    async def scenario() -> None:
        writer = FakeWriter()
        sink, _ = make_sink(writer)
        sink.add(T, [(1, 2), (3, 4)])
        assert not sink.due()
        sink.add(T, [(5, 6)])
        assert sink.due()
        await sink.maybe_flush()
        await sink.flush()
        assert writer.accepted == {"t": [(1, 2), (3, 4), (5, 6)]}
        assert sink.stats.batches == 1 and sink.stats.rows == 3
        await sink.close()

    asyncio.run(scenario())


def test_flushes_by_time() -> None:
    async def scenario() -> None:
        writer = FakeWriter()
        sink, clock = make_sink(writer)
        sink.add(U, [(1,)])
        assert not sink.due()
        clock.now_ms = 100
        assert sink.due()
        await sink.maybe_flush()
        await sink.flush()
        assert writer.accepted == {"u": [(1,)]}
        await sink.close()

    asyncio.run(scenario())


def test_callbacks_run_only_after_the_rows_before_them_are_in() -> None:
    async def scenario() -> None:
        writer = FakeWriter(failures=2)
        sink, _ = make_sink(writer)
        seen: list[int] = []
        sink.add(T, [(1, 1)])
        sink.after_flush(lambda: seen.append(len(writer.accepted.get("t", []))))
        await sink.flush()
        assert seen == [1]
        assert sink.stats.retries == 2
        assert sink.stats.consecutive_failures == 0
        assert sink.stats.last_error is not None and "clickhouse down" in sink.stats.last_error
        await sink.close()

    asyncio.run(scenario())


def test_retry_reuses_the_token_so_clickhouse_drops_a_repeat() -> None:
    async def scenario() -> None:
        writer = FakeWriter(failures=1)
        sink, _ = make_sink(writer)
        sink.add(T, [(1, 1)])
        await sink.flush()
        tokens = {token for _, _, token in writer.calls}
        assert len(tokens) == 1 and len(writer.calls) == 2
        # The same content in a later batch (a replay) gets the same token: deduplicated.
        sink.add(T, [(1, 1)])
        await sink.flush()
        assert writer.accepted == {"t": [(1, 1)]}
        await sink.close()

    asyncio.run(scenario())


def test_gives_up_loudly_when_configured() -> None:
    async def scenario() -> None:
        writer = FakeWriter(failures=10_000)
        sink, _ = make_sink(writer, give_up_after_ms=0)
        ran: list[bool] = []
        sink.add(T, [(1, 1)])
        sink.after_flush(lambda: ran.append(True))
        with pytest.raises(SinkUnavailableError, match="failed"):
            await sink.flush()
        assert ran == []
        sink._executor.shutdown()

    asyncio.run(scenario())


def test_backpressure_blocks_only_when_buffer_is_full_during_a_flush() -> None:
    async def scenario() -> None:
        gate = threading.Event()

        class SlowWriter(FakeWriter):
            def insert(self, table: Table[Row], rows: Sequence[Row], token: str) -> None:
                gate.wait(5)
                super().insert(table, rows, token)

        writer = SlowWriter()
        sink, _ = make_sink(writer, max_rows=1, max_buffered_rows=2)
        sink.add(T, [(1, 1)])
        await sink.maybe_flush()
        assert sink.flushing
        sink.add(T, [(2, 2)])
        await asyncio.wait_for(sink.maybe_flush(), 1)  # below max_buffered_rows: returns
        sink.add(T, [(3, 3)])
        blocked = asyncio.ensure_future(sink.maybe_flush())
        await asyncio.sleep(0.05)
        assert not blocked.done()
        gate.set()
        await asyncio.wait_for(blocked, 5)
        await sink.flush()
        assert writer.accepted["t"] == [(1, 1), (2, 2), (3, 3)]
        await sink.close()

    asyncio.run(scenario())


def test_unknown_table_is_refused() -> None:
    sink, _ = make_sink(FakeWriter())
    with pytest.raises(KeyError):
        sink.add(Table("nope", ("c",), tuple, identity_columns=("c",)), [(1,)])
    sink._executor.shutdown()
