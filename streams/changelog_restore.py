"""Table recovery read through librdkafka: the changelog partitions a worker must restore are
read with a confluent-kafka consumer (no group, explicit offsets) and written into their RocksDB
databases chunk by chunk, each chunk one WriteBatch carrying the offset it reached.

faust reads changelogs with aiokafka, whose Python fetcher and consumer thread cost about as
much CPU per entry as the RocksDB write itself (README, "Stream join, side by side"); librdkafka
fetches and parses in C. This path only speeds recovery up: whatever it has not restored when it
stops (its time budget, an error, a rebalance cancelling it) faust's own recovery reads on from
the offset written, so an entry is never lost or applied out of order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

import rocksdict
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

# Records per consume call: large enough that Python's per-call cost vanishes, small enough
# that the event loop (the worker's /metrics) is never held for long.
CHUNK_RECORDS = 20_000


# While a restore writes, a database compacts its level-0 files only once it has many: the
# default (4) makes every few memtable flushes rewrite all of level 1, which holds random keys
# over the whole range, about as much background CPU as the writes themselves. Level 0 is
# compacted once the restore is done (RocksDB's defaults, which the store's options keep).
BULK_LOAD_OPTIONS = {
    "level0_file_num_compaction_trigger": "64",
    "level0_slowdown_writes_trigger": "128",
    "level0_stop_writes_trigger": "256",
}
DEFAULT_OPTIONS = {
    "level0_file_num_compaction_trigger": "4",
    "level0_slowdown_writes_trigger": "20",
    "level0_stop_writes_trigger": "36",
}


class PartitionDB(Protocol):
    """One partition's RocksDB database (rocksdict.Rdict)."""

    def write(self, write_batch: rocksdict.WriteBatch) -> None: ...

    def set_options(self, options: dict[str, str]) -> None: ...


class RestoreConsumer(Protocol):
    """What the restore needs of a confluent-kafka Consumer."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...

    def close(self) -> None: ...


@dataclass
class RestoreTarget:
    """A changelog partition to restore from `next_offset` up to `last_offset` (included) into
    `db`, whose record under `offset_key` says which offset it holds everything up to."""

    topic: str
    partition: int
    next_offset: int
    last_offset: int
    db: PartitionDB
    offset_key: bytes

    @property
    def remaining(self) -> int:
        return max(self.last_offset - self.next_offset + 1, 0)


def write_restored(
    db: PartitionDB,
    offset_key: bytes,
    records: Iterable[tuple[bytes, bytes | None]],
    last_offset: int,
) -> None:
    """Write changelog `records` (key, value; None deletes) into `db` with `last_offset` as
    its restored offset, in one atomic WriteBatch (faust writes the offset separately)."""
    batch = rocksdict.WriteBatch(raw_mode=True)
    for key, value in records:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    batch.put(offset_key, str(last_offset).encode())
    db.write(batch)


async def restore_partitions(
    consumer: RestoreConsumer,
    targets: Sequence[RestoreTarget],
    *,
    budget_s: float,
    on_written: Callable[[int], None] = lambda entries: None,
    poll_timeout_s: float = 0.2,
    idle_limit_s: float = 10.0,
    clock: Callable[[], float] = monotonic,
) -> dict[tuple[str, int], int]:
    """Read every target up to its last offset, or until `budget_s` has passed, nothing came
    for `idle_limit_s` or the consumer failed; the last offset written per (topic, partition).
    Yields to the event loop between chunks, so a cancelled restore stops there (everything
    written stays consistent)."""
    pending = {(t.topic, t.partition): t for t in targets if t.remaining > 0}
    written: dict[tuple[str, int], int] = {}
    if not pending:
        return written
    dbs = [t.db for t in pending.values()]
    starts = [TopicPartition(t.topic, t.partition, t.next_offset) for t in pending.values()]
    heard = clock()
    deadline = heard + budget_s
    for db in dbs:
        db.set_options(BULK_LOAD_OPTIONS)
    try:
        while pending and clock() < deadline:
            try:
                if starts:
                    consumer.assign(starts)
                    starts = []
                messages = consumer.consume(CHUNK_RECORDS, poll_timeout_s)
            except KafkaException as exc:
                log.warning("changelog restore stopped, recovery reads on through faust: %s", exc)
                break
            now = clock()
            if messages:
                heard = now
            elif now - heard > idle_limit_s:
                log.warning(
                    "changelog restore heard nothing for %.0f s, recovery reads on through faust",
                    now - heard,
                )
                break
            failed = _write_chunk(messages, pending, written, on_written)
            if failed is not None:
                log.warning(
                    "changelog restore stopped, recovery reads on through faust: %s", failed
                )
                break
            await asyncio.sleep(0)
    finally:
        for db in dbs:
            _compact_level0_again(db)
    return written


def _compact_level0_again(db: PartitionDB) -> None:
    try:
        db.set_options(DEFAULT_OPTIONS)
    except rocksdict.DbClosedError as exc:
        # A rebalance cancelling the restore may have closed the database meanwhile; a
        # database opened again starts from the store's own options.
        log.debug("level-0 compaction not restored on a closed database: %s", exc)


def _write_chunk(
    messages: Sequence[Message],
    pending: dict[tuple[str, int], RestoreTarget],
    written: dict[tuple[str, int], int],
    on_written: Callable[[int], None],
) -> KafkaError | None:
    """Write one consume call's records per partition; the first error met (after writing
    what came before it), or None."""
    by_partition: dict[tuple[str, int], list[Message]] = {}
    ended: set[tuple[str, int]] = set()
    failed: KafkaError | None = None
    for message in messages:
        key = (message.topic() or "", message.partition() or 0)
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                # The end, short of the last offset (transaction markers, say): nothing to wait for.
                ended.add(key)
                continue
            failed = error
            break
        if key in pending:
            by_partition.setdefault(key, []).append(message)
    for key, records in by_partition.items():
        target = pending[key]
        wanted = _up_to(records, target.last_offset)
        if wanted:
            last = wanted[-1].offset()
            assert last is not None
            write_restored(target.db, target.offset_key, _pairs(wanted), last)
            written[key] = last
            target.next_offset = last + 1
            on_written(len(wanted))
        if target.remaining == 0:
            ended.add(key)
    for key in ended:
        pending.pop(key, None)
    return failed


def _up_to(records: list[Message], last_offset: int) -> list[Message]:
    tail = records[-1].offset()
    if tail is not None and tail <= last_offset:
        return records
    return [m for m in records if (m.offset() or 0) <= last_offset]


def _pairs(records: Iterable[Message]) -> Iterable[tuple[bytes, bytes | None]]:
    for message in records:
        yield message.key(), message.value()  # type: ignore[misc]


def total_remaining(targets: Iterable[RestoreTarget]) -> int:
    """Entries (offsets) the targets have left to restore."""
    return sum(t.remaining for t in targets)
