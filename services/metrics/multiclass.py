"""Multi-class classification metrics from class indices and class probabilities.

Classes are the integers 0..K-1 (ground truth and predictions arrive as floats holding them).
Probabilities enter as three per-row columns rather than an (N, K) matrix, so that windows of
any K share fixed 1-D columns: the probability given to the true class (log loss, Brier), the
top probability (top-label calibration) and the sum of squared probabilities (Brier).
`probability_columns` derives them from a matrix. Undefined figures are None, never NaN.

Averages follow the usual conventions: macro averages run over the classes present in the
window's labels or predictions, a class with an undefined precision or recall counting 0;
micro F1 pools every class's cells (for single-label data it equals accuracy); weighted F1
weights each class by its support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray, IntArray, as_float, same_length
from safeloop.services.metrics.calibration import ReliabilityBins, reliability_bins
from safeloop.services.metrics.exceptions import InvalidInputError

LOG_LOSS_EPSILON = 1e-15


@dataclass(frozen=True, slots=True, eq=False)
class ProbabilityColumns:
    """Per row: P(true class), the top probability, and the sum of squared probabilities."""

    true_class: FloatArray
    top: FloatArray
    squared_sum: FloatArray


@dataclass(frozen=True, slots=True, eq=False)
class MulticlassMetrics:
    """Every multi-class figure of one window of labelled predictions."""

    count: int
    n_classes: int
    # confusion[i, j]: rows whose true class is i and predicted class j.
    confusion: IntArray
    support: tuple[int, ...]
    precision_per_class: tuple[float | None, ...]
    recall_per_class: tuple[float | None, ...]
    f1_per_class: tuple[float | None, ...]
    accuracy: float | None
    macro_precision: float | None
    macro_recall: float | None
    macro_f1: float | None
    micro_f1: float | None
    weighted_f1: float | None
    # From probabilities; None when the window's rows carry none.
    log_loss: float | None
    brier_score: float | None
    # Top-label calibration: confidence of the predicted class against how often it was right.
    expected_calibration_error: float | None
    reliability: ReliabilityBins | None

    @property
    def correct_count(self) -> int:
        """Rows whose predicted class is the true one."""
        return int(np.trace(self.confusion))


def as_classes(values: npt.ArrayLike, name: str) -> IntArray:
    """Class indices as int64; negative or fractional values are refused rather than guessed."""
    array = as_float(values, name)
    if not bool(np.isfinite(array).all()):
        raise InvalidInputError(f"{name} holds NaN or infinite class indices")
    bad = (array < 0) | (array != np.floor(array))
    if bool(np.any(bad)):
        raise InvalidInputError(f"{name} must hold class indices 0..K-1, found {array[bad][:3]!r}")
    return array.astype(np.int64)


def probability_columns(y_true: npt.ArrayLike, probabilities: npt.ArrayLike) -> ProbabilityColumns:
    """The three probability columns of an (N, K) matrix of P(class k) for true classes y_true."""
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim != 2:
        raise InvalidInputError(f"probabilities must be (rows, classes), got {matrix.shape}")
    labels = as_classes(y_true, "y_true")
    same_length("y_true", labels, "probabilities", matrix)
    if bool(np.any(labels >= matrix.shape[1])):
        raise InvalidInputError(f"a label is not one of the {matrix.shape[1]} classes")
    rows = np.arange(labels.shape[0])
    return ProbabilityColumns(
        true_class=matrix[rows, labels] if labels.shape[0] else np.empty(0),
        top=matrix.max(axis=1) if labels.shape[0] else np.empty(0),
        squared_sum=np.einsum("ij,ij->i", matrix, matrix),
    )


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, n_classes: int) -> IntArray:
    """(K, K) counts, true class by row, predicted class by column."""
    truth = as_classes(y_true, "y_true")
    predicted = as_classes(y_pred, "y_pred")
    same_length("y_true", truth, "y_pred", predicted)
    return _confusion(truth, predicted, n_classes)


def _confusion(truth: IntArray, predicted: IntArray, n_classes: int) -> IntArray:
    if truth.shape[0] and max(int(truth.max()), int(predicted.max())) >= n_classes:
        raise InvalidInputError(f"a class index is not below n_classes={n_classes}")
    flat = np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def _ratios(numerator: IntArray, denominator: IntArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _optional(values: FloatArray) -> tuple[float | None, ...]:
    return tuple(None if np.isnan(value) else float(value) for value in values.tolist())


def _macro(values: FloatArray, present: npt.NDArray[np.bool_]) -> float | None:
    if not bool(present.any()):
        return None
    return float(np.nan_to_num(values[present], nan=0.0).mean())


def multiclass_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    n_classes: int | None = None,
    probabilities: ProbabilityColumns | None = None,
    calibration_bins: int = 10,
) -> MulticlassMetrics:
    """All multi-class figures at once; rows whose probability columns hold NaN are left out of
    the probability-based figures only."""
    truth = as_classes(y_true, "y_true")
    predicted = as_classes(y_pred, "y_pred")
    same_length("y_true", truth, "y_pred", predicted)
    count = truth.shape[0]
    seen = 1 + max(int(truth.max()), int(predicted.max())) if count else 0
    k = max(seen, n_classes or 0, 1)
    cells = _confusion(truth, predicted, k)
    true_positive = np.diagonal(cells).astype(np.int64)
    support = cells.sum(axis=1)
    predicted_count = cells.sum(axis=0)
    precision = _ratios(true_positive, predicted_count)
    recall = _ratios(true_positive, support)
    f1 = _ratios(2 * true_positive, support + predicted_count)
    present = (support + predicted_count) > 0
    correct = int(true_positive.sum())
    micro = _ratios(np.array([2 * correct]), np.array([2 * count]))[0]
    weighted = float(np.nan_to_num(f1) @ support / count) if count else None
    log_loss = brier = ece = None
    reliability = None
    if probabilities is not None:
        columns = (probabilities.true_class, probabilities.top, probabilities.squared_sum)
        for name, column in zip(("true_class", "top", "squared_sum"), columns, strict=True):
            same_length("y_true", truth, name, as_float(column, name))
        true_class, top, squared = (np.asarray(c, dtype=np.float64) for c in columns)
        known = ~(np.isnan(true_class) | np.isnan(top) | np.isnan(squared))
        if bool(known.any()):
            p_true = true_class[known]
            log_loss = float(-np.mean(np.log(np.clip(p_true, LOG_LOSS_EPSILON, 1.0))))
            # sum_k (p_k - [k == y])^2 = sum_k p_k^2 - 2 p_y + 1
            brier = float(np.mean(squared[known] - 2.0 * p_true + 1.0))
            hits = truth[known] == predicted[known]
            reliability = reliability_bins(hits, np.clip(top[known], 0.0, 1.0), calibration_bins)
            ece = reliability.expected_calibration_error
    return MulticlassMetrics(
        count=count,
        n_classes=k,
        confusion=cells,
        support=tuple(int(n) for n in support.tolist()),
        precision_per_class=_optional(precision),
        recall_per_class=_optional(recall),
        f1_per_class=_optional(f1),
        accuracy=correct / count if count else None,
        macro_precision=_macro(precision, present),
        macro_recall=_macro(recall, present),
        macro_f1=_macro(f1, present),
        micro_f1=None if np.isnan(micro) else float(micro),
        weighted_f1=weighted,
        log_loss=log_loss,
        brier_score=brier,
        expected_calibration_error=ece,
        reliability=reliability,
    )


def multiclass_metrics_of_probabilities(
    y_true: npt.ArrayLike, probabilities: npt.ArrayLike, calibration_bins: int = 10
) -> MulticlassMetrics:
    """`multiclass_metrics` of an (N, K) probability matrix, predicting its argmax."""
    matrix = np.asarray(probabilities, dtype=np.float64)
    columns = probability_columns(y_true, matrix)
    predicted = matrix.argmax(axis=1) if matrix.shape[0] else np.empty(0)
    return multiclass_metrics(
        y_true,
        predicted,
        n_classes=matrix.shape[1],
        probabilities=columns,
        calibration_bins=calibration_bins,
    )
