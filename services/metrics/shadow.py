"""Shadow versus production on the same requests: agreement, differences, accuracy side by side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray, IntArray, as_float, same_length
from safeloop.services.metrics.classification import confusion
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.latency import percentiles
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.regression import regression_metrics


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """How a shadow model's answers differ from production's on paired requests.

    For classifiers the scores are P(y=1) and agreement compares the predicted classes; for
    regressors two answers agree when |difference| <= the tolerance. `*_performance` is accuracy
    (classification) or RMSE (regression) over the pairs that have a label.
    """

    task: Task
    pair_count: int
    agreement_rate: float | None
    mean_difference: float | None
    abs_difference_p50: float | None
    abs_difference_p95: float | None
    abs_difference_p99: float | None
    abs_difference_max: float | None
    labelled_count: int
    production_performance: float | None
    shadow_performance: float | None


def pair_by_id(
    production_ids: npt.ArrayLike, shadow_ids: npt.ArrayLike
) -> tuple[IntArray, IntArray]:
    """Row indices (production, shadow) of the prediction ids present on both sides.

    Shadow rows reuse the production prediction_id; ids must be unique on each side.
    """
    production = np.asarray(production_ids)
    shadow = np.asarray(shadow_ids)
    if np.unique(production).shape[0] != production.shape[0]:
        raise InvalidInputError("production prediction ids are not unique")
    if np.unique(shadow).shape[0] != shadow.shape[0]:
        raise InvalidInputError("shadow prediction ids are not unique")
    _, production_rows, shadow_rows = np.intersect1d(
        production, shadow, assume_unique=True, return_indices=True
    )
    return production_rows.astype(np.int64), shadow_rows.astype(np.int64)


def compare_shadow(
    task: Task | str,
    production_score: npt.ArrayLike,
    shadow_score: npt.ArrayLike,
    ground_truth: npt.ArrayLike | None = None,
    *,
    threshold: float = 0.5,
    tolerance: float = 0.0,
) -> ShadowComparison:
    """Compare aligned answers (row i of each side is the same request); NaN truth = no label."""
    task = Task(task)
    production = as_float(production_score, "production_score")
    shadow = as_float(shadow_score, "shadow_score")
    same_length("production_score", production, "shadow_score", shadow)
    answered = ~(np.isnan(production) | np.isnan(shadow))
    if ground_truth is None:
        truth: FloatArray = np.full(production.shape[0], np.nan)
    else:
        truth = as_float(ground_truth, "ground_truth")
        same_length("production_score", production, "ground_truth", truth)
    production, shadow, truth = production[answered], shadow[answered], truth[answered]
    count = production.shape[0]
    difference = shadow - production
    spread = percentiles(np.abs(difference))
    if task is Task.CLASSIFICATION:
        agree = (production >= threshold) == (shadow >= threshold)
    else:
        agree = np.abs(difference) <= tolerance
    labelled = ~np.isnan(truth)
    production_performance, shadow_performance = _side_by_side(
        task, truth[labelled], production[labelled], shadow[labelled], threshold
    )
    return ShadowComparison(
        task=task,
        pair_count=count,
        agreement_rate=float(agree.mean()) if count else None,
        mean_difference=float(difference.mean()) if count else None,
        abs_difference_p50=spread.p50,
        abs_difference_p95=spread.p95,
        abs_difference_p99=spread.p99,
        abs_difference_max=float(np.abs(difference).max()) if count else None,
        labelled_count=int(np.count_nonzero(labelled)),
        production_performance=production_performance,
        shadow_performance=shadow_performance,
    )


def _side_by_side(
    task: Task, truth: FloatArray, production: FloatArray, shadow: FloatArray, threshold: float
) -> tuple[float | None, float | None]:
    if task is Task.CLASSIFICATION:
        return (
            confusion(truth, production, threshold).accuracy,
            confusion(truth, shadow, threshold).accuracy,
        )
    if task is Task.MULTICLASS:
        # Predictions are class indices: accuracy is the share predicted exactly.
        count = truth.shape[0]
        if count == 0:
            return None, None
        return float(np.mean(production == truth)), float(np.mean(shadow == truth))
    return regression_metrics(truth, production).rmse, regression_metrics(truth, shadow).rmse
