"""The restart rows of bench.stream_join: a worker with N pending predictions restarted on the
same disk (it resumes from its RocksDB store and the changelog offsets it recorded), then on a
fresh disk (it restores the compacted changelog).

"Ready" is the time from starting the worker process until a probe prediction produced at that
moment is a queryable row in ClickHouse with every pending prediction indexed, i.e. the worker
joins again; restore speed is changelog entries (pending predictions) over that time.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Any

from safeloop.schemas.codec import PREDICTION_CODEC

if TYPE_CHECKING:
    from bench.stream_join import Bench, Phase

PENDING = "safeloop_join_pending"
RESTORED = "safeloop_stream_restored_entries_total"
RESTORE_SECONDS = "safeloop_stream_restore_seconds_total"
LAG = "safeloop_stream_lag"
CONSUMED = "safeloop_stream_consumed_total"
# Two of the workers' commit intervals (StreamConfig.commit_interval_ms).
COMMIT_WAIT_S = 2.0


def _fill(bench: Bench, phase: Phase, pending: int) -> float:
    from bench.stream_join import make_prediction, now_ms

    topics = phase.settings.topics
    ts = now_ms()
    for i in range(pending):
        p = make_prediction(i, ts)
        bench.produce(topics.predictions, p.prediction_id.encode(), PREDICTION_CODEC.encode(p))
    bench.producer.flush(300)
    started = time.monotonic()
    deadline = started + 3600
    while time.monotonic() < deadline and phase.metric(PENDING) < pending:
        time.sleep(0.5)
    # Caught up: every prediction's row is in ClickHouse and its offset marked done; then
    # faust's commit timer (1 s) commits, so the restarts below measure restoring the state,
    # not replaying a backlog the worker had not flushed when it was stopped.
    while time.monotonic() < deadline and phase.metric(LAG) > 0:
        time.sleep(0.5)
    time.sleep(COMMIT_WAIT_S)
    return time.monotonic() - started


def _ready(bench: Bench, phase: Phase, pending: int, probe: int) -> dict[str, Any]:
    """Start the worker; seconds until its /metrics answer (Python and faust start-up) and until
    it indexed `pending` and joined a fresh probe, the changelog entries it restored and the
    seconds its recovery took, and the source events it read again (its /metrics)."""
    from bench.stream_join import make_prediction, now_ms

    topics = phase.settings.topics
    started = time.monotonic()
    phase.start_workers(1)
    p = make_prediction(10**10 + probe, now_ms())
    bench.produce(topics.predictions, p.prediction_id.encode(), PREDICTION_CODEC.encode(p))
    bench.producer.flush(30)
    sql = f"SELECT count() FROM predictions WHERE prediction_id = '{p.prediction_id}'"
    deadline = started + 1800
    answering: float | None = None
    while time.monotonic() < deadline:
        if answering is None and phase.answering():
            answering = time.monotonic() - started
        if phase.metric(PENDING) >= pending + probe + 1 and phase.count(sql) > 0:
            break
        time.sleep(0.1)
    ready_s = time.monotonic() - started
    return {
        "ready_s": ready_s,
        # Less noisy than wall time on a shared machine: the worker's CPU until ready, by
        # thread (aiokafka's consumer thread, which fetches the changelog, is "other_threads").
        "cpu_s": phase.cpu_seconds(),
        "cpu_by_thread": phase.cpu_seconds_by_thread(),
        "answering_s": ready_s if answering is None else answering,
        "restored": phase.metric(RESTORED),
        "restore_s": phase.metric(RESTORE_SECONDS),
        # The probe, and whatever the stopped worker had not committed.
        "consumed": phase.metric(CONSUMED),
    }


def restart(bench: Bench, pending: int) -> dict[str, Any]:
    phase = bench.phase("restart")
    phase.start_workers(1)
    fill_s = _fill(bench, phase, pending)
    phase.stop_workers()
    phase.workers.clear()
    phase.ports.clear()
    same = _ready(bench, phase, pending, 0)
    phase.stop_workers()
    phase.workers.clear()
    phase.ports.clear()
    shutil.rmtree(phase.state_dir / "streams")
    fresh = _ready(bench, phase, pending, 1)
    phase.stop_workers()
    restored, restore_s = fresh["restored"], fresh["restore_s"]
    return {
        "pending_predictions": pending,
        "fill_seconds": round(fill_s, 1),
        "same_disk_ready_seconds": round(same["ready_s"], 2),
        "same_disk_metrics_answering_seconds": round(same["answering_s"], 2),
        "same_disk_restored_entries": int(same["restored"]),
        "same_disk_source_events_read": int(same["consumed"]),
        "same_disk_worker_cpu_seconds": round(same["cpu_s"], 2),
        "same_disk_worker_cpu_seconds_by_thread": same["cpu_by_thread"],
        "fresh_disk_ready_seconds": round(fresh["ready_s"], 2),
        "fresh_disk_metrics_answering_seconds": round(fresh["answering_s"], 2),
        "fresh_disk_entries_per_second": round(pending / fresh["ready_s"]),
        "fresh_disk_restored_entries": int(restored),
        "fresh_disk_restore_seconds": round(restore_s, 2),
        "fresh_disk_restore_entries_per_second": round(restored / restore_s) if restore_s else None,
        "fresh_disk_source_events_read": int(fresh["consumed"]),
        "fresh_disk_worker_cpu_seconds": round(fresh["cpu_s"], 2),
        "fresh_disk_worker_cpu_seconds_by_thread": fresh["cpu_by_thread"],
        "fresh_disk_worker_cpu_us_per_entry": round(fresh["cpu_s"] * 1e6 / pending, 1),
        "note": "ready: process start until every pending prediction is indexed and a probe "
        "prediction produced at start is queryable (includes Python start-up and the group "
        "join); metrics answering: process start until its /metrics answer (Python imports "
        "and faust's start-up, before the group join); restore: the worker's own figures, from "
        "the start of table recovery to its last changelog entry written; source events read: "
        "the probe plus what the stopped worker had not committed (the fill waits until the "
        "worker caught up and committed)",
    }
