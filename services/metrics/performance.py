"""Model performance over one window of feedback rows -> `PerformanceSnapshot`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import as_float, same_length
from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.classification import ClassificationMetrics, classification_metrics
from safeloop.services.metrics.labels import label_coverage, label_delay_percentiles
from safeloop.services.metrics.multiclass import (
    MulticlassMetrics,
    ProbabilityColumns,
    multiclass_metrics,
)
from safeloop.services.metrics.regression import RegressionMetrics, regression_metrics
from safeloop.services.metrics.residuals import ResidualDrift, residual_drift
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, Columns

# The columns a feedback window holds; NaN marks "no value" (no label yet, no prediction).
# `score` is P(y=1) for binary classifiers, the predicted class index for multi-class ones and
# the predicted value for regressors. The last three are multi-class only (NaN otherwise):
# P(true class), the top probability and the sum of squared class probabilities.
FEEDBACK_COLUMNS: Final = {
    TIMESTAMP_COLUMN: np.int64,
    "score": np.float64,
    "ground_truth": np.float64,
    "label_delay_ms": np.float64,
    "true_class_probability": np.float64,
    "top_probability": np.float64,
    "probability_squared_sum": np.float64,
}


class Task(StrEnum):
    """What kind of model the figures describe."""

    # Binary: the score is P(y=1).
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    # Classes 0..K-1: the score is the predicted class, probabilities ride beside it.
    MULTICLASS = "multiclass"


class PerformanceMetric(StrEnum):
    """A single figure that gates and retraining decisions can compare."""

    ACCURACY = "accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    F1 = "f1"
    ROC_AUC = "roc_auc"
    LOG_LOSS = "log_loss"
    BRIER_SCORE = "brier_score"
    MAE = "mae"
    RMSE = "rmse"
    R2 = "r2"
    MACRO_F1 = "macro_f1"
    MICRO_F1 = "micro_f1"
    WEIGHTED_F1 = "weighted_f1"
    MACRO_PRECISION = "macro_precision"
    MACRO_RECALL = "macro_recall"

    @property
    def higher_is_better(self) -> bool:
        return self not in _LOWER_IS_BETTER


_LOWER_IS_BETTER: Final = frozenset(
    {
        PerformanceMetric.LOG_LOSS,
        PerformanceMetric.BRIER_SCORE,
        PerformanceMetric.MAE,
        PerformanceMetric.RMSE,
    }
)


@dataclass(frozen=True, slots=True)
class PerformanceSnapshot:
    """Label coverage and delay plus the task's metrics over the labelled rows of a window."""

    task: Task
    predicted_count: int
    labelled_count: int
    label_coverage: float | None
    label_delay_p50_ms: float | None
    label_delay_p95_ms: float | None
    label_delay_p99_ms: float | None
    classification: ClassificationMetrics | None
    regression: RegressionMetrics | None
    multiclass: MulticlassMetrics | None = None
    # Regression: the residuals' summary and drift from the training residuals.
    residuals: ResidualDrift | None = None

    def metric(self, name: PerformanceMetric) -> float | None:
        """One figure by name; None when undefined or not computed for this task."""
        source: object = {
            Task.CLASSIFICATION: self.classification,
            Task.REGRESSION: self.regression,
            Task.MULTICLASS: self.multiclass,
        }[self.task]
        value = getattr(source, name.value, None)
        return None if value is None else float(value)


def relative_drop(
    reference: float | None, current: float | None, metric: PerformanceMetric
) -> float | None:
    """How much worse `current` is than `reference`, as a fraction of |reference|.

    Positive means worse whatever the metric's direction; None when either side is undefined
    or the reference is 0 (no scale to be relative to).
    """
    if reference is None or current is None or reference == 0:
        return None
    worse_by = reference - current if metric.higher_is_better else current - reference
    return worse_by / abs(reference)


def performance_snapshot(
    task: Task | str,
    score: npt.ArrayLike,
    ground_truth: npt.ArrayLike,
    *,
    label_delay_ms: npt.ArrayLike | None = None,
    predicted_count: int | None = None,
    threshold: float = 0.5,
    calibration_bins: int = 10,
    probabilities: ProbabilityColumns | None = None,
    residual_baseline: Baseline | None = None,
) -> PerformanceSnapshot:
    """Metrics over rows that have both a score and a label (NaN marks either missing).

    `predicted_count` is the coverage denominator; it defaults to the number of rows given.
    `task` may be any str enum with the same values (e.g. the model store's `ModelTask`).
    Multi-class: `score` is the predicted class and `probabilities` (aligned with the rows,
    optional) the probability columns.
    """
    task = Task(task)
    scores = as_float(score, "score")
    truth = as_float(ground_truth, "ground_truth")
    same_length("score", scores, "ground_truth", truth)
    labelled = ~(np.isnan(truth) | np.isnan(scores))
    labelled_count = int(np.count_nonzero(labelled))
    denominator = scores.shape[0] if predicted_count is None else predicted_count
    if label_delay_ms is None:
        delays = label_delay_percentiles(np.empty(0))
    else:
        delay_values = as_float(label_delay_ms, "label_delay_ms")
        same_length("score", scores, "label_delay_ms", delay_values)
        delays = label_delay_percentiles(delay_values[labelled])
    scores, truth = scores[labelled], truth[labelled]
    classification = (
        classification_metrics(truth, scores, threshold, calibration_bins)
        if task is Task.CLASSIFICATION
        else None
    )
    regression = regression_metrics(truth, scores) if task is Task.REGRESSION else None
    residuals = None
    if task is Task.REGRESSION:
        residuals = residual_drift(truth, scores, residual_baseline)
    multiclass = None
    if task is Task.MULTICLASS:
        # A label or prediction that is no class index (negative, fractional) cannot be placed
        # in the confusion matrix: such rows are left out rather than failing the window.
        classes = (truth >= 0) & (truth == np.floor(truth)) & (scores >= 0)
        classes &= scores == np.floor(scores)
        kept = None
        if probabilities is not None:
            rows = np.flatnonzero(labelled)[classes]
            kept = ProbabilityColumns(
                as_float(probabilities.true_class, "true_class")[rows],
                as_float(probabilities.top, "top")[rows],
                as_float(probabilities.squared_sum, "squared_sum")[rows],
            )
        multiclass = multiclass_metrics(
            truth[classes], scores[classes], probabilities=kept, calibration_bins=calibration_bins
        )
    return PerformanceSnapshot(
        task=task,
        predicted_count=denominator,
        labelled_count=labelled_count,
        label_coverage=label_coverage(labelled_count, denominator),
        label_delay_p50_ms=delays.p50,
        label_delay_p95_ms=delays.p95,
        label_delay_p99_ms=delays.p99,
        classification=classification,
        regression=regression,
        multiclass=multiclass,
        residuals=residuals,
    )


def performance_of_window(
    task: Task | str,
    view: Columns,
    predicted_count: int | None = None,
    threshold: float = 0.5,
    residual_baseline: Baseline | None = None,
) -> PerformanceSnapshot:
    """`performance_snapshot` of a window holding `FEEDBACK_COLUMNS`."""
    return performance_snapshot(
        task,
        view["score"],
        view["ground_truth"],
        label_delay_ms=view["label_delay_ms"],
        predicted_count=predicted_count,
        threshold=threshold,
        probabilities=ProbabilityColumns(
            view["true_class_probability"], view["top_probability"], view["probability_squared_sum"]
        ),
        residual_baseline=residual_baseline,
    )
