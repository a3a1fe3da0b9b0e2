"""What a deployment of the join needs, on paper: the benchmark's measured per-event and
per-entry figures (bench/results/stream_join.json) scaled to a prediction rate and a window.

Pure arithmetic, no I/O beyond reading a results file: `safeloop plan` prints it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeloop.infra.duration import SECONDS_PER_DAY

# A worker is one Python process on one core; plan it busy at most this share of the core.
CORE_UTILISATION = 0.7
# Partitions: room to double the workers without re-partitioning, never fewer than this.
MIN_PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class MeasuredFigures:
    """The benchmark figures the plan scales (per event, per pending entry, per row)."""

    worker_cpu_us_per_event: float
    memory_bytes_per_pending: float
    rocksdb_bytes_per_pending: float
    prediction_bytes: int
    outcome_bytes: int
    feedback_bytes: int
    key_bytes: int
    # Compressed ClickHouse bytes per row of predictions, outcomes and feedback.
    clickhouse_bytes_per_row: dict[str, float]
    source: str

    @classmethod
    def from_results(cls, path: Path) -> MeasuredFigures:
        """The figures of a `python -m bench.stream_join` results file."""
        results: dict[str, Any] = json.loads(path.read_text())
        runs = results["throughput"]
        cpu = max(run["worker_cpu_us_per_event"] for run in runs)
        per_row: dict[str, float] = {}
        for run in runs:
            for table, size in (run.get("clickhouse_bytes_per_row") or {}).items():
                if isinstance(size, int | float):
                    per_row[table] = max(per_row.get(table, 0.0), float(size))
        footprint = results["footprint"]
        sizes = results["record_bytes"]
        return cls(
            worker_cpu_us_per_event=float(cpu),
            memory_bytes_per_pending=footprint["memory_mb_per_million"] * 2**20 / 1e6,
            rocksdb_bytes_per_pending=footprint["rocksdb_disk_mb_per_million"] * 2**20 / 1e6,
            prediction_bytes=int(sizes["prediction"]),
            outcome_bytes=int(sizes["outcome"]),
            feedback_bytes=int(sizes["feedback"]),
            key_bytes=int(sizes["key"]),
            clickhouse_bytes_per_row=per_row,
            source=str(path),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What the join needs at one prediction rate and window."""

    predictions_per_s: float
    label_delay_s: float
    window_s: float
    events_per_s: float
    worker_cores: float
    workers: int
    partitions: int
    pending_entries: float
    rocksdb_bytes: float
    rocksdb_bytes_per_worker: float
    memory_bytes_per_worker: float
    changelog_bytes: float
    broker_in_bytes_per_s: float
    broker_out_bytes_per_s: float
    clickhouse_rows_per_day: float
    clickhouse_bytes_per_day: float


def plan(
    figures: MeasuredFigures,
    predictions_per_s: float,
    label_delay_s: float,
    window_s: float | None = None,
) -> Plan:
    """Scale `figures` to `predictions_per_s` with outcomes `label_delay_s` later; a
    prediction's state lives for `window_s` (default: the label delay), joined or not."""
    if predictions_per_s <= 0 or label_delay_s < 0:
        raise ValueError("predictions_per_s must be positive and label_delay_s not negative")
    window = label_delay_s if window_s is None else window_s
    if window <= 0:
        raise ValueError("the window must be positive")
    events = 2 * predictions_per_s  # a prediction and its outcome
    cores = events * figures.worker_cpu_us_per_event / 1e6
    workers = max(1, math.ceil(cores / CORE_UTILISATION))
    partitions = max(MIN_PARTITIONS, 1 << math.ceil(math.log2(2 * workers)))
    pending = predictions_per_s * window
    rocksdb = pending * figures.rocksdb_bytes_per_pending
    # Each state write goes to the changelog: a prediction's entry, then with its outcome.
    changelog_in = predictions_per_s * 2 * (figures.key_bytes + figures.prediction_bytes)
    changelog_in += predictions_per_s * figures.outcome_bytes
    sources_in = predictions_per_s * (figures.prediction_bytes + figures.outcome_bytes)
    feedback_out = predictions_per_s * figures.feedback_bytes
    row_bytes = figures.clickhouse_bytes_per_row
    per_day = predictions_per_s * SECONDS_PER_DAY
    tables = ("predictions", "outcomes", "feedback")
    return Plan(
        predictions_per_s=predictions_per_s,
        label_delay_s=label_delay_s,
        window_s=window,
        events_per_s=events,
        worker_cores=cores,
        workers=workers,
        partitions=partitions,
        pending_entries=pending,
        rocksdb_bytes=rocksdb,
        rocksdb_bytes_per_worker=rocksdb / workers,
        memory_bytes_per_worker=pending * figures.memory_bytes_per_pending / workers,
        # Compacted: one record per live key, about what RocksDB holds.
        changelog_bytes=rocksdb,
        broker_in_bytes_per_s=sources_in + changelog_in + feedback_out,
        # The workers read the sources; ClickHouse-bound consumers read the feedback.
        broker_out_bytes_per_s=sources_in + feedback_out,
        clickhouse_rows_per_day=per_day * len(tables),
        clickhouse_bytes_per_day=per_day * sum(row_bytes.get(t, 0.0) for t in tables),
    )


def human_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1000 or unit == "PB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value:.0f} B"
        value /= 1000
    return f"{value:.1f} PB"
