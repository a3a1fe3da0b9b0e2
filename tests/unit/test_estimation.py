"""CBPE: expected confusion by loops, agreement with measured figures on calibrated data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.calibration import HistogramCalibrator
from safeloop.services.metrics.classification import classification_metrics
from safeloop.services.metrics.estimation import compare_estimate, estimate_performance
from safeloop.services.metrics.exceptions import InvalidInputError


def expected_cells_by_loop(scores: list[float], threshold: float) -> tuple[float, ...]:
    tp = fp = tn = fn = 0.0
    for p in scores:
        if p >= threshold:
            tp += p
            fp += 1 - p
        else:
            fn += p
            tn += 1 - p
    return tp, fp, tn, fn


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_expected_confusion_matches_loop(threshold: float) -> None:
    scores = np.random.default_rng(0).random(60).tolist()
    estimate = estimate_performance(scores, threshold)
    tp, fp, tn, fn = expected_cells_by_loop(scores, threshold)
    cells = estimate.expected_confusion
    assert (cells.tp, cells.fp, cells.tn, cells.fn) == pytest.approx((tp, fp, tn, fn))
    assert estimate.expected_accuracy == pytest.approx((tp + tn) / 60)
    assert estimate.expected_precision == pytest.approx(tp / (tp + fp))
    assert estimate.expected_recall == pytest.approx(tp / (tp + fn))
    correct = [p if p >= threshold else 1 - p for p in scores]
    assert estimate.accuracy_std == pytest.approx(math.sqrt(sum(c * (1 - c) for c in correct)) / 60)


def test_estimate_by_hand() -> None:
    estimate = estimate_performance([0.9, 0.2, 0.6])
    # Right with probability 0.9, 0.8 and 0.6.
    assert estimate.expected_accuracy == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert estimate.expected_confusion.tp == pytest.approx(1.5)
    assert estimate.expected_confusion.fn == pytest.approx(0.2)


def test_estimate_is_close_to_measured_on_calibrated_scores() -> None:
    rng = np.random.default_rng(1)
    scores = rng.beta(2, 2, 20_000)
    labels = (rng.random(20_000) < scores).astype(int)
    estimate = estimate_performance(scores)
    measured = classification_metrics(labels, scores)
    comparison = compare_estimate(estimate, measured)
    assert comparison.accuracy_error is not None
    assert abs(comparison.accuracy_error) < 0.015
    assert comparison.accuracy_z is not None
    assert abs(comparison.accuracy_z) < 4
    assert comparison.f1_error is not None
    assert abs(comparison.f1_error) < 0.02
    assert comparison.accuracy_error == pytest.approx(
        estimate.expected_accuracy - measured.accuracy  # type: ignore[operator]
    )


def test_miscalibrated_scores_are_fixed_by_the_calibrator() -> None:
    rng = np.random.default_rng(2)
    truth_p = rng.random(40_000)
    labels = (rng.random(40_000) < truth_p).astype(int)
    overconfident = np.clip(0.5 + 1.6 * (truth_p - 0.5), 0, 1)
    reference, live = slice(0, 20_000), slice(20_000, None)
    calibrator = HistogramCalibrator.fit(labels[reference], overconfident[reference], n_bins=20)
    measured = classification_metrics(labels[live], overconfident[live])
    raw = compare_estimate(estimate_performance(overconfident[live]), measured)
    calibrated = compare_estimate(
        estimate_performance(calibrator.apply(overconfident[live])), measured
    )
    assert raw.accuracy_error is not None and calibrated.accuracy_error is not None
    assert raw.accuracy_error > 0.05  # overconfidence makes the raw estimate optimistic
    assert abs(calibrated.accuracy_error) < 0.015


def test_empty_estimate_is_defined() -> None:
    estimate = estimate_performance([math.nan])
    assert estimate.count == 0
    assert estimate.expected_accuracy is None
    assert estimate.accuracy_std is None
    comparison = compare_estimate(estimate, classification_metrics([], []))
    assert comparison.accuracy_error is None
    assert comparison.accuracy_z is None


def test_estimate_refuses_scores_outside_unit_interval() -> None:
    with pytest.raises(InvalidInputError):
        estimate_performance([1.2])
