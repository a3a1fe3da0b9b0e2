"""Confidence-based performance estimation for multi-class classifiers: figures before labels.

With calibrated class probabilities P[n, k] = P(y_n = k) and the predicted class the most
probable one, row n is of true class i with probability P[n, i] whatever it was predicted as;
so the expected confusion matrix is a sum of probability rows, grouped by predicted class,
and the expected accuracy is the mean top probability (the binary CBPE of `estimation` is the
K = 2 case). Calibrate first, or the estimate inherits the miscalibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray, as_float
from safeloop.services.metrics.exceptions import InvalidInputError

# How far a probability row may sum from 1 before it is refused rather than renormalised.
_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True, eq=False)
class MulticlassEstimate:
    """Expected figures of unlabelled multi-class predictions; None for an empty window."""

    count: int
    n_classes: int
    # expected_confusion[i, j]: expected rows of true class i predicted as j.
    expected_confusion: FloatArray
    expected_accuracy: float | None
    # Standard deviation of the realised accuracy if the probabilities are calibrated.
    accuracy_std: float | None
    expected_precision_per_class: tuple[float | None, ...]
    expected_recall_per_class: tuple[float | None, ...]
    # Over the classes with any expected rows (true or predicted); undefined ratios count 0.
    expected_macro_f1: float | None


@dataclass(frozen=True, slots=True)
class AccuracyEstimate:
    """The expected accuracy of predictions from the probabilities of the classes they chose."""

    count: int
    expected_accuracy: float | None
    accuracy_std: float | None


def estimate_top_label_accuracy(top_probability: npt.ArrayLike) -> AccuracyEstimate:
    """Each prediction is right with the probability of its chosen class: a Poisson-binomial
    count of right answers (needs only the top probability per row; NaN rows left out)."""
    top = as_float(top_probability, "top_probability")
    top = top[~np.isnan(top)]
    if bool(np.any((top < 0) | (top > 1))):
        raise InvalidInputError("class probabilities must lie in [0, 1]")
    count = top.shape[0]
    if not count:
        return AccuracyEstimate(0, None, None)
    std = math.sqrt(float(np.sum(top * (1.0 - top)))) / count
    return AccuracyEstimate(count, float(top.mean()), std)


def estimate_multiclass_performance(probabilities: npt.ArrayLike) -> MulticlassEstimate:
    """Expected confusion matrix, accuracy and F1 of argmax predictions from an (N, K) matrix
    of calibrated class probabilities (rows with a NaN are left out)."""
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise InvalidInputError(f"class probabilities must be (rows, K >= 2), got {matrix.shape}")
    matrix = matrix[~np.isnan(matrix).any(axis=1)]
    if bool(np.any((matrix < 0) | (matrix > 1))):
        raise InvalidInputError("class probabilities must lie in [0, 1]")
    if bool(np.any(np.abs(matrix.sum(axis=1) - 1.0) > _SUM_TOLERANCE)):
        raise InvalidInputError("each row of class probabilities must sum to 1")
    count, n_classes = matrix.shape
    predicted = matrix.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes))
    # Column j gathers the probability rows of everything predicted as j.
    np.add.at(confusion.T, predicted, matrix)
    accuracy = estimate_top_label_accuracy(matrix[np.arange(count), predicted])
    hits = np.diag(confusion)
    precision = _ratios(hits, confusion.sum(axis=0))
    recall = _ratios(hits, confusion.sum(axis=1))
    present = (confusion.sum(axis=0) > 0) | (confusion.sum(axis=1) > 0)
    return MulticlassEstimate(
        count=count,
        n_classes=n_classes,
        expected_confusion=confusion,
        expected_accuracy=accuracy.expected_accuracy,
        accuracy_std=accuracy.accuracy_std,
        expected_precision_per_class=precision,
        expected_recall_per_class=recall,
        expected_macro_f1=_macro_f1(precision, recall, present),
    )


def _ratios(numerator: FloatArray, denominator: FloatArray) -> tuple[float | None, ...]:
    return tuple(
        float(n / d) if d > 0 else None for n, d in zip(numerator, denominator, strict=True)
    )


def _macro_f1(
    precision: tuple[float | None, ...],
    recall: tuple[float | None, ...],
    present: npt.NDArray[np.bool_],
) -> float | None:
    scores = []
    for class_precision, class_recall, counted in zip(precision, recall, present, strict=True):
        if not counted:
            continue
        p, r = class_precision or 0.0, class_recall or 0.0
        scores.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return float(np.mean(scores)) if scores else None
