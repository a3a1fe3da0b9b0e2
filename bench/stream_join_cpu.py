"""The stream worker's own batch path, without Kafka or ClickHouse: CPU per event.

Decode and validate, route, join over the real RocksDB-backed table stores (changelog sends
counted, not sent), release after each batch as the flush does, encode feedback, build the
three tables' rows and their dedup tokens. What `python -m bench.stream_join` adds on top is
aiokafka's fetch, the producer, the sink's inserts and start-up.
With `--expire`, the two expiry sweeps after it too (joined -> closed -> deleted), beside a
sweep that decodes every entry (what expiry did before it read only entries' headers).
Run: `python -m bench.stream_join_cpu [--pairs N] [--outcomes-first] [--batch N] [--profile]
[--expire]`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import rocksdict

from bench.stream_join import make_outcome, make_prediction
from safeloop.infra.kafka.dead_letters import SourceRecord
from safeloop.schemas.codec import FEEDBACK_CODEC, OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.tables import FEEDBACK, OUTCOMES, PREDICTIONS
from safeloop.streams.join import JoinWindow
from safeloop.streams.processor import BatchProcessor
from safeloop.streams.routing import HomePartitions
from safeloop.streams.state import EarlyOutcome, PendingPrediction
from safeloop.streams.table_store import (
    FaustTableStore,
    decode_early,
    decode_pending,
    encode_early,
    encode_pending,
)
from safeloop.streams.windows import JoinWindows

PARTITIONS = 4
BATCH = 4000


class _Store:
    """What FaustTableStore reads off faust's RocksDB store: a database per partition (the
    same stand-in as tests/unit/test_join_table_batches.py, which cannot import bench/)."""

    offset_key = b"__faust\0offset__"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dbs: dict[int, Any] = {}

    def _db_for_partition(self, partition: int) -> Any:
        if partition not in self.dbs:
            self.dbs[partition] = rocksdict.Rdict(
                str(self.root / str(partition)), rocksdict.Options(raw_mode=True)
            )
        return self.dbs[partition]

    def _visible_items(self, db: Any) -> Any:
        return ((k, v) for k, v in db.items() if k != self.offset_key)


class _Outputs:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, key: Any, value: Any, partition: Any = None) -> None:
        self.sent += 1

    def send_many(self, topic: str, records: Any, partition: Any = None) -> None:
        self.sent += len(records)


def _records(pairs: int, outcomes_first: bool) -> list[SourceRecord]:
    ts = int(time.time() * 1000)
    ids = [make_prediction(i, ts).prediction_id for i in range(pairs)]
    homes = HomePartitions(PARTITIONS).of_many(ids)
    bodies = {
        "p": [PREDICTION_CODEC.encode(make_prediction(i, ts)) for i in range(pairs)],
        "o": [OUTCOME_CODEC.encode(make_outcome(i, ts + 1)) for i in range(pairs)],
    }
    offsets: dict[tuple[str, int], int] = {}

    def record(topic: str, i: int) -> SourceRecord:
        offset = offsets.get((topic, homes[i]), 0)
        offsets[(topic, homes[i])] = offset + 1
        return SourceRecord(topic, homes[i], offset, ids[i].encode(), bodies[topic][i])

    first, second = ("o", "p") if outcomes_first else ("p", "o")
    out = []
    # As bench.stream_join preloads: the second kind trails the first by 1,000 ids.
    for i in range(pairs):
        out.append(record(first, i))
        if i >= 1000:
            out.append(record(second, i - 1000))
    out += [record(second, i) for i in range(max(0, pairs - 1000), pairs)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_join_cpu")
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--outcomes-first", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile report to stdout")
    parser.add_argument("--batch", type=int, default=BATCH, help="records per batch")
    parser.add_argument("--expire", action="store_true", help="time the expiry sweeps too")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-join-cpu-"))
    outputs = _Outputs()

    def table(name: str) -> Any:
        topic = f"{name}-changelog"
        return SimpleNamespace(
            name=name,
            data=_Store(root / name),
            changelog_topic=SimpleNamespace(get_topic_name=lambda: topic),
        )

    clock = lambda: int(time.time() * 1000)  # noqa: E731
    join = JoinWindow(
        FaustTableStore[PendingPrediction](
            table("pending"), encode_pending, decode_pending, outputs
        ),
        FaustTableStore[EarlyOutcome](table("early"), encode_early, decode_early, outputs),
        JoinWindows(),
        clock,
    )
    processor = BatchProcessor(
        join, "p", "o", "bench", clock_ms=clock, repartition_topic="r", partitions=PARTITIONS
    )
    for partition in range(PARTITIONS):
        join.assign(partition)
    records = _records(args.pairs, args.outcomes_first)

    def run() -> None:
        releases: list[Any] = []
        for start in range(0, len(records), args.batch):
            result = processor.process(records[start : start + args.batch])
            # The previous batch's releases, as after its flush.
            join.release(releases)
            releases = result.releases
            outputs.send_many(
                "feedback",
                [(f.prediction_id.encode(), FEEDBACK_CODEC.encode(f)) for f in result.feedback],
            )
            for rows_table, items in (
                (PREDICTIONS, result.predictions),
                (OUTCOMES, result.outcomes),
                (FEEDBACK, result.feedback),
            ):
                rows_table.dedup_token(rows_table.rows(items))

    started = time.process_time()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run()
        profiler.disable()
        pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(30)
    else:
        run()
    cpu = time.process_time() - started
    print(
        f"{len(records)} events, {cpu:.2f} s CPU, {cpu * 1e6 / len(records):.1f} µs per event, "
        f"{outputs.sent} records sent"
    )
    if args.expire:
        _time_expiry(join, args.pairs)
    return 0


def _time_expiry(join: JoinWindow, pairs: int) -> None:
    """CPU per pair of the sweep that closes joined entries and of the one that deletes the
    closed markers (each with its release), and of decoding every entry once (the baseline)."""
    far = int(time.time() * 1000) + 10 * 365 * 86_400_000
    started = time.process_time()
    for partition in range(PARTITIONS):
        for key in join.pending_index.due(partition, far):
            join.pending.get(partition, key)
    decode = time.process_time() - started
    print(f"decoding every entry (the old sweep's reads): {decode * 1e6 / pairs:.1f} µs per pair")
    for sweep in ("joined -> closed", "closed -> deleted"):
        started = time.process_time()
        releases = []
        for partition in range(PARTITIONS):
            out = join.expire(partition, far)
            releases += out.releases
        released = join.release(releases)
        cpu = time.process_time() - started
        print(f"sweep {sweep}: {released} released, {cpu * 1e6 / pairs:.1f} µs per pair")


if __name__ == "__main__":
    sys.exit(main())
