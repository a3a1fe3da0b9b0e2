"""One stream worker: the faust agent, expiry and flush timers, /metrics, and their wiring."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from faust.types import TP

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.collector_schedule import HOT_LOOP
from safeloop.infra.kafka.clients import make_consumer, producer_config, with_client_logging
from safeloop.infra.kafka.topics import TopicAdmin
from safeloop.infra.process_logging import configure_logging
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import DEAD_LETTER_CODEC, FEEDBACK_CODEC
from safeloop.schemas.tables import DEAD_LETTERS, FEEDBACK, OUTCOMES, PREDICTIONS
from safeloop.streams.app import StreamApp, StreamConfig, app_id_for, create_app
from safeloop.streams.changelog_restore import RestoreConsumer
from safeloop.streams.exactly_once import EXPIRY_SOURCE
from safeloop.streams.exceptions import StreamError
from safeloop.streams.faust_adapter import (
    DrainingWorker,
    block_cache_usage_bytes,
    committed_offset,
    forget_done,
    in_recovery,
    install_batch_handler,
    install_bulk_restore,
    mark_done,
    memtable_usage_bytes,
    restore_tally,
    set_persisted_offset,
    started_consumer,
)
from safeloop.streams.join import JoinWindow, Release
from safeloop.streams.observability import (
    CONTENT_TYPE,
    RateLogger,
    StreamSnapshot,
    render_prometheus,
)
from safeloop.streams.outputs import OutputTopics
from safeloop.streams.processor import BatchProcessor, BatchResult
from safeloop.streams.sink import (
    BatchWriter,
    ClickHouseSink,
    ClickHouseWriter,
    ProgressStore,
    SinkConfig,
)
from safeloop.streams.state import EarlyOutcome, PendingPrediction
from safeloop.streams.table_store import (
    FaustTableStore,
    decode_early,
    decode_pending,
    encode_early,
    encode_pending,
)
from safeloop.streams.topology import check_join_topics
from safeloop.streams.windows import JoinWindows

log = logging.getLogger(__name__)

# How long a graceful stop waits for the sink's last write (ClickHouse down: give up, the next
# owner replays it), well inside the 60 s supervisors usually grant before SIGKILL.
DRAIN_TIMEOUT_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class StreamWorker:
    """Runs the join in one faust worker; acks source events once their rows are in ClickHouse."""

    def __init__(
        self,
        settings: Settings,
        config: StreamConfig,
        writer: BatchWriter,
        outputs: OutputTopics,
        clock_ms: Callable[[], int] = _now_ms,
        *,
        progress: ProgressStore | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.parts: StreamApp = create_app(settings, config)
        self.app = self.parts.app
        self.outputs = outputs
        topics = settings.topics
        self.topics = topics
        self.join = JoinWindow(
            FaustTableStore[PendingPrediction](
                self.parts.pending, encode_pending, decode_pending, outputs
            ),
            FaustTableStore[EarlyOutcome](self.parts.early, encode_early, decode_early, outputs),
            config.windows,
            clock_ms,
        )
        self.processor = BatchProcessor(
            self.join,
            topics.predictions,
            topics.outcomes,
            f"{self.parts.app_id}/{config.worker_name}",
            clock_ms=clock_ms,
            max_future_skew_ms=config.max_future_skew_ms,
            repartition_topic=topics.repartition,
            partitions=settings.partitions,
        )
        self._sources = {topics.predictions, topics.outcomes, topics.repartition}
        self._changelog_tables = {
            table.changelog_topic.get_topic_name(): table
            for table in (self.parts.pending, self.parts.early)
        }
        outputs.track_offsets(set(self._changelog_tables))
        self.sink = ClickHouseSink(
            writer,
            (PREDICTIONS, OUTCOMES, FEEDBACK, DEAD_LETTERS),
            config.sink,
            barrier=outputs.flush,
            progress=progress,
        )
        self.clock_ms = clock_ms
        # Partition -> when its last expiry sweep started (exactly_once's expiry coordinates).
        self._last_sweep_ms: dict[int, int] = {}
        self._indexing = asyncio.Lock()
        # Partitions being revoked: their buffered input is left to the next owner.
        self._revoking: set[int] = set()
        self.rate_logger = RateLogger()
        # Partitions whose state is indexed here; rebuilt after assignment, dropped on revoke.
        self._indexed: set[int] = set()
        # (topic, partition) -> next offset not yet in ClickHouse.
        self.flushed: dict[tuple[str, int], int] = {}
        self._install()

    # -- faust wiring ----------------------------------------------------------------------

    def _install(self) -> None:
        app = self.app
        app.agent(self.parts.source, name="join")(self._process)
        app.timer(self.config.expiry_interval_ms / 1000.0)(self._expiry_tick)
        app.timer(max(self.config.sink.flush_interval_ms / 2000.0, 0.01))(self._flush_tick)
        app.timer(self.config.log_interval_ms / 1000.0)(self._log_tick)
        app.page("/metrics")(self._metrics_page)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        install_batch_handler(app, self._sources, self._on_batch)
        install_bulk_restore(
            app, functools.partial(restore_consumer, self.settings, self.parts.app_id)
        )

    async def _process(self, stream: Any) -> None:
        # The source topics' records reach `_on_batch` beneath faust's conductor (see
        # faust_adapter); the agent stays so faust subscribes to them and owns their partitions.
        within_s = self.config.batch_within_ms / 1000.0
        async for events in stream.noack_take(self.config.batch_max, within=within_s):
            await self.handle(events)

    async def _on_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        # Flush before letting go: the next owner reads the marks and checks its replay against
        # the tables, so no insert of ours may land after that; input of these partitions still
        # fetched is left to the next owner (`_on_batch` skips it meanwhile).
        self._revoking |= {tp.partition for tp in revoked if tp.topic in self._sources}
        try:
            await self.sink.flush()
        except Exception as exc:
            log.error("flush on revoke failed; the next owner replays what is missing: %s", exc)
        forget_done(self.app, revoked)
        for partition in {tp.partition for tp in revoked if tp.topic == self.topics.predictions}:
            self.join.revoke(partition)
            self._indexed.discard(partition)
            self._last_sweep_ms.pop(partition, None)

    async def _on_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        # faust seeks assigned partitions to their committed offsets: input skipped while they
        # were being revoked is read again.
        self._revoking -= {tp.partition for tp in assigned if tp.topic in self._sources}

    def _owned_partitions(self) -> set[int]:
        source = self._sources
        owned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic in source}
        return owned - self._revoking

    async def _ensure_indexed(self, partitions: set[int]) -> bool:
        """Read the marks of and index newly assigned `partitions`; False if a rebalance ran
        meanwhile (the caller drops its input: the rebalance's seek delivers it again)."""
        if partitions <= self._indexed:
            return True
        generation: int = self.app.rebalancing_count
        async with self._indexing:
            new = sorted(partitions - self._indexed)
            if new:
                # Before any input of theirs: rows at or below the marks read here are checked.
                await self.sink.recover(new)
                if self.app.rebalancing_count != generation:
                    return False
                self._index(new)
        return bool(self.app.rebalancing_count == generation)

    def _index(self, partitions: list[int]) -> None:
        for partition in partitions:
            started = time.monotonic()
            self.join.assign(partition)
            self._indexed.add(partition)
            log.info(
                "partition %s: indexed %s pending predictions, %s early outcomes in %.2fs",
                partition,
                self.join.pending_size(partition),
                self.join.early_size(partition),
                time.monotonic() - started,
            )

    # -- the stream ------------------------------------------------------------------------

    def _on_batch(self, batch: Mapping[Any, Sequence[Any]]) -> Awaitable[None]:
        """One fetch round of the source topics, {TP: [ConsumerRecord, ...]}: join it, emit
        its rows; its offsets commit once those rows are flushed."""
        owned = self._owned_partitions()
        if {tp.partition for tp in batch} & owned <= self._indexed:
            # The hot path: every partition's marks are known and its state indexed.
            self._process_batch(batch, owned)
            return self.sink.maybe_flush()
        return self._process_when_indexed(batch)

    async def _process_when_indexed(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        # A partition new here: its marks are read before any of its input is joined, so its
        # replay is checked. If a rebalance runs meanwhile (faust then cancels this wait), the
        # batch is dropped with nothing marked done: after the rebalance faust seeks every
        # partition back to its committed offset and the records are read again.
        if not await self._ensure_indexed(
            {tp.partition for tp in batch} & self._owned_partitions()
        ):
            log.info("a rebalance ran while reading marks: batch left to be read again")
            return
        self._process_batch(batch, self._owned_partitions())
        await self.sink.maybe_flush()

    def _process_batch(self, batch: Mapping[Any, Sequence[Any]], owned: set[int]) -> None:
        # The fetched records themselves (aiokafka's, or faust's messages from `handle`) go to
        # the processor: no record object of ours per event.
        records: list[Any] = []
        done: dict[tuple[str, int], int] = {}
        spans: dict[tuple[str, int], tuple[int, int]] = {}
        extend = records.extend
        indexed = self._indexed
        for tp, tp_records in batch.items():
            topic, partition = tp.topic, tp.partition
            if partition not in owned or partition not in indexed or not tp_records:
                # Revoked while fetched: the new owner reads it again from the committed offset.
                continue
            extend(tp_records)
            first, last = tp_records[0].offset, tp_records[-1].offset
            spans[(topic, partition)] = (min(first, last), max(first, last))
            done[(topic, partition)] = last + 1
        if not records:
            return
        result = self.processor.process(records)
        self._emit(result, done)
        sink = self.sink
        for key, (first, last) in spans.items():
            sink.derived_from(key, first, last)
        if result.repeated:
            sink.mark_suspect()

    async def handle(self, events: Sequence[Any]) -> None:
        """Faust events of the source topics, should any reach the agent's stream (the batch
        hand-off takes them all): processed as a batch, acked once flushed."""
        batch: dict[TP, list[Any]] = {}
        for event in events:
            message = event.message
            batch.setdefault(TP(message.topic, message.partition), []).append(message)
        owned = self._owned_partitions()
        if not await self._ensure_indexed({tp.partition for tp in batch} & owned):
            # Not acked: read again after the rebalance's seek.
            return
        owned = self._owned_partitions() & self._indexed
        self._process_batch(batch, owned)
        kept = [event for event in events if event.message.partition in owned]
        self.sink.after_flush(functools.partial(_ack_all, kept))
        await self.sink.maybe_flush()

    async def _expiry_tick(self) -> None:
        if self.app.rebalancing or in_recovery(self.app):
            return
        owned = self._owned_partitions()
        if not await self._ensure_indexed(owned):
            return
        partitions = sorted(owned & self._indexed)
        started_ms = self.clock_ms()
        result = self.processor.expire(partitions)
        if result.feedback or result.releases:
            self._emit(result, {})
        swept_ms = self.clock_ms()
        last_sweep = self._last_sweep_ms
        for partition in partitions:
            # This sweep emits what expires after the previous sweep began (everything, on
            # the first sweep of a newly assigned partition).
            if result.feedback:
                first = last_sweep.get(partition, 0)
                self.sink.derived_from((EXPIRY_SOURCE, partition), first, swept_ms)
            last_sweep[partition] = started_ms

    async def _flush_tick(self) -> None:
        await self.sink.maybe_flush()

    async def _log_tick(self) -> None:
        self.rate_logger.log(time.monotonic(), self.snapshot())

    def _emit(self, result: BatchResult, done: dict[tuple[str, int], int]) -> None:
        send = self.outputs.send
        if result.feedback:
            encode = FEEDBACK_CODEC.encode
            self.outputs.send_many(
                self.topics.feedback,
                [(r.prediction_id.encode(), encode(r)) for r in result.feedback],
            )
        for letter in result.dead_letters:
            send(self.topics.dead_letter, letter.key, DEAD_LETTER_CODEC.encode(letter))
        # The source offsets of re-routed records commit after the flush barrier, i.e. once
        # their copies are on the repartition topic.
        repartition = self.topics.repartition
        for reroute in result.reroutes:
            send(repartition, reroute.key, reroute.value, reroute.partition, reroute.headers)
        sink = self.sink
        if result.predictions:
            sink.add(PREDICTIONS, PREDICTIONS.rows(result.predictions))
        if result.outcomes:
            sink.add(OUTCOMES, OUTCOMES.rows(result.outcomes))
        if result.feedback:
            sink.add(FEEDBACK, FEEDBACK.rows(result.feedback))
        if result.dead_letters:
            sink.add(DEAD_LETTERS, DEAD_LETTERS.rows(result.dead_letters))
        if done or result.releases:
            sink.after_flush(functools.partial(self._flushed, done, result.releases))

    def _flushed(self, done: dict[tuple[str, int], int], releases: list[Release]) -> None:
        # Everything these records caused is in ClickHouse and on the output topics: commit.
        if done:
            owned = self._owned_partitions()
            owned_done = {tp: offset for tp, offset in done.items() if tp[1] in owned}
            mark_done(self.app, owned_done)
            flushed = self.flushed
            for key, offset in owned_done.items():
                if offset > flushed.get(key, -1):
                    flushed[key] = offset
        if releases:
            self.join.release([r for r in releases if r.partition in self._indexed])
        self._persist_changelog_offsets()

    def _persist_changelog_offsets(self) -> None:
        # The flush barrier saw every changelog record sent so far acknowledged, and each was
        # written to RocksDB before it was sent: the local store holds its changelog up to
        # these offsets, so a restart on this disk replays only what came after.
        for (topic, partition), offset in self.outputs.take_offsets().items():
            table = self._changelog_tables.get(topic)
            if table is not None and partition in self._indexed:
                set_persisted_offset(table, partition, offset)

    # -- observability ---------------------------------------------------------------------

    def snapshot(self) -> StreamSnapshot:
        lag: dict[tuple[str, int], int] = {}
        unknown = 0
        consumer = started_consumer(self.app)
        if consumer is not None:
            source = self._sources
            for tp in consumer.assignment():
                if tp.topic not in source:
                    continue
                try:
                    highwater = consumer.highwater(tp)
                except Exception as exc:
                    # Nothing fetched from the partition yet: its lag is unknown, not zero.
                    log.debug("no high watermark for %s[%s] yet: %r", tp.topic, tp.partition, exc)
                    unknown += 1
                    continue
                if highwater is None:
                    unknown += 1
                    continue
                done = self.flushed.get((tp.topic, tp.partition))
                if done is None:
                    done = committed_offset(consumer, tp) or 0
                lag[(tp.topic, tp.partition)] = max(int(highwater) - done, 0)
        partitions = sorted(self._indexed)
        restored = restore_tally(self.app)
        return StreamSnapshot(
            join=self.join.counters,
            sink=self.sink.stats,
            dead_letters=self.processor.dead_letter_counts,
            lag=lag,
            pending_predictions={p: self.join.pending_size(p) for p in partitions},
            early_outcomes={p: self.join.early_size(p) for p in partitions},
            consumed=dict(self.processor.consumed),
            rerouted=dict(self.processor.rerouted),
            buffered_rows=self.sink.buffered_rows,
            lag_unknown_partitions=unknown,
            restored_entries=restored.entries,
            restore_seconds=restored.seconds,
            rocksdb_block_cache_bytes=block_cache_usage_bytes(),
            rocksdb_memtable_bytes=memtable_usage_bytes(),
        )

    async def _metrics_page(self, request: Any) -> Any:
        # faust binds a function page as the view's `get`; this bound method gets the request.
        return self.app.web.text(render_prometheus(self.snapshot()), content_type=CONTENT_TYPE)

    # -- running ---------------------------------------------------------------------------

    async def drain(self) -> None:
        """A graceful stop: take no more input, write what the sink holds and commit it, so
        the partitions' next owner has nothing of it to replay."""
        self._revoking |= self._owned_partitions()
        try:
            await asyncio.wait_for(self.sink.flush(), DRAIN_TIMEOUT_S)
        except Exception as exc:
            # Nothing is lost: uncommitted input is read again by the next owner.
            log.error("flush on stop failed; the next owner replays what is missing: %s", exc)
            return
        try:
            await self.app.commit(None)
        except Exception as exc:
            log.warning("commit on stop failed; the next owner skips what landed: %s", exc)
        log.info("stopped taking input; everything read is in ClickHouse")

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the worker's exit code."""
        worker = DrainingWorker(
            self.app,
            before_stop=self.drain,
            loglevel=self.settings.log_level,
            redirect_stdouts=False,
            override_logging=False,
        )
        HOT_LOOP.apply()
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
        finally:
            self.outputs.close()
        return 0


def _ack_all(events: Sequence[Any]) -> None:
    for event in events:
        event.ack()


def clickhouse_writer(settings: Settings, group: str = "") -> ClickHouseWriter:
    """A writer over the configured ClickHouse (server or embedded endpoint), keeping the
    exactly-once marks of consumer group `group`."""
    # Form-encoded parameters: a replay's look-ups carry thousands of ids, too long for a URL.
    client = clickhouse_client(settings, compress="lz4", form_encode_query_params=True)
    return ClickHouseWriter(client, group)


def restore_consumer(settings: Settings, app_id: str) -> RestoreConsumer:
    """A consumer for reading changelog partitions at given offsets (it never joins a group or
    commits); it is told when a partition ends, and fetches far ahead (closed once restored)."""
    return make_consumer(
        settings,
        f"{app_id}-restore",
        enable_partition_eof=True,
        queued_max_messages_kbytes=32 * 1024,
        max_partition_fetch_bytes=8 * 2**20,
    )


def build_worker(settings: Settings, config: StreamConfig) -> StreamWorker:
    """A worker wired to the real Kafka and ClickHouse of `settings`; PartitionCountError when
    the join's topics disagree on their partition count."""
    outputs = OutputTopics(
        with_client_logging(producer_config(settings, client_id=f"safeloop-{config.worker_name}"))
    )
    writer = clickhouse_writer(settings, app_id_for(settings, config))
    worker = StreamWorker(settings, config, writer, outputs, progress=writer)
    changelogs = [
        table.changelog_topic.get_topic_name()
        for table in (worker.parts.pending, worker.parts.early)
    ]
    try:
        check_join_topics(TopicAdmin.from_settings(settings), settings, changelogs)
    except StreamError:
        outputs.close()
        raise
    return worker


def worker_config(
    index: int,
    web_port: int,
    batch_max: int = 10_000,
    flush_interval_ms: int = 250,
    settings: Settings | None = None,
) -> StreamConfig:
    """The config of worker `index` of a group (its /metrics port is `web_port + index`);
    join windows from `settings` (default: `Settings.from_env()`)."""
    settings = Settings.from_env() if settings is None else settings
    return StreamConfig(
        worker_name=f"worker-{index}",
        web_port=web_port + index,
        batch_max=batch_max,
        sink=SinkConfig(flush_interval_ms=flush_interval_ms),
        windows=JoinWindows.from_settings(settings),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m safeloop.streams.worker`: one worker, configured from env and flags."""
    parser = argparse.ArgumentParser(prog="python -m safeloop.streams.worker")
    parser.add_argument("--worker-index", type=int, default=0)
    parser.add_argument("--web-port", type=int, default=6066)
    parser.add_argument("--batch-max", type=int, default=10_000)
    parser.add_argument("--flush-interval-ms", type=int, default=250)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    config = worker_config(
        args.worker_index, args.web_port, args.batch_max, args.flush_interval_ms, settings
    )
    try:
        worker = build_worker(settings, config)
    except StreamError as exc:
        log.error("%s", exc)
        return 1
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
