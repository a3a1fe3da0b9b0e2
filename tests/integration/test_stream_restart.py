"""Restarts and rebalances of the batched join: a worker restarted on its own disk resumes from
its RocksDB store (the changelog offsets it recorded), and two workers going through repeated
rebalances while events flow never stall in recovery and end with exactly the expected rows."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from _stream_harness import Run, free_port, new_run, outcome, prediction, wait_for
from confluent_kafka import TopicPartition

from safeloop.infra.kafka.clients import make_consumer
from safeloop.infra.prometheus_scrape import scrape_total

pytestmark = pytest.mark.integration

OFFSET_KEY = b"__faust\0offset__"


@pytest.fixture
def run(stack: Any) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="stream-restart-") as tmp:
        current = new_run(stack.fresh("stream_restart"), Path(tmp), window_ms=600_000)
        yield current
        current.stop_all()


def joined_counts(run: Run) -> tuple[int, int]:
    row = run.query(
        "SELECT count(), uniqExact(prediction_id, route) FROM feedback FINAL "
        "WHERE status = 'joined'"
    )[0]
    return int(row[0]), int(row[1])


def persisted_offsets(run: Run, worker: str) -> dict[int, int]:
    """The changelog offset each pending-predictions partition database says it holds."""
    offsets: dict[int, int] = {}
    for path in (run.state_dir / "streams" / worker).rglob("pending-predictions-*.db"):
        partition = int(path.name.removesuffix(".db").rsplit("-", 1)[1])
        db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
        try:
            raw = db.get(OFFSET_KEY)
        finally:
            db.close()
        if raw is not None:
            offsets[partition] = int(raw)
    return offsets


def changelog_ends(run: Run) -> dict[int, int]:
    """The last offset of each partition of the pending-predictions changelog."""
    topic = f"{run.settings.topic_prefix}safeloop-streams-pending-predictions-changelog"
    consumer = make_consumer(run.settings, f"{run.settings.topic_prefix}restart-probe")
    try:
        ends = {}
        for partition in range(run.settings.partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high > 0:
                ends[partition] = high - 1
        return ends
    finally:
        consumer.close()


def fill_then_stop(run: Run, prefix: str, total: int) -> None:
    """Worker 0 stores `total` pending predictions, records their changelog offsets, stops."""
    run.start_worker(0, free_port())
    for i in range(total):
        run.send_prediction(prediction(f"{prefix}-{i}"))
    run.flush()
    assert wait_for(lambda: run.count("SELECT count() FROM predictions") >= total, 180), (
        run.worker_log("worker-0")
    )
    time.sleep(1.5)  # a flush barrier after the last write records its offset
    run.kill_worker("worker-0", signal.SIGTERM)


def outcomes_join_every_prediction(run: Run, prefix: str, total: int) -> None:
    """An outcome for each of the `total` predictions; each joins its prediction once."""
    for i in range(total):
        run.send_outcome(outcome(f"{prefix}-{i}", truth=float(i % 2)))
    run.flush()
    assert wait_for(lambda: joined_counts(run)[0] >= total, 180), run.worker_log("worker-0")
    time.sleep(1.0)
    assert joined_counts(run) == (total, total)
    assert run.count("SELECT count() FROM feedback FINAL WHERE status != 'joined'") == 0


def test_a_worker_restarted_on_its_disk_resumes_from_its_store(run: Run) -> None:
    fill_then_stop(run, "d", 3_000)
    # The store holds the whole changelog: a restart replays nothing before these offsets.
    ends = changelog_ends(run)
    assert ends
    assert persisted_offsets(run, "worker-0") == ends
    run.start_worker(0, free_port())  # the same index: the same data directory
    outcomes_join_every_prediction(run, "d", 3_000)


def worker_metric(port: int, name: str) -> float:
    """Counter `name` of the worker on `port` (0 until its /metrics answers)."""
    try:
        return scrape_total(f"http://127.0.0.1:{port}/metrics", name, 5.0)
    except OSError:
        return 0.0


def consumed(port: int) -> float:
    """Records the worker on `port` consumed (0 until its /metrics answers)."""
    return worker_metric(port, "safeloop_stream_consumed_total")


def test_a_worker_stopped_with_sigterm_flushes_what_it_holds_before_it_exits(run: Run) -> None:
    total = 500
    port = free_port()
    # A flush interval no test waits out: only the stop itself can write these rows.
    run.start_worker(0, port, flush_interval_ms=600_000)
    for i in range(total):
        run.send_prediction(prediction(f"t-{i}"))
    run.flush()
    assert wait_for(lambda: consumed(port) >= total, 120), run.worker_log("worker-0")
    assert run.count("SELECT count() FROM predictions") == 0, "held by the sink, not written"
    run.kill_worker("worker-0", signal.SIGTERM)
    # Nobody else runs: the rows are in ClickHouse because the stopping worker wrote them.
    assert run.count("SELECT count() FROM predictions") == total, run.worker_log("worker-0")


def test_repeated_rebalances_during_load_never_stall_recovery(run: Run) -> None:
    # The conditions of the recovery stall once seen with the fetch hand-off: two workers,
    # partitions moving back and forth while predictions, outcomes and changelogs flow.
    total = 9_000
    run.start_worker(0, free_port())
    done = threading.Event()

    def produce() -> None:
        for i in range(total):
            run.send_prediction(prediction(f"s-{i}"))
            if i >= 300:
                j = i - 300
                run.send_outcome(outcome(f"s-{j}", truth=float(j % 2)))
            if i % 300 == 0:
                run.flush()
                time.sleep(0.1)
        for j in range(total - 300, total):
            run.send_outcome(outcome(f"s-{j}", truth=float(j % 2)))
        run.flush()
        done.set()

    sender = threading.Thread(target=produce)
    sender.start()
    assert wait_for(lambda: joined_counts(run)[0] >= 300, 120), run.worker_log("worker-0")
    for cycle in range(3):
        run.start_worker(1, free_port())  # rebalance: worker-1 takes half, restoring it
        time.sleep(4)
        run.kill_worker("worker-1", signal.SIGKILL if cycle % 2 else signal.SIGTERM)
        time.sleep(2)
    sender.join()
    assert done.is_set()
    # Whatever moved, everything joins: recovery did not stall.
    assert wait_for(lambda: joined_counts(run)[0] >= total, 240), run.worker_log("worker-0")
    time.sleep(1.0)
    assert joined_counts(run) == (total, total)
    assert run.count("SELECT count() FROM outcomes FINAL") == total


def test_a_worker_restarted_on_a_fresh_disk_restores_its_store_through_librdkafka(
    run: Run,
) -> None:
    # More pending entries than faust_adapter.BULK_RESTORE_MIN_ENTRIES, so the changelog is read
    # through librdkafka (changelog_restore) rather than faust's own recovery.
    total = 12_000
    fill_then_stop(run, "f", total)
    ends = changelog_ends(run)
    assert sum(end + 1 for end in ends.values()) >= total
    shutil.rmtree(run.state_dir / "streams" / "worker-0")
    port = free_port()
    run.start_worker(0, port)
    assert wait_for(
        lambda: worker_metric(port, "safeloop_stream_restored_entries_total") >= total, 120
    ), run.worker_log("worker-0")
    assert "through librdkafka" in run.worker_log("worker-0")
    # Every outcome joins a prediction it finds only in the restored store: the predictions'
    # offsets were committed before the stop, so none is read again.
    outcomes_join_every_prediction(run, "f", total)
    assert run.count("SELECT count() FROM predictions") == total
