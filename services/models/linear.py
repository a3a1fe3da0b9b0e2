"""Numpy linear and logistic regression: small, real models for demos and tests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from safeloop.services.models.exceptions import TrainingError

FloatArray = npt.NDArray[np.float64]


class LinearKind(StrEnum):
    LINEAR = "linear"
    LOGISTIC = "logistic"


@dataclass(frozen=True, eq=False)
class LinearModel:
    """`bias + weights . x`; regression scores are returned as they are."""

    version: str
    feature_names: tuple[str, ...]
    weights: FloatArray
    bias: float

    kind = LinearKind.LINEAR

    def __post_init__(self) -> None:
        if self.weights.shape != (len(self.feature_names),):
            raise TrainingError(
                f"{len(self.feature_names)} features but weights of shape {self.weights.shape}"
            )

    def _margin(self, features: Mapping[str, float]) -> float:
        total = self.bias
        for name, weight in zip(self.feature_names, self.weights.tolist(), strict=True):
            total += weight * features[name]
        return total

    def predict(self, features: Mapping[str, float]) -> float:
        return self._margin(features)

    def predict_batch(self, rows: FloatArray) -> FloatArray:
        """Score a `(n_rows, n_features)` matrix whose columns follow `feature_names`."""
        return np.asarray(rows @ self.weights + self.bias, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class LogisticModel(LinearModel):
    """`sigmoid(bias + weights . x)`: the probability of the positive class."""

    kind = LinearKind.LOGISTIC

    def predict(self, features: Mapping[str, float]) -> float:
        margin = self._margin(features)
        # Split by sign so exp never overflows.
        if margin >= 0:
            return 1.0 / (1.0 + math.exp(-margin))
        exp_margin = math.exp(margin)
        return exp_margin / (1.0 + exp_margin)

    def predict_batch(self, rows: FloatArray) -> FloatArray:
        margins = rows @ self.weights + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(margins, -500, 500))), dtype=np.float64)


def _check_training_data(
    rows: FloatArray, targets: FloatArray, feature_names: Sequence[str]
) -> None:
    if rows.ndim != 2 or rows.shape[1] != len(feature_names):
        raise TrainingError(f"rows must be (n, {len(feature_names)}), got {rows.shape}")
    if targets.shape != (rows.shape[0],):
        raise TrainingError(f"targets must be ({rows.shape[0]},), got {targets.shape}")
    if rows.shape[0] < 2:
        raise TrainingError("need at least two rows to train")
    if not (np.isfinite(rows).all() and np.isfinite(targets).all()):
        raise TrainingError("training data holds NaN or infinite values")


def train_linear(
    rows: FloatArray,
    targets: FloatArray,
    feature_names: Sequence[str],
    version: str,
    *,
    sample_weight: FloatArray | None = None,
) -> LinearModel:
    """(Weighted) least squares with an intercept."""
    _check_training_data(rows, targets, feature_names)
    root = np.sqrt(sample_weights(sample_weight, rows.shape[0]))
    design = np.hstack([rows, np.ones((rows.shape[0], 1))]) * root[:, None]
    solution, *_ = np.linalg.lstsq(design, targets * root, rcond=None)
    weights = np.asarray(solution[:-1], dtype=np.float64)
    return LinearModel(version, tuple(feature_names), weights, float(solution[-1]))


def train_logistic(
    rows: FloatArray,
    targets: FloatArray,
    feature_names: Sequence[str],
    version: str,
    *,
    learning_rate: float = 0.5,
    epochs: int = 500,
    l2: float = 1e-3,
    sample_weight: FloatArray | None = None,
) -> LogisticModel:
    """Full-batch gradient descent on the L2-regularised (weighted) log loss; targets are 0/1."""
    _check_training_data(rows, targets, feature_names)
    if not np.isin(targets, (0.0, 1.0)).all():
        raise TrainingError("logistic regression targets must be 0 or 1")
    row_weights = sample_weights(sample_weight, rows.shape[0])
    row_weights = row_weights / row_weights.sum()
    weights = np.zeros(rows.shape[1])
    bias = 0.0
    for _ in range(epochs):
        probabilities = 1.0 / (1.0 + np.exp(-np.clip(rows @ weights + bias, -500, 500)))
        error = (probabilities - targets) * row_weights
        weights -= learning_rate * (rows.T @ error + l2 * weights)
        bias -= learning_rate * float(error.sum())
    return LogisticModel(version, tuple(feature_names), weights, bias)


def sample_weights(sample_weight: FloatArray | None, n_rows: int) -> FloatArray:
    """Per-row weights (all 1 by default); they must be finite, non-negative, not all 0."""
    if sample_weight is None:
        return np.ones(n_rows)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_rows,):
        raise TrainingError(f"sample_weight must be ({n_rows},), got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or not weights.sum() > 0:
        raise TrainingError("sample_weight must be finite, non-negative and not all zero")
    return weights
