"""Binary classification metrics from labels (0/1) and scores P(y=1) in [0, 1].

A metric that has no defined value on the given window (no rows, one class only, a zero
denominator) is None, never NaN and never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import (
    BoolArray,
    FloatArray,
    as_binary,
    as_float,
    same_length,
)
from safeloop.services.metrics.calibration import ReliabilityBins, reliability_bins
from safeloop.services.metrics.exceptions import InvalidInputError

LOG_LOSS_EPSILON = 1e-15


@dataclass(frozen=True, slots=True)
class Confusion:
    """Confusion-matrix cells; floats so that expected (CBPE) and counted cells share a type."""

    tp: float
    fp: float
    tn: float
    fn: float

    @property
    def total(self) -> float:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float | None:
        total = self.total
        return (self.tp + self.tn) / total if total else None

    @property
    def precision(self) -> float | None:
        predicted = self.tp + self.fp
        return self.tp / predicted if predicted else None

    @property
    def recall(self) -> float | None:
        actual = self.tp + self.fn
        return self.tp / actual if actual else None

    @property
    def f1(self) -> float | None:
        # 2TP / (2TP + FP + FN) equals the harmonic mean and stays defined when precision is not.
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None


@dataclass(frozen=True, slots=True)
class ClassificationMetrics:
    """Every classification figure of one window of labelled predictions."""

    count: int
    positive_count: int
    correct_count: int
    threshold: float
    confusion: Confusion
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None
    log_loss: float | None
    brier_score: float | None
    expected_calibration_error: float | None
    reliability: ReliabilityBins


def _inputs(y_true: npt.ArrayLike, score: npt.ArrayLike) -> tuple[BoolArray, FloatArray]:
    labels = as_binary(y_true, "y_true")
    scores = as_float(score, "score")
    same_length("y_true", labels, "score", scores)
    if not bool(np.isfinite(scores).all()):
        raise InvalidInputError("score holds NaN or infinite values")
    return labels, scores


def confusion(y_true: npt.ArrayLike, score: npt.ArrayLike, threshold: float = 0.5) -> Confusion:
    """Counts with "predicted positive" meaning score >= threshold."""
    return _confusion(*_inputs(y_true, score), threshold)


def _confusion(labels: BoolArray, scores: FloatArray, threshold: float) -> Confusion:
    predicted = scores >= threshold
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted)) - tp
    fn = int(np.count_nonzero(labels)) - tp
    return Confusion(tp=tp, fp=fp, tn=labels.shape[0] - tp - fp - fn, fn=fn)


def roc_auc(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float | None:
    """Area under the ROC curve by the Mann-Whitney statistic, tied scores averaging their ranks.

    Equals P(score of a random positive > score of a random negative) + 0.5 P(tie); None when
    the window lacks positives or negatives.
    """
    return _roc_auc(*_inputs(y_true, score))


def _roc_auc(labels: BoolArray, scores: FloatArray) -> float | None:
    positives = int(np.count_nonzero(labels))
    negatives = labels.shape[0] - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts_group = np.empty(ordered.shape[0], dtype=np.bool_)
    starts_group[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_group[1:])
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], ordered.shape[0])
    # 1-based ranks start+1 .. end share their mean.
    mean_rank = (starts + 1 + ends) / 2.0
    positives_per_group = np.bincount(group, weights=labels[order], minlength=starts.shape[0])
    rank_sum = float(positives_per_group @ mean_rank)
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(
    y_true: npt.ArrayLike, score: npt.ArrayLike, epsilon: float = LOG_LOSS_EPSILON
) -> float | None:
    """Mean negative log-likelihood with scores clipped to [epsilon, 1 - epsilon]."""
    return _log_loss(*_inputs(y_true, score), epsilon)


def _log_loss(labels: BoolArray, scores: FloatArray, epsilon: float) -> float | None:
    if labels.shape[0] == 0:
        return None
    clipped = np.clip(scores, epsilon, 1.0 - epsilon)
    return float(-np.mean(np.where(labels, np.log(clipped), np.log1p(-clipped))))


def brier_score(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float | None:
    """Mean squared difference between score and label."""
    return _brier_score(*_inputs(y_true, score))


def _brier_score(labels: BoolArray, scores: FloatArray) -> float | None:
    if labels.shape[0] == 0:
        return None
    return float(np.mean((scores - labels) ** 2))


def classification_metrics(
    y_true: npt.ArrayLike,
    score: npt.ArrayLike,
    threshold: float = 0.5,
    calibration_bins: int = 10,
) -> ClassificationMetrics:
    """All classification figures at once; an empty window gives counts 0 and None elsewhere."""
    labels, scores = _inputs(y_true, score)
    cells = _confusion(labels, scores, threshold)
    reliability = reliability_bins(labels, scores, calibration_bins)
    return ClassificationMetrics(
        count=labels.shape[0],
        positive_count=int(np.count_nonzero(labels)),
        correct_count=int(cells.tp + cells.tn),
        threshold=threshold,
        confusion=cells,
        accuracy=cells.accuracy,
        precision=cells.precision,
        recall=cells.recall,
        f1=cells.f1,
        roc_auc=_roc_auc(labels, scores),
        log_loss=_log_loss(labels, scores, LOG_LOSS_EPSILON),
        brier_score=_brier_score(labels, scores),
        expected_calibration_error=reliability.expected_calibration_error,
        reliability=reliability,
    )
