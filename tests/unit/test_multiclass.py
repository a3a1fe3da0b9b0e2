"""Multi-class metrics against hand-computed values and loop-by-loop reference definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.classification import brier_score, log_loss
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.multiclass import (
    confusion_matrix,
    multiclass_metrics,
    multiclass_metrics_of_probabilities,
    probability_columns,
)
from safeloop.services.metrics.residuals import residual_drift


def reference(truth: list[int], predicted: list[int]) -> dict[str, object]:
    """Per-class and averaged figures by counting, one class and one row at a time."""
    classes = sorted(set(truth) | set(predicted))
    precision: dict[int, float] = {}
    recall: dict[int, float] = {}
    f1: dict[int, float] = {}
    for c in classes:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(truth, predicted, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(truth, predicted, strict=True) if t == c and p != c)
        precision[c] = tp / (tp + fp) if tp + fp else 0.0
        recall[c] = tp / (tp + fn) if tp + fn else 0.0
        pr = precision[c] + recall[c]
        f1[c] = 2 * precision[c] * recall[c] / pr if pr else 0.0
    support = {c: truth.count(c) for c in classes}
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_f1": sum(f1.values()) / len(classes),
        "macro_precision": sum(precision.values()) / len(classes),
        "macro_recall": sum(recall.values()) / len(classes),
        "weighted_f1": sum(f1[c] * support[c] for c in classes) / len(truth),
        "accuracy": sum(1 for t, p in zip(truth, predicted, strict=True) if t == p) / len(truth),
    }


def test_hand_computed_three_class_window() -> None:
    truth = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0]
    m = multiclass_metrics(truth, predicted)
    assert m.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m.support == (2, 2, 2)
    assert m.precision_per_class == pytest.approx((0.5, 2 / 3, 1.0))
    assert m.recall_per_class == pytest.approx((0.5, 1.0, 0.5))
    assert m.f1_per_class == pytest.approx((0.5, 0.8, 2 / 3))
    assert m.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m.micro_f1 == pytest.approx(4 / 6)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.log_loss is None and m.expected_calibration_error is None


@pytest.mark.parametrize("seed", range(5))
def test_random_windows_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Class 3 is never predicted (precision undefined: 0 in the macro average) and class 5 is
    # in neither labels nor predictions (left out of the macro average).
    truth = rng.integers(0, 5, 300).tolist()
    predicted = [t if rng.random() < 0.6 else int(rng.choice([0, 1, 2, 4])) for t in truth]
    predicted = [p if p != 3 else 0 for p in predicted]
    m = multiclass_metrics(truth, predicted, n_classes=6)
    expected = reference(truth, predicted)
    assert m.n_classes == 6
    assert m.precision_per_class[3] is None and m.precision_per_class[5] is None
    for c, value in expected["recall"].items():  # type: ignore[attr-defined]
        assert m.recall_per_class[c] == pytest.approx(value)
    for name in ("macro_f1", "macro_precision", "macro_recall", "weighted_f1", "accuracy"):
        assert getattr(m, name) == pytest.approx(expected[name]), name
    # Single-label data: pooled (micro) F1 is accuracy.
    assert m.micro_f1 == pytest.approx(expected["accuracy"])
    assert int(m.confusion.sum()) == 300
    assert m.confusion[2, 4] == sum(
        1 for t, p in zip(truth, predicted, strict=True) if t == 2 and p == 4
    )


def test_log_loss_brier_and_calibration_from_probabilities() -> None:
    probabilities = [[0.75, 0.15, 0.1], [0.05, 0.85, 0.1], [0.2, 0.15, 0.65], [0.55, 0.35, 0.1]]
    truth = [0, 1, 2, 1]
    m = multiclass_metrics_of_probabilities(truth, probabilities, calibration_bins=10)
    nll = -(math.log(0.75) + math.log(0.85) + math.log(0.65) + math.log(0.35)) / 4
    assert m.log_loss == pytest.approx(nll)
    # Rows: .0625+.0225+.01, .0025+.0225+.01, .04+.0225+.1225, .3025+.4225+.01
    assert m.brier_score == pytest.approx((0.095 + 0.035 + 0.185 + 0.735) / 4)
    # Top label per row, alone in its bin: .75 right, .85 right, .65 right, .55 wrong.
    assert m.expected_calibration_error == pytest.approx((0.25 + 0.15 + 0.35 + 0.55) / 4)
    assert m.accuracy == pytest.approx(0.75)


def test_top_label_ece_matches_a_loop_reference() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 2.0, (500, 4))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = [int(rng.choice(4, p=row)) for row in probabilities]
    m = multiclass_metrics_of_probabilities(truth, probabilities, calibration_bins=5)
    bins: dict[int, list[tuple[float, bool]]] = {}
    for row, label in zip(probabilities.tolist(), truth, strict=True):
        top = max(row)
        bins.setdefault(min(int(top * 5), 4), []).append((top, row.index(top) == label))
    ece = sum(
        len(items)
        / 500
        * abs(sum(hit for _, hit in items) / len(items) - sum(p for p, _ in items) / len(items))
        for items in bins.values()
    )
    assert m.expected_calibration_error == pytest.approx(ece)
    nll = -sum(
        math.log(row[label]) for row, label in zip(probabilities.tolist(), truth, strict=True)
    )
    assert m.log_loss == pytest.approx(nll / 500)


def test_two_classes_agree_with_the_binary_metrics() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    m = multiclass_metrics_of_probabilities(y, np.column_stack([1 - p, p]))
    assert m.log_loss == pytest.approx(log_loss(y, p))
    # The multi-class Brier score sums over both classes: twice the binary one.
    assert m.brier_score == pytest.approx(2 * (brier_score(y, p) or 0.0))


def test_rows_without_probabilities_leave_only_the_probability_figures_out() -> None:
    columns = probability_columns([0, 1], [[0.9, 0.1], [0.3, 0.7]])
    nan_row = np.array([math.nan])
    with_gap = type(columns)(
        np.concatenate((columns.true_class, nan_row)),
        np.concatenate((columns.top, nan_row)),
        np.concatenate((columns.squared_sum, nan_row)),
    )
    m = multiclass_metrics([0, 1, 1], [0, 1, 0], probabilities=with_gap)
    assert m.count == 3 and m.accuracy == pytest.approx(2 / 3)
    assert m.log_loss == pytest.approx(-(math.log(0.9) + math.log(0.7)) / 2)


def test_empty_window_and_bad_labels() -> None:
    m = multiclass_metrics([], [])
    assert m.count == 0 and m.accuracy is None and m.macro_f1 is None and m.micro_f1 is None
    with pytest.raises(InvalidInputError):
        multiclass_metrics([0.5], [0])
    with pytest.raises(InvalidInputError):
        confusion_matrix([0, 3], [0, 1], n_classes=3)
    with pytest.raises(InvalidInputError):
        probability_columns([2], [[0.5, 0.5]])


def test_residual_drift_against_a_training_residual_baseline() -> None:
    rng = np.random.default_rng(11)
    training = rng.normal(0.0, 1.0, 5_000)
    baseline = Baseline.from_training_sample(training)
    truth = rng.normal(10.0, 3.0, 2_000)
    same = residual_drift(truth, truth - rng.normal(0.0, 1.0, 2_000), baseline)
    shifted = residual_drift(truth, truth - rng.normal(1.5, 2.0, 2_000), baseline)
    assert same.drift is not None and shifted.drift is not None
    assert same.drift.psi is not None and same.drift.psi < 0.05
    assert shifted.drift.psi is not None and shifted.drift.psi > 0.5
    assert shifted.mean == pytest.approx(1.5, abs=0.15)
    assert shifted.std == pytest.approx(2.0, abs=0.15)
    assert same.baseline_mean == pytest.approx(float(training.mean()), abs=0.05)
    hand = residual_drift([3.0, 5.0, math.nan], [1.0, 6.0, 2.0])
    assert (hand.count, hand.mean, hand.std, hand.drift) == (2, 0.5, 1.5, None)
