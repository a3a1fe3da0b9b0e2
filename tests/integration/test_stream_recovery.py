"""Crash and scale: SIGKILL mid-stream then restart from the changelog on a fresh disk, and two
workers sharing partitions through rebalances; ClickHouse ends with exactly the expected rows."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _stream_harness import (
    Run,
    free_port,
    new_run,
    outcome,
    prediction,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def run(stack: Any) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="stream-run-") as tmp:
        current = new_run(stack.fresh("stream_recovery"), Path(tmp), window_ms=600_000)
        yield current
        current.stop_all()


def joined_counts(run: Run) -> tuple[int, int, int]:
    """(rows after FINAL, distinct (prediction_id, route), rows whose truth matches the id)."""
    row = run.query(
        "SELECT count(), uniqExact(prediction_id, route), "
        "countIf(ground_truth = toFloat64(toUInt32(substring(prediction_id, 3)) % 2)) "
        "FROM feedback FINAL WHERE status = 'joined'"
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


@pytest.mark.parametrize("partitioner", ["murmur2_random", "consistent_random"])
def test_sigkill_mid_stream_then_restart_restores_state_with_exact_rows(
    run: Run, partitioner: str
) -> None:
    # consistent_random: most records are re-routed, and the kill lands amid re-routes too.
    run.partitioner = partitioner
    total = 6_000
    for i in range(total):
        run.send_prediction(prediction(f"k-{i}"))
    run.flush()
    run.start_worker(0, free_port())
    # Outcomes for the first half flow while the worker is killed.
    half = total // 2

    def first_half() -> None:
        for i in range(half):
            run.send_outcome(outcome(f"k-{i}", truth=float(i % 2)))
            if i % 500 == 0:
                run.flush()
                time.sleep(0.05)
        run.flush()

    sender = threading.Thread(target=first_half)
    sender.start()
    assert wait_for(lambda: joined_counts(run)[0] >= 300, 120), run.worker_log("worker-0")
    run.kill_worker("worker-0", signal.SIGKILL)
    sender.join()
    killed_at = joined_counts(run)[0]
    assert killed_at < total
    # A new worker on a fresh data directory: the join state can only come from the changelogs.
    run.start_worker(1, free_port())
    for i in range(half, total):
        run.send_outcome(outcome(f"k-{i}", truth=float(i % 2)))
    run.flush()
    assert wait_for(lambda: joined_counts(run)[0] >= total, 180), run.worker_log("worker-1")
    time.sleep(1.0)  # anything doubled would have landed by now
    assert joined_counts(run) == (total, total, total)
    assert run.count("SELECT count() FROM outcomes FINAL") == total
    assert run.count("SELECT count() FROM predictions FINAL") == total
    assert run.count("SELECT count() FROM feedback FINAL WHERE status != 'joined'") == 0


def test_two_workers_share_partitions_and_a_rebalance_loses_and_doubles_nothing(run: Run) -> None:
    total = 8_000
    run.start_worker(0, free_port())
    stop = threading.Event()

    def produce() -> None:
        for i in range(total):
            run.send_prediction(prediction(f"r-{i}"))
            if i >= 200:
                j = i - 200
                run.send_outcome(outcome(f"r-{j}", truth=float(j % 2)))
            if i % 400 == 0:
                run.flush()
                time.sleep(0.1)
        for j in range(total - 200, total):
            run.send_outcome(outcome(f"r-{j}", truth=float(j % 2)))
        run.flush()
        stop.set()

    sender = threading.Thread(target=produce)
    sender.start()
    assert wait_for(lambda: joined_counts(run)[0] >= 500, 120), run.worker_log("worker-0")
    run.start_worker(1, free_port())  # rebalance while events flow
    time.sleep(6)
    run.kill_worker("worker-0", signal.SIGTERM)  # and another, handing everything to worker-1
    sender.join()
    assert stop.is_set()
    assert wait_for(lambda: joined_counts(run)[0] >= total, 180), run.worker_log("worker-1")
    time.sleep(1.0)
    assert joined_counts(run) == (total, total, total)
    assert run.count("SELECT count() FROM outcomes FINAL") == total
