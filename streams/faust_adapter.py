"""Every use of faust-streaming's internals, in one place: the rest of `streams/` uses only
faust's public API and this module.

Written against faust-streaming 0.15.3, which pyproject.toml pins exactly;
tests/unit/test_faust_adapter.py fails loudly when that version or any internal used here
changes (signatures, attributes, and hashes of the faust code copied or mirrored here).

- `Consumer`, `Transport`, `install_consumer`, `install_batch_handler`, `mark_done`,
  `forget_done`: the aiokafka driver's consumer whose fetch loop hands the records of the
  join's source topics to the worker in batches, beneath faust's per-message conductor.
- `LeanMonitor`: faust's Monitor without its per-message bookkeeping.
- `bounded_store_url`, `BoundedRocksDBStore`: faust's RocksDB store with every partition
  database of a process sharing one block cache and memtable budget.
- `partition_db`, `visible_items`, `persisted_offset`, `set_persisted_offset`: the RocksDB
  store's database of one partition, its items, and the changelog offset it was restored to.
- `restore_changelogs`, `restore_tally`: table recovery written in batches, and its figures.
- `install_bulk_restore`: the active partitions' changelogs read through librdkafka
  (`changelog_restore`) before faust's recovery reads what is left.
- `started_consumer`, `committed_offset`, `in_recovery`: what the worker's /metrics and expiry
  read off the app and its consumer.
- `DrainingWorker`: faust's Worker running a hook when told to stop, before it stops the app.

The batch hand-off: faust 0.15's fetcher turns every record into a ConsumerMessage, runs the
conductor's callback for it under `wait_first` (four asyncio tasks and an `asyncio.wait` per
message), decodes it, queues it into a stream, wraps it in an Event, and acks it one by one:
about half the worker's CPU before the join ran at all (bench/results/stream_join_profile.txt).
Here the records of the topics given to `install_batch_handler` skip all of that: each fetch
round's records of those partitions go to the handler as one `{TP: [record, ...]}` batch (the
aiokafka ConsumerRecords as fetched). The handler reports what it finished with `mark_done`
(the next offset to read per partition) and faust's own commit timer commits it: `_new_offset`
answers from those marks for the batch topics, from faust's acks for every other topic.
During table recovery the changelog records fetched are written straight into the tables'
RocksDB in batches (`restore_changelogs`); faust still sees each fetch round's last record of
each partition, and decides when recovery ends. Records of every other topic go through faust's
per-message path exactly as in faust. faust keeps partition assignment, table recovery,
flow control around rebalances, commits and the worker's lifecycle: a fetch round is handed
over only while flow is active and the consumer generation has not changed, as faust's own
`getmany` does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

import faust
import rocksdict
from faust.sensors.monitor import Monitor
from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from safeloop.streams.changelog_restore import (
    RestoreConsumer,
    RestoreTarget,
    restore_partitions,
    total_remaining,
    write_restored,
)

log = logging.getLogger(__name__)

# The faust-streaming release this module was written against (pinned in pyproject.toml).
FAUST_VERSION = "0.15.3"

_FETCHING = "FETCHING"

# One fetch round's records of the batch topics: {TP: [aiokafka ConsumerRecord, ...]}. The
# handler runs them synchronously; what it returns (if anything) is awaited after, and may be
# interrupted by a rebalance (e.g. waiting for the sink's backpressure to ease).
BatchHandler = Callable[[Mapping[Any, Sequence[Any]]], Awaitable[None] | None]


class Consumer(faust_aiokafka.Consumer):
    """The aiokafka driver's consumer; the fetch loop hands the batch topics over in batches."""

    _batch_handler: BatchHandler | None = None
    _batch_topics: frozenset[str] = frozenset()
    _batch_done: dict[Any, int]

    def _new_offset(self, tp: Any) -> int | None:
        if tp.topic in self._batch_topics:
            done = getattr(self, "_batch_done", None)
            return None if done is None else done.pop(tp, None)
        offset: int | None = super()._new_offset(tp)
        return offset

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust's loop
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspend_flow = self.suspend_flow
        flow_suspended = suspend_flow.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        to_message = self._to_message
        inbound_time = self.app.monitor.stream_inbound_time

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(_FETCHING)
                # faust's getmany, minus the per-record ConsumerMessage of the batch topics.
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    unset_flag(_FETCHING)
                    continue
                if not self.flow_active:
                    self.log.dev("fetched while flow not active. Seek back to committed offsets.")
                    try:
                        await self.perform_seek()
                    except Exception as ex:
                        self.log.warning("exception performing seek when flow not active %r", ex)
                    unset_flag(_FETCHING)
                    continue
                generation_id = self.app.consumer_generation_id
                handler = self._batch_handler
                batch_topics = self._batch_topics
                buffered = self._buffered_partitions
                batch: dict[Any, Sequence[Any]] = {}
                rest: dict[Any, Any] = {}
                for tp, fetched in records.items():
                    if active is not None and tp not in active and tp not in buffered:
                        continue
                    if handler is not None and tp.topic in batch_topics:
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and fetched[0].offset < r_offset:
                            # As faust's loop: never hand over an offset before the last read.
                            fetched = [r for r in fetched if r.offset >= r_offset]  # noqa: PLW2901
                        if fetched:
                            batch[tp] = fetched
                    else:
                        rest[tp] = fetched
                if batch and handler is not None:
                    after = handler(batch)
                    now = monotonic()
                    for tp, handed in batch.items():
                        set_read_offset(tp, handed[-1].offset)
                        # The driver's "stream idle" check reads it (see LeanMonitor).
                        inbound_time[tp] = now
                    if after is not None:
                        await self.wait_first(after, suspend_flow.wait())
                if rest and in_recovery(self.app):
                    rest = restore_changelogs(self.app, rest)
                # Everything else: faust's own per-message hand-off, unchanged.
                for tp, record in self.scheduler.iterate(rest) if rest else ():
                    if not self.flow_active:
                        break
                    if self.app.consumer_generation_id != generation_id:
                        break
                    message = to_message(tp, record)
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await self.wait_first(callback(message), suspend_flow.wait())
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                if flow_suspended():
                    await asyncio.sleep(0)
                unset_flag(_FETCHING)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(_FETCHING)


@dataclass
class RestoreTally:
    """Changelog entries written by `restore_changelogs`, and the time it took: from the start
    of each recovery (faust's) to its last entry written, summed over recoveries."""

    entries: int = 0
    ended_seconds: float = 0.0
    started_at: float | None = None
    last_write_at: float | None = None

    def record(self, entries: int, started_at: float | None, now: float) -> None:
        started = now if started_at is None else started_at
        if started != self.started_at:
            self.ended_seconds += self._current()
            self.started_at = started
        self.entries += entries
        self.last_write_at = now

    @property
    def seconds(self) -> float:
        return self.ended_seconds + self._current()

    def _current(self) -> float:
        if self.started_at is None or self.last_write_at is None:
            return 0.0
        return max(self.last_write_at - self.started_at, 0.0)


def restore_tally(app: Any) -> RestoreTally:
    """What the app's recoveries restored through `restore_changelogs` so far."""
    tally: RestoreTally | None = getattr(app, "_safeloop_restore_tally", None)
    if tally is None:
        tally = RestoreTally()
        app._safeloop_restore_tally = tally
    return tally


def restore_changelogs(app: Any, fetched: dict[Any, Any]) -> dict[Any, Any]:
    """Write the fetched records of changelog partitions under recovery straight into their
    tables' RocksDB (one WriteBatch per partition, with the offset it reached), and return what
    faust's per-message path should still see.

    faust's recovery costs about 500 µs per changelog record (the conductor's tasks, an Event,
    a queue and a `wait_for` each); this path costs a few. Of each partition's records only the
    last goes on to faust, which finds its offset already restored and skips it, but still
    checks whether recovery has ended. faust's own buffer is flushed first: it holds only
    records older than these.
    """
    recovery = app.tables.recovery
    tp_to_table = recovery.tp_to_table
    rest: dict[Any, Any] = {}
    flushed = False
    for tp, records in fetched.items():
        table = tp_to_table.get(tp)
        store = None if table is None else table.data
        if tp in recovery.active_tps:
            offsets = recovery.active_offsets
        elif tp in recovery.standby_tps:
            offsets = recovery.standby_offsets
        else:
            store = None
        if store is None or not hasattr(store, "_db_for_partition"):
            rest[tp] = records
            continue
        seen = offsets.get(tp)
        new = records if seen is None else [r for r in records if r.offset > seen]
        if new:
            if not flushed:
                recovery.flush_buffers()
                flushed = True
            last = new[-1].offset
            pairs = ((record.key, record.value) for record in new)
            write_restored(store._db_for_partition(tp.partition), store.offset_key, pairs, last)
            offsets[tp] = last
            restore_tally(app).record(len(new), recovery._recovery_started_at, monotonic())
        rest[tp] = records[-1:]
    return rest


# Below this many entries to restore, faust's path is as quick as opening a new connection.
BULK_RESTORE_MIN_ENTRIES = 10_000


def install_bulk_restore(app: Any, new_consumer: Callable[[], RestoreConsumer]) -> None:
    """Restore the active tables' changelogs through librdkafka (`changelog_restore`, with a
    consumer from `new_consumer`) before faust's recovery reads on from where it stopped.

    faust's recovery seeks the consumer to the active partitions' offsets once it has their
    highwaters and restored offsets; the restore runs just before that seek and advances the
    offsets, so faust finds the partitions restored (or reads the rest, as it would have)."""
    recovery = app.tables.recovery
    seek = recovery._seek_offsets

    async def _seek_offsets(consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        if title == "active":
            await _bulk_restore(app, new_consumer, tps, offsets)
        await seek(consumer, tps, offsets, title)

    recovery._seek_offsets = _seek_offsets


async def _bulk_restore(
    app: Any, new_consumer: Callable[[], RestoreConsumer], tps: Iterable[Any], offsets: Any
) -> None:
    recovery = app.tables.recovery
    targets = []
    for tp in tps:
        table = recovery.tp_to_table.get(tp)
        last = recovery.active_highwaters.get(tp)
        db = None if table is None else partition_db(table, tp.partition)
        if db is None or last is None:
            continue
        restored = offsets.get(tp)
        start = 0 if restored is None else restored + 1
        targets.append(
            RestoreTarget(tp.topic, tp.partition, start, last, db, table.data.offset_key)
        )
    if total_remaining(targets) < BULK_RESTORE_MIN_ENTRIES:
        return
    tally = restore_tally(app)
    started = recovery._recovery_started_at
    before, began = tally.entries, monotonic()
    consumer = new_consumer()
    try:
        written = await restore_partitions(
            consumer,
            targets,
            # faust gives up on this step after broker_request_timeout (it stops the service):
            # whatever is left past a third of it, faust's recovery reads.
            budget_s=float(app.conf.broker_request_timeout) / 3,
            on_written=lambda entries: tally.record(entries, started, monotonic()),
        )
    finally:
        consumer.close()
    for (topic, partition), last in written.items():
        offsets[TP(topic, partition)] = last
    entries = tally.entries - before
    seconds = monotonic() - began
    log.info(
        "restored %d changelog entries of %d partitions through librdkafka in %.1f s (%.0f/s); "
        "%d left to faust's recovery",
        entries,
        len(written),
        seconds,
        entries / seconds if seconds else 0.0,
        total_remaining(targets),
    )


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with the consumer above."""

    Consumer = Consumer


def install_consumer(app: Any) -> None:
    """Use this module's consumer in `app` (call before the app starts).

    Builds the transport as faust's `App._new_transport` does, with this module's class.
    """
    app.transport = Transport(app.conf.broker_consumer, app)


def install_batch_handler(app: Any, topics: Iterable[str], handler: BatchHandler) -> None:
    """Hand `topics`' records to `handler` in batches (see the module's doc); their offsets
    commit only as far as `mark_done` says."""
    consumer = cast(Consumer, app.consumer)
    consumer._batch_done = {}
    consumer._batch_topics = frozenset(topics)
    consumer._batch_handler = handler


def mark_done(app: Any, done: Mapping[tuple[str, int], int]) -> None:
    """Let faust commit up to `done[(topic, partition)]` (the next offset to read) at its next
    commit; batch topics only."""
    consumer = cast(Consumer, app.consumer)
    marks = consumer._batch_done
    acked = consumer._acked
    for (topic, partition), offset in done.items():
        tp = TP(topic, partition)
        if offset > marks.get(tp, -1):
            marks[tp] = offset
        # faust commits the partitions found in `_acked` (its defaultdict(list)).
        acked[tp]


def forget_done(app: Any, partitions: Iterable[Any]) -> None:
    """Drop the marks of revoked partitions (their new owner commits them)."""
    marks = cast(Consumer, app.consumer)._batch_done
    for tp in partitions:
        marks.pop(tp, None)


class LeanMonitor(Monitor):
    """faust's Monitor without its per-message bookkeeping.

    faust calls the monitor four or five times for every message (in, stream in/out, out, end
    offset); nothing here reads those figures (the worker's /metrics are `StreamSnapshot`'s),
    and they cost several percent of the worker's CPU. Everything else stays faust's.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        # Kept: the aiokafka driver's "stream stopped processing" check reads it.
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        return None


# -- the RocksDB store (faust.stores.rocksdb.Store) ---------------------------------------

# All RocksDB memory of one process, across every table partition database (16 for a worker
# owning 8 partitions), under one budget, as Kafka Streams' BoundedMemoryRocksDBConfig does: one
# LRU block cache, with every memtable charged to it through one WriteBufferManager. Per-database
# memtables and caches let the total climb for as long as the process runs: memtables until every
# database flushed at once (+48 MB, then -20 MB in one step, in a 30-minute soak), then each
# database's cache keeping blocks of files compaction had already replaced until that cache was
# full (16 x 16 MB; +4 MB a minute in the next soak). Past the memtable budget RocksDB flushes the
# database being written to; past the cache's capacity it evicts the least recently used blocks.
# Blocks of replaced files are never looked up again but stay until evicted, so the cache always
# fills to its capacity: size it for the blocks the joins read (the newest files), not the data.
DEFAULT_ROCKSDB_MEMORY_BYTES = 16 * 2**20
# A memtable takes memory a block at a time, write_buffer_size / 8 (1 MB) by default: 16 nearly
# empty memtables held 16-33 MB, past any budget, and the budget then flushed on every write.
ARENA_BLOCK_BYTES = 64 * 2**10
# RocksDB's own info LOG per database, which it never trims by default (12 MB in 25 minutes of
# a soak, per database, while flushes were frequent).
INFO_LOG_BYTES = 2**20
INFO_LOGS_KEPT = 2
_BLOCK_CACHE = rocksdict.Cache(DEFAULT_ROCKSDB_MEMORY_BYTES)
_MEMTABLES = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
    DEFAULT_ROCKSDB_MEMORY_BYTES // 2, False, _BLOCK_CACHE
)
_STORE_SCHEME = "safeloop-rocksdb"


class _BoundedRocksDBOptions(faust_rocksdb.RocksDBOptions):
    def as_options(self) -> Any:
        # faust's RocksDBOptions.as_options for rocksdict, with the process's cache and memtable
        # budget in place of a cache per database.
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_write_buffer_manager(_MEMTABLES)
        options.set_arena_block_size(ARENA_BLOCK_BYTES)
        options.set_max_log_file_size(INFO_LOG_BYTES)
        options.set_keep_log_file_num(INFO_LOGS_KEPT)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(_BLOCK_CACHE)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class BoundedRocksDBStore(faust_rocksdb.Store):
    """faust's RocksDB (rocksdict) store whose databases share the process's block cache and
    memtable budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # As faust builds it, from the options left after it popped read_only and driver.
        self.rocksdb_options = _BoundedRocksDBOptions(**(self.options or {}), use_rocksdict=True)


def bounded_store_url() -> str:
    """The app's `store=` URL for `BoundedRocksDBStore` (registered with faust on first use)."""
    STORES.aliases[_STORE_SCHEME] = f"{__name__}:BoundedRocksDBStore"
    return f"{_STORE_SCHEME}://"


def bound_rocksdb_memory(total_bytes: int) -> None:
    """Hold all of the process's RocksDB memory to `total_bytes`: the block cache's capacity,
    with the memtables (charged to it) flushed past half of it."""
    if total_bytes <= 0:
        raise ValueError(f"RocksDB memory must be positive, not {total_bytes} bytes")
    _BLOCK_CACHE.set_capacity(total_bytes)
    _MEMTABLES.set_buffer_size(total_bytes // 2)


def rocksdb_memory_bytes() -> int:
    """The process's RocksDB memory budget (`bound_rocksdb_memory`)."""
    return int(_MEMTABLES.get_buffer_size()) * 2


def memtable_usage_bytes() -> int:
    """Memory the process's RocksDB memtables take now, against half the budget."""
    return int(_MEMTABLES.get_usage())


def block_cache_usage_bytes() -> int:
    """Memory the process's RocksDB block cache holds now (memtables charged to it included),
    against the budget."""
    return int(_BLOCK_CACHE.get_usage())


def partition_db(table: Any, partition: int) -> Any | None:
    """The rocksdict database of `partition` of `table`'s store, opened on first use as faust
    does; None when the table does not use the rocksdb:// store."""
    store = table.data
    if not hasattr(store, "_db_for_partition"):
        return None
    return store._db_for_partition(partition)


def visible_items(table: Any, db: Any) -> Iterator[tuple[bytes, bytes]]:
    """The raw (key, value) pairs in `db`, one of `table`'s partition databases, without the
    offset record faust keeps among them.

    Mirrors faust's `Store._visible_items` for rocksdict in one generator instead of two: a
    restart reads every entry through it to index the join's state."""
    offset_key = table.data.offset_key
    # A full scan would push the blocks the joins read out of the shared cache (and fill it
    # with blocks read once): it reads past the cache.
    options = rocksdict.ReadOptions()
    options.fill_cache(False)  # type: ignore[call-arg]  # rocksdict's stub omits the flag
    for key, value in db.items(read_opt=options):
        if key != offset_key:
            yield key, value


def persisted_offset(table: Any, partition: int) -> int | None:
    """The changelog offset `table`'s partition database says it holds everything up to."""
    return cast(int | None, table.data.persisted_offset(_changelog_tp(table, partition)))


def set_persisted_offset(table: Any, partition: int, offset: int) -> None:
    """Record in the partition database that it holds the changelog up to `offset`, so a
    restart on the same disk replays only what came after (faust reads it at recovery)."""
    table.data.set_persisted_offset(_changelog_tp(table, partition), offset)


def _changelog_tp(table: Any, partition: int) -> Any:
    return TP(table.changelog_topic.get_topic_name(), partition)


# -- the app and its consumer -------------------------------------------------------------


def started_consumer(app: Any) -> Any | None:
    """The app's consumer if it was created; None before (`app.consumer` would create one)."""
    return getattr(app, "_consumer", None)


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset the consumer last committed for `tp`, None if none yet (without adding an
    entry to faust's defaultdict)."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


def in_recovery(app: Any) -> bool:
    """True while faust's table recovery replays changelogs (it sets `app.in_recovery`)."""
    return bool(getattr(app, "in_recovery", False))


class DrainingWorker(faust.Worker):
    """faust's Worker that awaits `before_stop` first when told to stop (SIGTERM, SIGINT),
    while the app's consumer, tables and producer still run."""

    def __init__(
        self, app: Any, *, before_stop: Callable[[], Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._before_stop = before_stop

    async def on_stop(self) -> None:
        # mode stops a service's children (the app among them) only after its own on_stop.
        await self._before_stop()
        await super().on_stop()
