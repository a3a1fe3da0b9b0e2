"""Multi-class and regression metrics cost beside the binary path, measured in the same run.

- feedback records -> window columns (`feedback_batch`): binary records (the baseline) against
  3- and 10-class records, whose probability columns are derived per record;
- one `PerformanceSnapshot` of a full 10,000-row window: binary (baseline), multi-class (3 and
  10 classes: confusion, per-class figures, log loss, Brier, calibration) and regression with
  residual drift.
Run: `python -m bench.multiclass_metrics [--rows N] [--rounds R]`;
writes bench/results/multiclass_metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, Route
from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.columns import ScoreConvention, feedback_batch
from safeloop.services.metrics.performance import FEEDBACK_COLUMNS, Task, performance_of_window
from safeloop.services.metrics.windows import CountWindow

RESULTS = Path(__file__).parent / "results" / "multiclass_metrics.json"
T0 = 1_700_000_000_000


def _records(n: int, classes: int, rng: np.random.Generator) -> list[FeedbackRecord]:
    records = []
    for i in range(n):
        if classes:
            logits = rng.normal(0.0, 1.5, classes)
            probabilities = (np.exp(logits) / np.exp(logits).sum()).tolist()
            prediction = float(np.argmax(probabilities))
            truth = float(rng.integers(0, classes))
        else:
            probabilities = []
            prediction = float(rng.random())
            truth = float(rng.random() < prediction)
        records.append(
            FeedbackRecord(
                prediction_id=f"p{i}",
                model_name="m",
                model_version="v1",
                route=Route.PRODUCTION,
                replica_id="r",
                features={},
                prediction=prediction,
                confidence=max(probabilities or [prediction]),
                prediction_timestamp=T0 + i,
                status=FeedbackStatus.JOINED,
                ground_truth=truth,
                outcome_timestamp=T0 + i + 5,
                label_delay_ms=5,
                outcome_source="b",
                emitted_at=T0 + i + 6,
                class_probabilities=probabilities,
            )
        )
    return records


def _best_seconds(rounds: int, run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows
    conversion: dict[str, float] = {}
    snapshot_ms: dict[str, float] = {}
    cases = {"binary (baseline)": (0, Task.CLASSIFICATION), "3 classes": (3, Task.MULTICLASS),
             "10 classes": (10, Task.MULTICLASS)}  # fmt: skip
    for name, (classes, task) in cases.items():
        records = _records(n, classes, rng)
        seconds = _best_seconds(
            args.rounds, lambda r=records: feedback_batch(r, ScoreConvention.PROBABILITY)
        )
        conversion[name] = round(n / seconds)
        window = CountWindow(n, FEEDBACK_COLUMNS)
        window.append(feedback_batch(records, ScoreConvention.PROBABILITY)[1])
        view = window.view()
        snapshot_ms[name] = round(
            1000 * _best_seconds(args.rounds, lambda v=view, t=task: performance_of_window(t, v)),
            3,
        )
    residuals = Baseline.from_training_sample(rng.normal(0.0, 1.0, 5_000))
    window = CountWindow(n, FEEDBACK_COLUMNS)
    truth = rng.normal(0.0, 3.0, n)
    batch = {
        "timestamp_ms": np.arange(n, dtype=np.int64),
        "score": truth - rng.normal(0.0, 1.0, n),
        "ground_truth": truth,
        "label_delay_ms": np.full(n, 5.0),
        "true_class_probability": np.full(n, np.nan),
        "top_probability": np.full(n, np.nan),
        "probability_squared_sum": np.full(n, np.nan),
    }
    window.append(batch)
    view = window.view()
    snapshot_ms["regression + residual drift"] = round(
        1000
        * _best_seconds(
            args.rounds,
            lambda: performance_of_window(Task.REGRESSION, view, residual_baseline=residuals),
        ),
        3,
    )
    report = {
        "rows": n,
        "rounds": args.rounds,
        "feedback_batch_records_per_s": conversion,
        "performance_snapshot_ms_full_window": snapshot_ms,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
