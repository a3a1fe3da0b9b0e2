"""Residual drift of a regressor: how its errors (truth - prediction) moved since training.

The training residuals are kept as a quantile baseline (`ModelBaseline.residual`, from the
holdout set); live residuals are compared with it like a feature, so a model whose errors
grew, shifted (bias) or changed shape is seen even when MAE alone still looks acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import as_float, same_length
from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.drift import DriftMetrics, drift_of_sample


@dataclass(frozen=True, slots=True)
class ResidualDrift:
    """Live residual summary and, with a training residual baseline, its drift from it."""

    count: int
    # Mean of truth - prediction: positive when the model predicts too low (bias).
    mean: float | None
    std: float | None
    # Training residuals' mean, for the bias shift; None without a baseline.
    baseline_mean: float | None
    drift: DriftMetrics | None


def residual_drift(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, baseline: Baseline | None = None
) -> ResidualDrift:
    """Residual mean, spread and drift against `baseline`; rows with NaN on either side skipped."""
    truth = as_float(y_true, "y_true")
    predicted = as_float(y_pred, "y_pred")
    same_length("y_true", truth, "y_pred", predicted)
    residual = truth - predicted
    residual = residual[np.isfinite(residual)]
    count = residual.shape[0]
    baseline_mean = None
    if baseline is not None:
        baseline_mean = float(baseline.expected @ baseline.bin_means)
    if count == 0:
        return ResidualDrift(0, None, None, baseline_mean, None)
    return ResidualDrift(
        count=count,
        mean=float(residual.mean()),
        std=float(residual.std()),
        baseline_mean=baseline_mean,
        drift=None if baseline is None else drift_of_sample(baseline, residual),
    )
