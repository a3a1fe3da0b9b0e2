"""Performance snapshots, label coverage and delay, relative drops."""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
import pytest

from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.labels import label_coverage, label_delay_percentiles
from safeloop.services.metrics.performance import (
    FEEDBACK_COLUMNS,
    PerformanceMetric,
    Task,
    performance_of_window,
    performance_snapshot,
    relative_drop,
)
from safeloop.services.metrics.windows import CountWindow

NAN = math.nan


def test_label_coverage() -> None:
    assert label_coverage(25, 100) == 0.25
    assert label_coverage(0, 0) is None
    with pytest.raises(InvalidInputError):
        label_coverage(-1, 3)


def test_label_delay_percentiles_skip_unlabelled() -> None:
    delays = label_delay_percentiles([NAN, 100.0, 300.0, NAN])
    assert delays.p50 == 200.0
    assert delays.p99 == pytest.approx(100 + 200 * 0.99)
    assert label_delay_percentiles([NAN]).p50 is None


def test_classification_snapshot_uses_only_labelled_rows() -> None:
    snapshot = performance_snapshot(
        Task.CLASSIFICATION,
        score=[0.9, 0.2, 0.7, NAN, 0.4],
        ground_truth=[1, 0, 0, 1, NAN],
        label_delay_ms=[1_000, 2_000, 3_000, 4_000, NAN],
        predicted_count=10,
    )
    assert snapshot.labelled_count == 3  # the NaN score and the NaN label drop out
    assert snapshot.predicted_count == 10
    assert snapshot.label_coverage == pytest.approx(0.3)
    assert snapshot.label_delay_p50_ms == 2_000
    assert snapshot.classification is not None
    assert snapshot.classification.count == 3
    assert snapshot.metric(PerformanceMetric.ACCURACY) == pytest.approx(2 / 3)
    assert snapshot.metric(PerformanceMetric.ROC_AUC) == 1.0
    assert snapshot.metric(PerformanceMetric.RMSE) is None
    assert snapshot.regression is None


def test_regression_snapshot() -> None:
    snapshot = performance_snapshot(Task.REGRESSION, [1.0, 2.0, NAN], [1.5, 2.5, 9.0])
    assert snapshot.labelled_count == 2
    assert snapshot.label_coverage == pytest.approx(2 / 3)
    assert snapshot.metric(PerformanceMetric.MAE) == pytest.approx(0.5)
    assert snapshot.metric(PerformanceMetric.R2) == pytest.approx(0.0)
    assert snapshot.classification is None
    assert snapshot.label_delay_p50_ms is None


def test_empty_and_unlabelled_windows_are_defined() -> None:
    window = CountWindow(8, FEEDBACK_COLUMNS)
    empty = performance_of_window(Task.CLASSIFICATION, window.view())
    assert (empty.predicted_count, empty.labelled_count, empty.label_coverage) == (0, 0, None)
    assert empty.metric(PerformanceMetric.ACCURACY) is None
    window.append(
        {
            "timestamp_ms": np.array([1, 2]),
            "score": np.array([0.3, 0.8]),
            "ground_truth": np.array([NAN, NAN]),
            "label_delay_ms": np.array([NAN, NAN]),
            "true_class_probability": np.array([NAN, NAN]),
            "top_probability": np.array([NAN, NAN]),
            "probability_squared_sum": np.array([NAN, NAN]),
        }
    )
    unlabelled = performance_of_window(Task.CLASSIFICATION, window.view())
    assert unlabelled.label_coverage == 0.0
    assert unlabelled.metric(PerformanceMetric.F1) is None


def test_task_accepts_other_str_enums_with_the_same_values() -> None:
    class ModelTask(StrEnum):
        CLASSIFICATION = "classification"

    snapshot = performance_snapshot(ModelTask.CLASSIFICATION, [0.9], [1.0])
    assert snapshot.task is Task.CLASSIFICATION
    assert snapshot.metric(PerformanceMetric.ACCURACY) == 1.0


def test_relative_drop_directions() -> None:
    assert relative_drop(0.9, 0.81, PerformanceMetric.ACCURACY) == pytest.approx(0.1)
    assert relative_drop(0.9, 0.99, PerformanceMetric.ACCURACY) == pytest.approx(-0.1)
    assert relative_drop(2.0, 2.5, PerformanceMetric.RMSE) == pytest.approx(0.25)
    assert relative_drop(None, 1.0, PerformanceMetric.RMSE) is None
    assert relative_drop(0.0, 1.0, PerformanceMetric.MAE) is None
    assert PerformanceMetric.LOG_LOSS.higher_is_better is False
    assert PerformanceMetric.ROC_AUC.higher_is_better is True
