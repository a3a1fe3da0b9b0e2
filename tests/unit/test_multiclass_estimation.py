"""Multi-class CBPE against brute force: every labelling of a small window enumerated with its
probability gives the exact expected confusion matrix, accuracy and accuracy spread."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, Route
from safeloop.services.metrics.estimation import estimate_performance
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.multiclass import multiclass_metrics
from safeloop.services.metrics.multiclass_estimation import (
    estimate_multiclass_performance,
    estimate_top_label_accuracy,
)
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.performance_tracker import PerformanceTracker


def _probabilities(rows: int, classes: int, seed: int) -> np.ndarray:
    raw = np.random.default_rng(seed).random((rows, classes)) ** 3
    return raw / raw.sum(axis=1, keepdims=True)


def _enumerated(matrix: np.ndarray) -> tuple[np.ndarray, float, float]:
    """E[confusion], E[accuracy] and sd(accuracy) over every labelling, by enumeration."""
    rows, classes = matrix.shape
    predicted = [max(range(classes), key=lambda k, n=n: matrix[n, k]) for n in range(rows)]
    confusion = np.zeros((classes, classes))
    first = second = 0.0
    for labels in itertools.product(range(classes), repeat=rows):
        weight = math.prod(matrix[n, label] for n, label in enumerate(labels))
        right = sum(label == predicted[n] for n, label in enumerate(labels)) / rows
        for n, label in enumerate(labels):
            confusion[label, predicted[n]] += weight
        first += weight * right
        second += weight * right * right
    return confusion, first, math.sqrt(max(second - first * first, 0.0))


@pytest.mark.parametrize(("rows", "classes", "seed"), [(4, 3, 0), (5, 3, 1), (3, 4, 2), (6, 2, 3)])
def test_expected_figures_equal_the_enumerated_expectation(
    rows: int, classes: int, seed: int
) -> None:
    matrix = _probabilities(rows, classes, seed)
    confusion, accuracy, std = _enumerated(matrix)
    estimate = estimate_multiclass_performance(matrix)
    assert estimate.count == rows and estimate.n_classes == classes
    np.testing.assert_allclose(estimate.expected_confusion, confusion, atol=1e-12)
    assert estimate.expected_accuracy == pytest.approx(accuracy)
    assert estimate.accuracy_std == pytest.approx(std)


def test_precision_recall_and_macro_f1_are_ratios_of_the_expected_cells() -> None:
    matrix = _probabilities(40, 4, 5)
    estimate = estimate_multiclass_performance(matrix)
    cells = estimate.expected_confusion
    f1s = []
    for k in range(4):
        column, row = sum(cells[i][k] for i in range(4)), sum(cells[k][j] for j in range(4))
        precision = cells[k][k] / column if column else None
        recall = cells[k][k] / row
        assert estimate.expected_precision_per_class[k] == pytest.approx(precision)
        assert estimate.expected_recall_per_class[k] == pytest.approx(recall)
        p, r = precision or 0.0, recall
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    assert estimate.expected_macro_f1 == pytest.approx(sum(f1s) / 4)


def test_two_classes_agree_with_the_binary_estimate() -> None:
    scores = np.random.default_rng(7).random(200)
    scores = scores[np.abs(scores - 0.5) > 1e-9]
    binary = estimate_performance(scores, 0.5)
    estimate = estimate_multiclass_performance(np.column_stack([1 - scores, scores]))
    assert estimate.expected_accuracy == pytest.approx(binary.expected_accuracy)
    assert estimate.accuracy_std == pytest.approx(binary.accuracy_std)
    cells = binary.expected_confusion
    np.testing.assert_allclose(
        estimate.expected_confusion, [[cells.tn, cells.fp], [cells.fn, cells.tp]], atol=1e-9
    )


def test_on_calibrated_probabilities_the_estimate_meets_the_measured_accuracy() -> None:
    rng = np.random.default_rng(11)
    matrix = _probabilities(20_000, 3, 12)
    # Each row's label drawn from its own probabilities (inverse CDF).
    labels = (rng.random((20_000, 1)) > np.cumsum(matrix, axis=1)[:, :-1]).sum(axis=1)
    measured = multiclass_metrics(labels, matrix.argmax(axis=1), n_classes=3)
    estimate = estimate_multiclass_performance(matrix)
    assert estimate.accuracy_std is not None and measured.accuracy is not None
    assert abs(estimate.expected_accuracy - measured.accuracy) < 4 * estimate.accuracy_std
    assert estimate.expected_macro_f1 == pytest.approx(measured.macro_f1, abs=0.02)


def test_empty_nan_and_invalid_windows() -> None:
    empty = estimate_multiclass_performance(np.empty((0, 3)))
    assert empty.count == 0 and empty.expected_accuracy is None and empty.accuracy_std is None
    assert empty.expected_macro_f1 is None
    kept = estimate_multiclass_performance([[0.2, 0.8], [np.nan, 0.5]])
    assert kept.count == 1 and kept.expected_accuracy == pytest.approx(0.8)
    with pytest.raises(InvalidInputError, match="sum to 1"):
        estimate_multiclass_performance([[0.2, 0.2, 0.2]])
    with pytest.raises(InvalidInputError, match="K >= 2"):
        estimate_multiclass_performance([0.5, 0.5])
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        estimate_multiclass_performance([[1.5, -0.5]])


def test_top_label_accuracy_needs_only_the_chosen_class_probability() -> None:
    matrix = _probabilities(5, 3, 21)
    _, accuracy, std = _enumerated(matrix)
    estimate = estimate_top_label_accuracy([max(row) for row in matrix.tolist()] + [float("nan")])
    assert estimate.count == 5
    assert estimate.expected_accuracy == pytest.approx(accuracy)
    assert estimate.accuracy_std == pytest.approx(std)


def test_a_labelled_multiclass_window_reports_its_estimate_beside_the_measured_accuracy() -> None:
    matrix = _probabilities(300, 3, 31)
    rng = np.random.default_rng(32)
    truth = (rng.random((300, 1)) > np.cumsum(matrix, axis=1)[:, :-1]).sum(axis=1)
    records = [
        FeedbackRecord(
            prediction_id=f"p{i}",
            model_name="species",
            model_version="v1",
            route=Route.PRODUCTION,
            replica_id="r1",
            features={},
            prediction=float(np.argmax(row)),
            confidence=float(max(row)),
            prediction_timestamp=1_000 + i,
            status=FeedbackStatus.JOINED,
            ground_truth=float(label),
            outcome_timestamp=2_000,
            label_delay_ms=1_000,
            outcome_source="labels",
            emitted_at=3_000,
            class_probabilities=row.tolist(),
        )
        for i, (row, label) in enumerate(zip(matrix, truth, strict=True))
    ]
    tracker = PerformanceTracker(lambda name, version: Task.MULTICLASS, 1_000, 3_600_000)
    tracker.add(records)
    rows = {
        row.metric: row.value
        for row in tracker.rows(10_000)
        if row.labels.get("window") == "count_1000"
    }
    tops = [max(row) for row in matrix.tolist()]
    expected = sum(tops) / 300
    measured = sum(int(np.argmax(row)) == label for row, label in zip(matrix, truth, strict=True))
    std = math.sqrt(sum(t * (1 - t) for t in tops)) / 300
    assert rows["cbpe_labelled_expected_accuracy_last_n"] == pytest.approx(expected)
    assert rows["cbpe_labelled_accuracy_std_last_n"] == pytest.approx(std)
    assert rows["cbpe_labelled_accuracy_error_last_n"] == pytest.approx(expected - measured / 300)
    assert rows["cbpe_labelled_accuracy_z_last_n"] == pytest.approx(
        (expected - measured / 300) / std
    )
