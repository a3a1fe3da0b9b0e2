"""Regression metrics: MAE, RMSE, R²; None where the window leaves them undefined."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray, as_float, same_length
from safeloop.services.metrics.exceptions import InvalidInputError


@dataclass(frozen=True, slots=True)
class RegressionMetrics:
    """Errors of one window of labelled numeric predictions."""

    count: int
    mae: float | None
    rmse: float | None
    # None when the labels do not vary (R² divides by their variance).
    r2: float | None


def _inputs(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    truth = as_float(y_true, "y_true")
    predicted = as_float(y_pred, "y_pred")
    same_length("y_true", truth, "y_pred", predicted)
    if not (bool(np.isfinite(truth).all()) and bool(np.isfinite(predicted).all())):
        raise InvalidInputError("y_true and y_pred must be finite")
    return truth, predicted


def regression_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> RegressionMetrics:
    """MAE, RMSE and R² (1 - SS_res / SS_tot) of the given pairs."""
    truth, predicted = _inputs(y_true, y_pred)
    count = truth.shape[0]
    if count == 0:
        return RegressionMetrics(0, None, None, None)
    residual = truth - predicted
    squared = float(residual @ residual)
    centred = truth - truth.mean()
    total = float(centred @ centred)
    return RegressionMetrics(
        count=count,
        mae=float(np.abs(residual).mean()),
        rmse=float(np.sqrt(squared / count)),
        r2=1.0 - squared / total if total > 0 else None,
    )
