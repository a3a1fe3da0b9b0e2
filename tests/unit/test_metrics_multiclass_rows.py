"""Multi-class and regression feedback through columns, windows, snapshot and rows."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, Route
from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.columns import ScoreConvention, feedback_batch
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.multiclass import multiclass_metrics_of_probabilities
from safeloop.services.metrics.performance import PerformanceMetric, Task
from safeloop.services.metrics.performance_tracker import PerformanceTracker

NOW = 1_700_000_000_000


def record(index: int, probabilities: list[float], truth: float | None) -> FeedbackRecord:
    return FeedbackRecord(
        prediction_id=f"p{index}",
        model_name="species",
        model_version="v1",
        route=Route.PRODUCTION,
        replica_id="r1",
        features={},
        prediction=float(np.argmax(probabilities)) if probabilities else 0.0,
        confidence=max(probabilities) if probabilities else None,
        prediction_timestamp=NOW + index,
        status=FeedbackStatus.JOINED if truth is not None else FeedbackStatus.EXPIRED,
        ground_truth=truth,
        outcome_timestamp=None if truth is None else NOW + 1_000,
        label_delay_ms=None if truth is None else 1_000,
        outcome_source=None if truth is None else "labels",
        emitted_at=NOW + 2_000,
        class_probabilities=probabilities,
    )


def by_metric(rows: list[MetricRow], window: str) -> dict[str, float]:
    return {row.metric: row.value for row in rows if row.labels.get("window") == window}


def test_feedback_batch_derives_the_probability_columns() -> None:
    _, batch = feedback_batch(
        [record(0, [0.2, 0.5, 0.3], 2.0), record(1, [0.6, 0.4], None), record(2, [], 1.0)],
        ScoreConvention.PROBABILITY,
    )
    assert batch["true_class_probability"][0] == pytest.approx(0.3)
    assert batch["top_probability"].tolist()[:2] == [0.5, 0.6]
    assert batch["probability_squared_sum"][0] == pytest.approx(0.04 + 0.25 + 0.09)
    # No label: no P(true class); no probabilities (binary or regression rows): all NaN.
    assert math.isnan(batch["true_class_probability"][1])
    assert all(math.isnan(batch[name][2]) for name in ("top_probability", "true_class_probability"))


def test_a_multiclass_window_becomes_metric_rows_matching_the_core() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, 1.5, (400, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = [int(rng.choice(3, p=row)) for row in probabilities]
    records = [
        record(i, row, float(label))
        for i, (row, label) in enumerate(zip(probabilities.tolist(), truth, strict=True))
    ]
    records.append(record(400, [0.1, 0.1, 0.8], None))  # expired: coverage only
    tracker = PerformanceTracker(lambda name, version: Task.MULTICLASS, 10_000, 3_600_000)
    tracker.add(records)
    rows = by_metric(tracker.rows(NOW + 10_000), "count_10000")
    core = multiclass_metrics_of_probabilities(truth, probabilities)
    assert rows["macro_f1_last_n"] == pytest.approx(core.macro_f1)
    assert rows["micro_f1_last_n"] == pytest.approx(core.micro_f1)
    assert rows["log_loss_last_n"] == pytest.approx(core.log_loss)
    assert rows["brier_score_last_n"] == pytest.approx(core.brier_score)
    assert rows["expected_calibration_error_last_n"] == pytest.approx(
        core.expected_calibration_error
    )
    assert rows["label_coverage_last_n"] == pytest.approx(400 / 401)
    for k in range(3):
        assert rows[f"precision_class_{k:02d}_last_n"] == pytest.approx(core.precision_per_class[k])
        assert rows[f"recall_class_{k:02d}_last_n"] == pytest.approx(core.recall_per_class[k])
    cells = {name: value for name, value in rows.items() if name.startswith("confusion_")}
    assert sum(cells.values()) == 400
    assert cells["confusion_01_02_last_n"] == core.confusion[1, 2]
    snapshot = tracker.count_snapshot(WindowKey("species", "v1", Route.PRODUCTION))
    assert snapshot is not None
    assert snapshot.metric(PerformanceMetric.MACRO_F1) == pytest.approx(core.macro_f1)
    # Time-window rows carry the same figures without the suffix.
    assert by_metric(tracker.rows(NOW + 10_000), "time_3600000ms")["macro_f1"] == pytest.approx(
        core.macro_f1
    )


def test_a_label_that_is_no_class_index_is_left_out_not_fatal() -> None:
    tracker = PerformanceTracker(lambda name, version: Task.MULTICLASS, 100, 3_600_000)
    tracker.add([record(0, [0.9, 0.1], 0.0), record(1, [0.2, 0.8], 0.5)])
    rows = by_metric(tracker.rows(NOW), "count_100")
    assert rows["labelled_count_last_n"] == 2
    assert rows["accuracy_last_n"] == 1.0


def test_regression_rows_carry_residual_drift_against_the_training_residuals() -> None:
    rng = np.random.default_rng(9)
    baseline = Baseline.from_training_sample(rng.normal(0.0, 1.0, 4_000))
    truth = rng.normal(50.0, 5.0, 1_000)
    predicted = truth - rng.normal(2.0, 1.0, 1_000)  # the model now predicts 2 too low
    records = [
        dataclasses.replace(record(i, [], float(t)), prediction=float(p), confidence=None)
        for i, (t, p) in enumerate(zip(truth, predicted, strict=True))
    ]
    tracker = PerformanceTracker(
        lambda name, version: Task.REGRESSION,
        5_000,
        3_600_000,
        residual_baseline_of=lambda name, version: baseline,
    )
    tracker.add(records)
    rows = by_metric(tracker.rows(NOW + 10_000), "count_5000")
    residual = truth - predicted
    assert rows["mae_last_n"] == pytest.approx(float(np.abs(residual).mean()))
    assert rows["residual_mean_last_n"] == pytest.approx(float(residual.mean()))
    assert rows["residual_bias_shift_last_n"] == pytest.approx(
        float(residual.mean()) - float(baseline.expected @ baseline.bin_means)
    )
    assert rows["residual_psi_last_n"] > 1.0
    assert "macro_f1_last_n" not in rows
