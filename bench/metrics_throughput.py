"""Metrics core throughput: events/s through windows + snapshots, µs per guard judgement.

Measures, on one core, the pure computational path the metrics consumers and the replica fast
path run, without Kafka or ClickHouse:
- events -> columns (`health_batch`, `feedback_batch`): the Python-object boundary;
- columns -> keyed count and time windows (batch appends, mixed keys);
- the whole health pipeline per batch: convert, append, one `HealthSnapshot` per key + `judge`;
- the whole performance pipeline per batch: convert, append, one `PerformanceSnapshot` per key
  (a worst case: a consumer snapshotting at a fixed cadence runs at the conversion + append rate);
- single calls: health / performance snapshot on a full window, model drift, `judge`.
Run: `python -m bench.metrics_throughput [--events N] [--batch B] [--rounds R]`;
writes bench/results/metrics_throughput.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, PredictionEvent, Route
from safeloop.services.guard.judge import judge
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.metrics.columns import ScoreConvention, feedback_batch, health_batch
from safeloop.services.metrics.drift import model_drift
from safeloop.services.metrics.health import HEALTH_COLUMNS, health_of_window
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.latency import percentiles
from safeloop.services.metrics.performance import (
    FEEDBACK_COLUMNS,
    Task,
    performance_of_window,
)
from safeloop.services.metrics.windows import CountWindow, TimeWindow

RESULTS = Path(__file__).parent / "results" / "metrics_throughput.json"
T0 = 1_700_000_000_000
WINDOW_ROWS = 10_000
SPAN_MS = 60_000
FEATURES = 10
KEYS = (
    WindowKey("fraud-detector", "v1", Route.PRODUCTION),
    WindowKey("fraud-detector", "v2", Route.CANARY),
    WindowKey("fraud-detector", "v2", Route.SHADOW),
)


def _predictions(n: int, rng: np.random.Generator) -> list[PredictionEvent]:
    latencies = rng.lognormal(1.5, 0.5, n).tolist()
    scores = rng.random(n).tolist()
    events = []
    for i in range(n):
        key = KEYS[0] if i % 10 else KEYS[1 + (i // 10) % 2]
        events.append(
            PredictionEvent(
                prediction_id=f"p-{i:012d}",
                model_name=key.model_name,
                model_version=key.model_version,
                # Five events per ms, a few arriving up to 20 ms late.
                timestamp=T0 + i // 5 - (20 if i % 97 == 0 else 0),
                features={f"feature_{k:02d}": float(k) for k in range(FEATURES)},
                prediction=scores[i],
                confidence=None,
                latency_ms=latencies[i],
                route=key.route,
                replica_id="replica-1",
                routing_key=f"user-{i % 5000}",
                routing_hash_version=1,
                error="timeout" if i % 200 == 0 else None,
            )
        )
    return events


def _feedback(n: int, rng: np.random.Generator) -> list[FeedbackRecord]:
    scores = rng.random(n)
    truth = (rng.random(n) < scores).astype(float).tolist()
    records = []
    for i in range(n):
        key = KEYS[0] if i % 10 else KEYS[1]
        labelled = i % 4 != 0
        records.append(
            FeedbackRecord(
                prediction_id=f"p-{i:012d}",
                model_name=key.model_name,
                model_version=key.model_version,
                route=key.route,
                replica_id="replica-1",
                features={f"feature_{k:02d}": float(k) for k in range(FEATURES)},
                prediction=float(scores[i]),
                confidence=None,
                prediction_timestamp=T0 + i // 5,
                status=FeedbackStatus.JOINED if labelled else FeedbackStatus.EXPIRED,
                ground_truth=truth[i] if labelled else None,
                outcome_timestamp=T0 + i if labelled else None,
                label_delay_ms=60_000 + i % 1000 if labelled else None,
                outcome_source="labels" if labelled else None,
                emitted_at=T0 + i,
            )
        )
    return records


def _best_seconds(rounds: int, run: Callable[[], object]) -> float:
    """Seconds of the fastest round: the least disturbed by whatever else the machine does."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _micros_per_call(run: Callable[[], object], calls: int, rounds: int) -> float:
    def many() -> None:
        for _ in range(calls):
            run()

    return _best_seconds(rounds, many) / calls * 1e6


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def measure(n: int, batch: int, rounds: int) -> dict[str, Any]:
    """Run every measurement and return the result document."""
    rng = np.random.default_rng(0)
    predictions = _predictions(n, rng)
    feedback = _feedback(n, rng)
    prediction_batches = _batches(predictions, batch)
    feedback_batches = _batches(feedback, batch)
    converted = [health_batch(chunk) for chunk in prediction_batches]
    convention = ScoreConvention.PROBABILITY
    policy = GuardPolicy()

    def count_windows() -> KeyedWindows[CountWindow]:
        return KeyedWindows(lambda: CountWindow(WINDOW_ROWS, HEALTH_COLUMNS))

    def time_windows() -> KeyedWindows[TimeWindow]:
        return KeyedWindows(lambda: TimeWindow(SPAN_MS, HEALTH_COLUMNS))

    def append_only(factory: Callable[[], KeyedWindows[Any]]) -> Callable[[], None]:
        def run() -> None:
            windows = factory()
            for keys, columns in converted:
                windows.append(keys, columns)

        return run

    def health_pipeline() -> None:
        windows = count_windows()
        for chunk in prediction_batches:
            keys, columns = health_batch(chunk)
            windows.append(keys, columns)
            production = health_of_window(windows.window(KEYS[0]).view())
            for key in KEYS[1:]:
                canary = health_of_window(windows.window(key).view())
                judge(canary, production, policy)

    def performance_pipeline() -> None:
        windows = KeyedWindows(lambda: CountWindow(WINDOW_ROWS, FEEDBACK_COLUMNS))
        for chunk in feedback_batches:
            keys, columns = feedback_batch(chunk, convention)
            windows.append(keys, columns)
            for key in KEYS[:2]:
                performance_of_window(Task.CLASSIFICATION, windows.window(key).view())

    def convert_predictions() -> None:
        # Results dropped per batch, as the consumers do: kept alive, 100k WindowKeys would
        # make the garbage collector's scans, not the conversion, the measured cost.
        for chunk in prediction_batches:
            health_batch(chunk)

    def convert_feedback() -> None:
        for chunk in feedback_batches:
            feedback_batch(chunk, convention)

    rates = {
        "health_batch_conversion": n / _best_seconds(rounds, convert_predictions),
        "feedback_batch_conversion": n / _best_seconds(rounds, convert_feedback),
        "count_window_append": n / _best_seconds(rounds, append_only(count_windows)),
        "time_window_append": n / _best_seconds(rounds, append_only(time_windows)),
        "health_pipeline": n / _best_seconds(rounds, health_pipeline),
        "performance_pipeline": n / _best_seconds(rounds, performance_pipeline),
    }

    # Single calls on full windows.
    full_health = CountWindow(WINDOW_ROWS, HEALTH_COLUMNS)
    full_feedback = CountWindow(WINDOW_ROWS, FEEDBACK_COLUMNS)
    for (_, columns), (_, labelled) in zip(
        converted, (feedback_batch(c, convention) for c in feedback_batches), strict=True
    ):
        full_health.append(columns)
        full_feedback.append(labelled)
    health_view = full_health.view()
    feedback_view = full_feedback.view()
    replica_window = CountWindow(1_000, HEALTH_COLUMNS)
    replica_window.append(health_view)
    replica_view = replica_window.view()
    canary = health_of_window(health_view)
    production = health_of_window(health_view)
    training = {f"feature_{k:02d}": rng.normal(size=50_000) for k in range(FEATURES)}
    baseline = ModelBaseline.from_training_data(training, score=rng.random(50_000))
    live = {name: rng.normal(0.1, 1.0, WINDOW_ROWS) for name in training}
    live_score = rng.random(WINDOW_ROWS)
    latency_sizes = (1_000, 10_000, 100_000)
    latency_samples = {size: rng.lognormal(1.5, 0.5, size) for size in latency_sizes}
    micros = {
        "guard_judge": _micros_per_call(lambda: judge(canary, production, policy), 20_000, rounds),
        "replica_fast_path_1k_window": _micros_per_call(
            lambda: judge(health_of_window(replica_view), production, policy), 2_000, rounds
        ),
        "health_snapshot_10k_window": _micros_per_call(
            lambda: health_of_window(health_view), 500, rounds
        ),
        "performance_snapshot_10k_window": _micros_per_call(
            lambda: performance_of_window(Task.CLASSIFICATION, feedback_view), 100, rounds
        ),
        "model_drift_10_features_plus_score_10k_rows": _micros_per_call(
            lambda: model_drift(baseline, live, live_score), 20, rounds
        ),
        **{
            f"latency_percentiles_{size // 1000}k": _micros_per_call(
                lambda sample=sample: percentiles(sample),
                max(10, 1_000_000 // size),
                rounds,  # type: ignore[misc]
            )
            for size, sample in latency_samples.items()
        },
    }
    return {
        "benchmark": "metrics_throughput",
        "events": n,
        "batch": batch,
        "rounds": rounds,
        "keys": len(KEYS),
        "window_rows": WINDOW_ROWS,
        "time_window_span_ms": SPAN_MS,
        "statistic": "fastest round, one core",
        "events_per_second": {name: round(rate) for name, rate in rates.items()},
        "microseconds_per_call": {name: round(value, 2) for name, value in micros.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.events, args.batch, args.rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
