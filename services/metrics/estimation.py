"""Confidence-based performance estimation (CBPE): classifier performance before labels arrive.

With calibrated scores p = P(y=1) and decision threshold t, a prediction with p >= t is a true
positive with probability p and a false positive with probability 1 - p (and the mirror image
below t), so the expected confusion matrix is a sum of scores. Calibrate raw scores first
(e.g. `HistogramCalibrator`) or the estimate inherits their miscalibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import as_float
from safeloop.services.metrics.classification import ClassificationMetrics, Confusion
from safeloop.services.metrics.exceptions import InvalidInputError


@dataclass(frozen=True, slots=True)
class PerformanceEstimate:
    """Expected figures of unlabelled predictions; None for an empty window.

    Precision, recall and F1 are ratios of expected cells, a close approximation of their
    expectations when the window is not tiny.
    """

    count: int
    threshold: float
    expected_confusion: Confusion
    expected_accuracy: float | None
    # Standard deviation of the realised accuracy if the scores are calibrated.
    accuracy_std: float | None
    expected_precision: float | None
    expected_recall: float | None
    expected_f1: float | None


@dataclass(frozen=True, slots=True)
class EstimateComparison:
    """An estimate beside the measured figures of the same predictions, once labelled."""

    estimated_accuracy: float | None
    measured_accuracy: float | None
    # estimated - measured; positive means the estimate was optimistic.
    accuracy_error: float | None
    # accuracy_error in units of the estimate's standard deviation.
    accuracy_z: float | None
    estimated_f1: float | None
    measured_f1: float | None
    f1_error: float | None


def estimate_performance(score: npt.ArrayLike, threshold: float = 0.5) -> PerformanceEstimate:
    """Expected confusion matrix and accuracy of predictions from calibrated scores P(y=1)."""
    scores = as_float(score, "score")
    scores = scores[~np.isnan(scores)]
    if bool(np.any((scores < 0) | (scores > 1))):
        raise InvalidInputError("calibrated scores must lie in [0, 1]")
    predicted = scores >= threshold
    positive_scores = scores[predicted]
    negative_scores = scores[~predicted]
    tp = float(positive_scores.sum())
    fn = float(negative_scores.sum())
    cells = Confusion(
        tp=tp, fp=positive_scores.shape[0] - tp, tn=negative_scores.shape[0] - fn, fn=fn
    )
    count = scores.shape[0]
    # Each prediction is right with probability c = max-side score: a Poisson-binomial count.
    correct = np.where(predicted, scores, 1.0 - scores)
    std = math.sqrt(float(np.sum(correct * (1.0 - correct)))) / count if count else None
    return PerformanceEstimate(
        count=count,
        threshold=threshold,
        expected_confusion=cells,
        expected_accuracy=cells.accuracy,
        accuracy_std=std,
        expected_precision=cells.precision,
        expected_recall=cells.recall,
        expected_f1=cells.f1,
    )


def compare_estimate(
    estimate: PerformanceEstimate, measured: ClassificationMetrics
) -> EstimateComparison:
    """How far the estimate was from what the labels then showed, on the same predictions."""
    accuracy_error = _difference(estimate.expected_accuracy, measured.accuracy)
    z = None
    if accuracy_error is not None and estimate.accuracy_std:
        z = accuracy_error / estimate.accuracy_std
    return EstimateComparison(
        estimated_accuracy=estimate.expected_accuracy,
        measured_accuracy=measured.accuracy,
        accuracy_error=accuracy_error,
        accuracy_z=z,
        estimated_f1=estimate.expected_f1,
        measured_f1=measured.f1,
        f1_error=_difference(estimate.expected_f1, measured.f1),
    )


def _difference(estimated: float | None, measured: float | None) -> float | None:
    return None if estimated is None or measured is None else estimated - measured
