"""Crash and scale: SIGKILL mid-stream then restart from the changelog on a fresh disk, and two
workers sharing partitions through rebalances; ClickHouse ends with exactly the expected rows."""

from __future__ import annotations

import os
import random
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

from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC

pytestmark = pytest.mark.integration


@pytest.fixture
def run(stack: Any) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="stream-run-") as tmp:
        current = new_run(stack.fresh("stream_recovery"), Path(tmp), window_ms=600_000)
        yield current
        current.stop_all()


def counts_without_final(run: Run) -> dict[str, int]:
    """What a reader without FINAL sees: every table's rows and the dashboard's aggregates."""
    feedback = run.query(
        "SELECT count(), countIf(status = 'joined'), countIf(status = 'expired'), "
        "uniqExact(prediction_id, route, status) FROM feedback"
    )[0]
    minutes = run.query("SELECT sum(requests), sum(labelled) FROM serving_minutes")[0]
    hours = run.query("SELECT sum(requests), sum(labelled) FROM serving_hours_agg")[0]
    return {
        "predictions": run.count("SELECT count() FROM predictions"),
        "outcomes": run.count("SELECT count() FROM outcomes"),
        "dead_letters": run.count("SELECT count() FROM dead_letters"),
        "feedback": int(feedback[0]),
        "feedback_joined": int(feedback[1]),
        "feedback_expired": int(feedback[2]),
        "feedback_distinct": int(feedback[3]),
        "minute_requests": int(minutes[0] or 0),
        "minute_labelled": int(minutes[1] or 0),
        "hour_requests": int(hours[0] or 0),
        "hour_labelled": int(hours[1] or 0),
    }


def feedback_rows(run: Run) -> int:
    """Rows in `feedback` as a reader without FINAL counts them (cheap: parts' row counts)."""
    return run.count("SELECT count() FROM feedback")


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
    # The rebalances' replays (flushed on revoke, checked on assignment) doubled nothing.
    seen = counts_without_final(run)
    assert (seen["predictions"], seen["outcomes"], seen["feedback"]) == (total, total, total)
    assert run.count("SELECT count() FROM predictions FINAL") == total
    assert run.count("SELECT count() FROM feedback FINAL WHERE status != 'joined'") == 0
    # And without FINAL: the replay after the kill inserted only what was missing.
    seen = counts_without_final(run)
    assert (seen["predictions"], seen["outcomes"], seen["feedback"]) == (total, total, total)


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
    # The rebalances' replays (flushed on revoke, checked on assignment) doubled nothing.
    seen = counts_without_final(run)
    assert (seen["predictions"], seen["outcomes"], seen["feedback"]) == (total, total, total)


@pytest.mark.slow
# A few minutes on a quiet machine; generous limits for a loaded one (CI runners, shared cores).
@pytest.mark.timeout(3600)
def test_five_sigkills_at_random_moments_leave_exact_counts_without_final(run: Run) -> None:
    """200,000 pairs (and predictions that expire unlabelled) while the processor is SIGKILLed
    five times at random moments and restarted: every reader without FINAL sees each row once,
    and the dashboard's aggregates count each prediction once."""
    # SAFELOOP_TEST_KILL_PAIRS shrinks the run for a quick local look; the suite runs 200,000.
    pairs = int(os.environ.get("SAFELOOP_TEST_KILL_PAIRS", "200000"))
    unlabelled = max(pairs // 100, 10)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    start_ms = int(time.time() * 1000)
    predictions = [
        (f"x-{i}".encode(), PREDICTION_CODEC.encode(prediction(f"x-{i}", ts=start_ms + i // 100)))
        for i in range(pairs)
    ]
    # Their own model has a short window: they expire (unlabelled) while the kills go on.
    predictions += [
        (
            f"e-{i}".encode(),
            PREDICTION_CODEC.encode(prediction(f"e-{i}", ts=start_ms, model="expiring")),
        )
        for i in range(unlabelled)
    ]
    rng.shuffle(predictions)
    outcomes = [
        (
            f"x-{i}".encode(),
            OUTCOME_CODEC.encode(outcome(f"x-{i}", ts=start_ms + 5_000, truth=float(i % 2))),
        )
        for i in range(pairs)
    ]
    run.env["SAFELOOP_JOIN_WINDOWS"] = "expiring=20000"
    run.start_worker(0, free_port(), batch_max=10_000)
    # Half the outcomes wait for their predictions (early), half come after them.
    half = pairs // 2
    run.send_batch(run.topics.outcomes, outcomes[:half])
    run.send_batch(run.topics.predictions, predictions)
    run.send_batch(run.topics.outcomes, outcomes[half:])
    expected_rows = pairs + unlabelled
    kill_at = sorted(rng.sample(range(expected_rows // 20, expected_rows * 9 // 10), 5))
    kills = 0
    for threshold in kill_at:
        assert wait_for(lambda t=threshold: feedback_rows(run) >= t, 900), (
            seed,
            run.worker_log("worker-0"),
        )
        # A random moment after the threshold: amid a flush, a look-up or a mark write.
        time.sleep(rng.uniform(0.0, 1.5))
        run.kill_worker("worker-0", signal.SIGKILL)
        kills += 1
        run.start_worker(0, free_port(), batch_max=10_000)
    assert kills == 5
    assert wait_for(lambda: feedback_rows(run) >= expected_rows, 900), (
        seed,
        counts_without_final(run),
        run.worker_log("worker-0"),
    )
    # Anything doubled by a late flush would have landed by now.
    time.sleep(2.0)
    seen = counts_without_final(run)
    assert seen == {
        "predictions": expected_rows,
        "outcomes": pairs,
        "dead_letters": 0,
        "feedback": expected_rows,
        "feedback_joined": pairs,
        "feedback_expired": unlabelled,
        "feedback_distinct": expected_rows,
        "minute_requests": expected_rows,
        "minute_labelled": pairs,
        "hour_requests": expected_rows,
        "hour_labelled": pairs,
    }, seed
    # FINAL agrees: nothing was lost either.
    assert joined_counts(run) == (pairs, pairs, pairs)
