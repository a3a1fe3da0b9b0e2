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
    return time.monotonic() - started


def _ready_s(bench: Bench, phase: Phase, pending: int, probe: int) -> tuple[float, float, float]:
    """Start the worker; seconds until it indexed `pending` and joined a fresh probe, and the
    changelog entries it restored and the seconds its recovery took (its /metrics)."""
    from bench.stream_join import make_prediction, now_ms

    topics = phase.settings.topics
    started = time.monotonic()
    phase.start_workers(1)
    p = make_prediction(10**10 + probe, now_ms())
    bench.produce(topics.predictions, p.prediction_id.encode(), PREDICTION_CODEC.encode(p))
    bench.producer.flush(30)
    sql = f"SELECT count() FROM predictions WHERE prediction_id = '{p.prediction_id}'"
    deadline = started + 1800
    while time.monotonic() < deadline:
        if phase.metric(PENDING) >= pending + probe + 1 and phase.count(sql) > 0:
            break
        time.sleep(0.1)
    ready_s = time.monotonic() - started
    return ready_s, phase.metric(RESTORED), phase.metric(RESTORE_SECONDS)


def restart(bench: Bench, pending: int) -> dict[str, Any]:
    phase = bench.phase("restart")
    phase.start_workers(1)
    fill_s = _fill(bench, phase, pending)
    phase.stop_workers()
    phase.workers.clear()
    phase.ports.clear()
    same_disk_s, same_disk_restored, _ = _ready_s(bench, phase, pending, 0)
    phase.stop_workers()
    phase.workers.clear()
    phase.ports.clear()
    shutil.rmtree(phase.state_dir / "streams")
    fresh_disk_s, restored, restore_s = _ready_s(bench, phase, pending, 1)
    phase.stop_workers()
    return {
        "pending_predictions": pending,
        "fill_seconds": round(fill_s, 1),
        "same_disk_ready_seconds": round(same_disk_s, 2),
        "fresh_disk_ready_seconds": round(fresh_disk_s, 2),
        "fresh_disk_entries_per_second": round(pending / fresh_disk_s),
        "same_disk_restored_entries": int(same_disk_restored),
        "fresh_disk_restored_entries": int(restored),
        "fresh_disk_restore_seconds": round(restore_s, 2),
        "fresh_disk_restore_entries_per_second": round(restored / restore_s) if restore_s else None,
        "note": "ready: process start until every pending prediction is indexed and a probe "
        "prediction produced at start is queryable (includes Python start-up and the group "
        "join); restore: the worker's own figures, from the start of table recovery to its last "
        "changelog entry written",
    }
