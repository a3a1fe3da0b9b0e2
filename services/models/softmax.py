"""Numpy multinomial logistic (softmax) regression: a small, real multi-class model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from safeloop.services.models.exceptions import ModelLoadError, TrainingError
from safeloop.services.models.linear import FloatArray, sample_weights

SOFTMAX_KIND = "softmax"


@dataclass(frozen=True, eq=False)
class SoftmaxModel:
    """P(class k) = softmax(bias + weights . x)_k; `predict` answers the most likely class."""

    version: str
    feature_names: tuple[str, ...]
    # (n_classes, n_features) and (n_classes,)
    weights: FloatArray
    bias: FloatArray

    kind = SOFTMAX_KIND

    def __post_init__(self) -> None:
        classes = self.bias.shape[0] if self.bias.ndim == 1 else 0
        if classes < 2 or self.weights.shape != (classes, len(self.feature_names)):
            raise TrainingError(
                f"softmax needs (classes >= 2, {len(self.feature_names)}) weights and one bias "
                f"per class, got {self.weights.shape} and {self.bias.shape}"
            )

    @property
    def n_classes(self) -> int:
        return int(self.bias.shape[0])

    def predict_proba(self, features: Mapping[str, float]) -> list[float]:
        """P(class k) at index k, summing to 1."""
        margins = self.bias.tolist()
        for column, name in enumerate(self.feature_names):
            value = features[name]
            for k in range(len(margins)):
                margins[k] += float(self.weights[k, column]) * value
        top = max(margins)
        exps = [math.exp(m - top) for m in margins]
        total = sum(exps)
        return [e / total for e in exps]

    def predict(self, features: Mapping[str, float]) -> float:
        probabilities = self.predict_proba(features)
        return float(max(range(len(probabilities)), key=probabilities.__getitem__))

    def predict_proba_batch(self, rows: FloatArray) -> FloatArray:
        """(n_rows, n_classes) probabilities of a `(n_rows, n_features)` matrix."""
        return _softmax(rows @ self.weights.T + self.bias)

    def predict_batch(self, rows: FloatArray) -> FloatArray:
        return np.asarray(self.predict_proba_batch(rows).argmax(axis=1), dtype=np.float64)


def _softmax(margins: FloatArray) -> FloatArray:
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)


def train_softmax(
    rows: FloatArray,
    targets: FloatArray,
    feature_names: Sequence[str],
    version: str,
    *,
    n_classes: int | None = None,
    learning_rate: float = 0.5,
    epochs: int = 500,
    l2: float = 1e-3,
    sample_weight: FloatArray | None = None,
) -> SoftmaxModel:
    """Full-batch gradient descent on the L2-regularised (weighted) cross-entropy; targets are
    0..K-1, `n_classes` at least (a class the rows happen to lack keeps its place)."""
    if rows.ndim != 2 or rows.shape[1] != len(feature_names) or targets.shape != (rows.shape[0],):
        raise TrainingError(f"rows must be (n, {len(feature_names)}) with one target per row")
    if rows.shape[0] < 2 or not (np.isfinite(rows).all() and np.isfinite(targets).all()):
        raise TrainingError("need at least two finite rows to train")
    if bool(np.any((targets < 0) | (targets != np.floor(targets)))):
        raise TrainingError("softmax targets must be class indices 0..K-1")
    labels = targets.astype(np.int64)
    classes = max(int(labels.max()) + 1, n_classes or 0, 2)
    one_hot = np.eye(classes)[labels]
    row_weights = sample_weights(sample_weight, rows.shape[0])
    row_weights = (row_weights / row_weights.sum())[:, np.newaxis]
    weights = np.zeros((classes, rows.shape[1]))
    bias = np.zeros(classes)
    for _ in range(epochs):
        error = (_softmax(rows @ weights.T + bias) - one_hot) * row_weights
        weights -= learning_rate * (error.T @ rows + l2 * weights)
        bias -= learning_rate * error.sum(axis=0)
    return SoftmaxModel(version, tuple(feature_names), weights, bias)


def load_softmax(path: Path, version: str, feature_names: tuple[str, ...]) -> SoftmaxModel:
    """A stored softmax artifact (`weights`, `bias` arrays); defects raise `ModelLoadError`."""
    try:
        with np.load(path, allow_pickle=False) as artifact:
            weights = np.asarray(artifact["weights"], dtype=np.float64)
            bias = np.asarray(artifact["bias"], dtype=np.float64)
    except FileNotFoundError as exc:
        raise ModelLoadError(path, "model.npz is missing") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(path, f"model.npz is unreadable: {exc!r}") from exc
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise ModelLoadError(path, "weights hold NaN or infinite values")
    try:
        return SoftmaxModel(version, feature_names, weights, bias)
    except TrainingError as exc:
        raise ModelLoadError(path, str(exc)) from exc
