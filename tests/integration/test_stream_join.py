"""The stream worker against the real broker and ClickHouse endpoint: pairs, expiry, late labels,
duplicates, corrections and dead letters."""

from __future__ import annotations

import math
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _stream_harness import (
    Run,
    free_port,
    new_run,
    now_ms,
    outcome,
    prediction,
    wait_for,
)

from safeloop.infra.prometheus_scrape import scrape_total
from safeloop.schemas.codec import DEAD_LETTER_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import Route

pytestmark = pytest.mark.integration

FAST_MODEL = "fastexpiry"
FAST_WINDOW_MS = 3_000


@pytest.fixture(scope="module")
def run(stack: Any) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="stream-run-") as tmp:
        current = new_run(stack.fresh("stream"), Path(tmp), window_ms=600_000)
        current.env["SAFELOOP_JOIN_WINDOWS"] = f"{FAST_MODEL}={FAST_WINDOW_MS}"
        port = free_port()
        current.start_worker(0, port)
        current.metrics_port = port
        yield current
        current.stop_all()


def feedback(run: Run, pid: str) -> list[tuple[object, ...]]:
    return run.query(
        "SELECT route, status, ground_truth, model_version FROM feedback FINAL "
        f"WHERE prediction_id = '{pid}' ORDER BY route"
    )


def test_in_order_and_out_of_order_pairs(run: Run) -> None:
    run.send_prediction(prediction("in-order-1"))
    run.flush()
    run.send_outcome(outcome("in-order-1", truth=1.0))
    run.send_outcome(outcome("out-of-order-1", truth=0.0))
    run.flush()
    run.send_prediction(prediction("out-of-order-1"))
    run.flush()
    assert wait_for(lambda: feedback(run, "in-order-1") and feedback(run, "out-of-order-1"), 90), (
        run.worker_log("worker-0")
    )
    assert feedback(run, "in-order-1") == [("production", "joined", 1.0, "v1")]
    assert feedback(run, "out-of-order-1") == [("production", "joined", 0.0, "v1")]
    row = run.query(
        "SELECT label_delay_ms >= 0, features['age'], model_name, replica_id FROM feedback FINAL "
        "WHERE prediction_id = 'in-order-1'"
    )
    assert row == [(True, 41.0, "churn", "replica-a")]


def test_an_outcome_pairs_with_every_route_of_a_prediction_id(run: Run) -> None:
    run.send_prediction(prediction("routes-1", route=Route.PRODUCTION, version="v1"))
    run.send_prediction(prediction("routes-1", route=Route.SHADOW, version="v2"))
    run.flush()
    run.send_outcome(outcome("routes-1", truth=1.0))
    run.flush()
    assert wait_for(lambda: len(feedback(run, "routes-1")) == 2, 60)
    assert feedback(run, "routes-1") == [
        ("production", "joined", 1.0, "v1"),
        ("shadow", "joined", 1.0, "v2"),
    ]


def test_unmatched_prediction_expires_and_a_late_label_is_paired_by_the_view(run: Run) -> None:
    run.send_prediction(prediction("expire-1", model=FAST_MODEL))
    run.flush()
    assert wait_for(lambda: feedback(run, "expire-1"), 60)
    assert feedback(run, "expire-1") == [("production", "expired", None, "v1")]
    # The window is closed: the outcome lands in `outcomes`, and feedback_late pairs it.
    run.send_outcome(outcome("expire-1", truth=1.0))
    run.flush()
    late = "SELECT status, ground_truth FROM feedback_late WHERE prediction_id = 'expire-1'"
    assert wait_for(lambda: run.query(late), 60)
    assert run.query(late) == [("late", 1.0)]
    assert feedback(run, "expire-1") == [("production", "expired", None, "v1")]


def test_duplicates_give_one_row_and_corrections_keep_the_newest(run: Run) -> None:
    event = prediction("dup-1")
    base_ts = now_ms() - 10_000
    for _ in range(3):
        run.send_prediction(event)
    run.flush()
    first = outcome("dup-1", ts=base_ts, truth=0.0)
    run.send_outcome(first)
    run.send_outcome(first)
    run.flush()
    assert wait_for(lambda: feedback(run, "dup-1"), 60)
    run.send_outcome(outcome("dup-1", ts=base_ts + 5_000, truth=1.0))
    run.flush()
    assert wait_for(lambda: feedback(run, "dup-1") == [("production", "joined", 1.0, "v1")], 60)
    # A stale correction (older than the one kept) changes nothing.
    run.send_outcome(outcome("dup-1", ts=base_ts + 1_000, truth=7.0))
    run.flush()
    stale = "SELECT count() FROM outcomes FINAL WHERE prediction_id = 'dup-1'"
    assert wait_for(lambda: run.count(stale) == 3, 60)
    assert feedback(run, "dup-1") == [("production", "joined", 1.0, "v1")]
    assert run.count("SELECT count() FROM predictions FINAL WHERE prediction_id = 'dup-1'") == 1


def test_each_kind_of_bad_input_becomes_a_counted_dead_letter(run: Run) -> None:
    good = prediction("dl-good")
    encoded = PREDICTION_CODEC.encode(good)
    bad: dict[str, tuple[bytes | None, bytes]] = {
        "undecodable": (b"dl-1", b"\x00not avro at all"),
        "unknown-schema": (b"dl-2", b"\xc3\x01" + b"\x42" * 8 + b"\x00\x00"),
        "truncated": (b"dl-3", encoded[:20]),
        "empty-id": (b"", PREDICTION_CODEC.encode(replace(good, prediction_id=""))),
        "nan": (
            b"dl-5",
            PREDICTION_CODEC.encode(replace(good, prediction_id="dl-5", prediction=math.nan)),
        ),
        "inf": (
            b"dl-6",
            PREDICTION_CODEC.encode(replace(good, prediction_id="dl-6", prediction=math.inf)),
        ),
        "negative-latency": (
            b"dl-7",
            PREDICTION_CODEC.encode(replace(good, prediction_id="dl-7", latency_ms=-5.0)),
        ),
        "future": (
            b"dl-8",
            PREDICTION_CODEC.encode(
                replace(good, prediction_id="dl-8", timestamp=now_ms() + 86_400_000)
            ),
        ),
    }
    for key, value in bad.values():
        run.produce(run.topics.predictions, key, value)
    run.produce(run.topics.outcomes, b"dl-9", b"garbage outcome")
    run.flush()
    letters = [
        DEAD_LETTER_CODEC.decode(m.value())
        for m in run.consume_all(run.topics.dead_letter, len(bad) + 1, timeout_s=90)
    ]
    by_value = {letter.value: letter for letter in letters}
    expected_reason = {
        "undecodable": "bad_marker",
        "unknown-schema": "unknown_fingerprint",
        "truncated": "malformed_body",
        "empty-id": "invalid_field",
        "nan": "invalid_field",
        "inf": "invalid_field",
        "negative-latency": "invalid_field",
        "future": "invalid_field",
    }
    for kind, (key, value) in bad.items():
        letter = by_value.get(value)
        assert letter is not None, f"no dead letter for {kind}"
        assert letter.error_type == expected_reason[kind], (kind, letter.reason)
        assert letter.key == key
        assert letter.source_topic == run.topics.predictions
        assert letter.source_offset >= 0
    assert by_value[b"garbage outcome"].source_topic == run.topics.outcomes
    # The stream goes on, and the dead letters are counted and stored.
    assert wait_for(lambda: run.count("SELECT count() FROM dead_letters FINAL") >= len(bad) + 1, 30)
    port = run.metrics_port
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("safeloop_dead_letters_total{")
    )
    assert total >= len(bad) + 1
    for name in ("safeloop_stream_lag{", "safeloop_join_pending{", "safeloop_join_expired_total"):
        assert name in metrics


def metric_total(run: Run, name: str) -> float:
    """The sum of every sample of `name` on the worker's /metrics."""
    return scrape_total(f"http://127.0.0.1:{run.metrics_port}/metrics", name, 10.0)


def test_an_outcome_after_its_window_is_counted_late_stored_and_not_parked(run: Run) -> None:
    run.send_prediction(prediction("late-1", model=FAST_MODEL))
    run.flush()
    assert wait_for(lambda: feedback(run, "late-1"), 60)
    late_before = metric_total(run, "safeloop_join_late_outcomes_total")
    parked_before = metric_total(run, "safeloop_join_early_outcomes_total")
    run.send_outcome(outcome("late-1", truth=1.0))
    run.flush()
    stored = "SELECT count() FROM outcomes WHERE prediction_id = 'late-1'"
    assert wait_for(lambda: run.count(stored) == 1, 60)
    assert wait_for(
        lambda: metric_total(run, "safeloop_join_late_outcomes_total") == late_before + 1, 30
    )
    assert metric_total(run, "safeloop_join_early_outcomes_total") == parked_before
    assert feedback(run, "late-1") == [("production", "expired", None, "v1")]


def test_a_late_correction_with_the_same_timestamp_shows_in_feedback_late(run: Run) -> None:
    predicted_at = now_ms()
    run.send_prediction(prediction("late-fix-1", model=FAST_MODEL, ts=predicted_at))
    run.flush()
    labelled_at = predicted_at + 1_000
    run.send_outcome(outcome("late-fix-1", ts=labelled_at, truth=1.0))
    run.flush()
    assert wait_for(
        lambda: feedback(run, "late-fix-1") == [("production", "joined", 1.0, "v1")], 60
    )
    # The window has closed; the correction keeps the label's timestamp.
    assert wait_for(lambda: now_ms() > predicted_at + FAST_WINDOW_MS + 200, 10)
    run.send_outcome(outcome("late-fix-1", ts=labelled_at, truth=0.0))
    run.flush()
    late = "SELECT status, ground_truth FROM feedback_late WHERE prediction_id = 'late-fix-1'"
    assert wait_for(lambda: run.query(late) == [("late", 0.0)], 60), run.query(late)
    assert feedback(run, "late-fix-1") == [("production", "joined", 1.0, "v1")]


def test_a_prediction_re_sent_with_a_new_timestamp_keeps_one_row_the_first(run: Run) -> None:
    """A client retrying by rebuilding its event: same prediction_id and route, a later
    timestamp and value. One `predictions` row, counted without FINAL, and it is the first,
    the one feedback pairs; whether the re-send comes in a later batch or in the same one."""
    base = now_ms() - 20_000
    run.send_prediction(prediction("resend-later", ts=base, value=0.25))
    run.flush()
    stored = "SELECT count() FROM predictions WHERE prediction_id = 'resend-later'"
    assert wait_for(lambda: run.count(stored) == 1, 60)
    run.send_prediction(prediction("resend-later", ts=base + 1_000, value=0.75))
    run.send_prediction(prediction("resend-same-batch", ts=base, value=0.25))
    run.send_prediction(prediction("resend-same-batch", ts=base + 1_000, value=0.75))
    run.flush()
    # Outcomes follow the re-sends on their partitions: once they are paired, the re-sends
    # have been through the join and their batches flushed.
    for pid in ("resend-later", "resend-same-batch"):
        run.send_outcome(outcome(pid, ts=base + 2_000, truth=1.0))
    run.flush()
    assert wait_for(
        lambda: feedback(run, "resend-later") and feedback(run, "resend-same-batch"), 60
    )
    for pid in ("resend-later", "resend-same-batch"):
        rows = run.query(
            "SELECT toUnixTimestamp64Milli(timestamp), prediction FROM predictions "
            f"WHERE prediction_id = '{pid}'"
        )
        assert rows == [(base, 0.25)], pid
        paired = run.query(
            "SELECT toUnixTimestamp64Milli(prediction_timestamp), prediction FROM feedback "
            f"WHERE prediction_id = '{pid}'"
        )
        assert paired == [(base, 0.25)], pid
