"""Exactly once for every reader, the pure logic: which flushes raise marks, which batches are
checked against what ClickHouse holds, and which rows of a checked batch are inserted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence

from safeloop.schemas.tables import ReplayKey, Row, Table
from safeloop.streams.exactly_once import EXPIRY_SOURCE, ReplayGuard, Span, unseen
from safeloop.streams.sink import ClickHouseSink, SinkConfig

# (id, version, emitted_at): a replay emits the same (id, version) at another time.
T: Table[Row] = Table(
    "t",
    ("id", "version", "emitted_at"),
    tuple,
    identity_columns=("id", "version", "emitted_at"),
    replay=ReplayKey("id", "String", ("id", "version")),
)
SOURCE = ("predictions", 3)


def test_fresh_partitions_are_never_checked_and_marks_run_ahead_by_the_lead() -> None:
    guard = ReplayGuard(offset_lead=100, expiry_lead_ms=5_000)
    plan = guard.plan({SOURCE: Span(0, 40), (EXPIRY_SOURCE, 3): Span(0, 9_000)}, suspect=False)
    assert not plan.check
    assert plan.marks == {SOURCE: 140, (EXPIRY_SOURCE, 3): 14_000}
    guard.wrote(plan.marks)
    # Within the lead: nothing to write, nothing to check (the steady state's hot path).
    assert guard.plan({SOURCE: Span(41, 139)}, suspect=False).marks == {}
    assert guard.plan({SOURCE: Span(41, 140)}, suspect=False).marks == {}
    assert guard.plan({SOURCE: Span(141, 150)}, suspect=False).marks == {SOURCE: 250}


def test_input_at_or_below_a_recovered_mark_is_checked_beyond_it_is_not() -> None:
    guard = ReplayGuard(offset_lead=100)
    guard.recover([3], {SOURCE: 500, ("outcomes", 3): 70, ("predictions", 4): 9})
    assert guard.recovered == {SOURCE: 500, ("outcomes", 3): 70}  # partition 4 not assigned
    assert guard.plan({SOURCE: Span(480, 520)}, suspect=False).check
    assert guard.plan({SOURCE: Span(500, 500)}, suspect=False).check
    assert not guard.plan({SOURCE: Span(501, 900)}, suspect=False).check
    assert guard.plan({SOURCE: Span(501, 900), ("outcomes", 3): Span(1, 2)}, suspect=False).check
    # A mark read back is already in ClickHouse: nothing below it is written again.
    assert guard.plan({SOURCE: Span(400, 500)}, suspect=False).marks == {}
    # Input the join saw before (a replay beyond the marks, a duplicate): checked anyway.
    assert guard.plan({SOURCE: Span(900, 901)}, suspect=True).check
    # Re-assigned later: the marks read then replace those of the partition.
    guard.recover([3], {})
    assert not guard.plan({SOURCE: Span(480, 520)}, suspect=False).check


def test_unseen_drops_stored_rows_and_repeats_within_the_batch() -> None:
    rows = [("a", 1, 10), ("b", 1, 11), ("a", 1, 12), ("a", 2, 13), ("c", 1, 14)]
    kept = unseen(rows, T.replay_identity, {("b", 1)})
    # A correction (another version) is a row of its own; a repeat at another time is not.
    assert kept == [("a", 1, 10), ("a", 2, 13), ("c", 1, 14)]


class FakeStore:
    """Tables and marks as ClickHouse would hold them, with the order of calls."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {}
        self.marks: dict[tuple[str, int], int] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def insert(self, table: Table[Row], rows: Sequence[Row], dedup_token: str) -> None:
        with self.lock:
            self.calls.append(f"insert {table.name} {len(rows)}")
            self.rows.setdefault(table.name, []).extend(rows)

    def read_marks(self, partitions: Sequence[int]) -> dict[tuple[str, int], int]:
        return {k: v for k, v in self.marks.items() if k[1] in partitions}

    def write_marks(self, marks: Mapping[tuple[str, int], int]) -> None:
        with self.lock:
            self.calls.append(f"marks {dict(marks)}")
            for key, mark in marks.items():
                self.marks[key] = max(self.marks.get(key, mark), mark)

    def stored(self, table: Table[Row], rows: Sequence[Row]) -> set[tuple[object, ...]]:
        with self.lock:
            self.calls.append(f"look-up {table.name} {len(rows)}")
            return {table.replay_identity(r) for r in self.rows.get(table.name, [])}


def make_sink(store: FakeStore) -> ClickHouseSink:
    config = SinkConfig(max_rows=1_000, flush_interval_ms=0, initial_backoff_ms=1)
    return ClickHouseSink(store, (T,), config, progress=store, guard=ReplayGuard(offset_lead=10))


def test_a_restart_inserts_only_the_replayed_rows_that_are_missing() -> None:
    async def scenario() -> None:
        store = FakeStore()
        first = make_sink(store)
        await first.recover([3])
        first.add(T, [("a", 1, 10), ("b", 1, 11)])
        first.derived_from(SOURCE, 0, 1)
        await first.flush()
        # The mark went in before the rows, and nothing was looked up.
        assert store.calls == ["marks {('predictions', 3): 11}", "insert t 2"]
        # SIGKILL before the offsets were committed: a new life replays offsets 0..3.
        store.calls.clear()
        second = make_sink(store)
        await second.recover([3])
        second.add(T, [("a", 1, 20), ("b", 1, 21), ("c", 1, 22), ("d", 1, 23)])
        second.derived_from(SOURCE, 0, 3)
        await second.flush()
        assert store.calls == ["look-up t 4", "insert t 2"]
        assert second.stats.replayed_rows == 2
        assert (second.stats.checked_batches, second.stats.progress_writes) == (1, 0)
        # Beyond the mark (11): no look-up, and the mark is raised before the insert.
        store.calls.clear()
        second.add(T, [("e", 1, 30)])
        second.derived_from(SOURCE, 12, 12)
        await second.flush()
        assert store.calls == ["marks {('predictions', 3): 22}", "insert t 1"]
        # A batch the join flags as repeating earlier input is checked wherever it comes from.
        store.calls.clear()
        second.add(T, [("e", 1, 40)])
        second.derived_from(SOURCE, 13, 13, suspect=True)
        await second.flush()
        assert store.calls == ["look-up t 1"]
        assert (second.stats.checked_batches, second.stats.progress_writes) == (2, 1)
        assert sorted(r[:2] for r in store.rows["t"]) == [
            ("a", 1),
            ("b", 1),
            ("c", 1),
            ("d", 1),
            ("e", 1),
        ]
        await first.close()
        await second.close()

    asyncio.run(scenario())


def test_without_a_progress_store_the_sink_writes_as_before() -> None:
    async def scenario() -> None:
        store = FakeStore()
        sink = ClickHouseSink(store, (T,), SinkConfig(flush_interval_ms=0))
        await sink.recover([3])
        sink.add(T, [("a", 1, 10)])
        sink.derived_from(SOURCE, 0, 0, suspect=True)
        await sink.flush()
        assert store.calls == ["insert t 1"]
        await sink.close()

    asyncio.run(scenario())
