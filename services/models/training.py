"""Train demo models on generated data and compute their training baseline once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.metrics.multiclass import multiclass_metrics_of_probabilities
from safeloop.services.models.linear import FloatArray, LinearModel, train_linear, train_logistic
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.softmax import SoftmaxModel, train_softmax
from safeloop.services.models.task import ModelTask

DEFAULT_FEATURES: tuple[str, ...] = ("age", "income", "tenure_months", "sessions_7d")
# The generating weights are fixed so every version learns the same underlying relation.
_TRUE_WEIGHTS_SEED = 20_240_601
_HOLDOUT_SHARE = 0.2


@dataclass(frozen=True)
class Dataset:
    rows: FloatArray
    targets: FloatArray
    feature_names: tuple[str, ...]


def make_dataset(
    task: ModelTask,
    row_count: int,
    feature_names: Sequence[str] = DEFAULT_FEATURES,
    *,
    seed: int = 0,
    feature_shift: float = 0.0,
    n_classes: int = 3,
) -> Dataset:
    """Rows ~ N(shift, 1) per feature; targets follow a fixed linear relation plus noise.

    Multi-class targets are the margin's quantile band (n_classes bands), blurred by noise.
    """
    rng = np.random.default_rng(seed)
    rows = rng.normal(feature_shift, 1.0, (row_count, len(feature_names)))
    margin = true_margin(rows)
    if task is ModelTask.MULTICLASS:
        noisy = margin + rng.normal(0.0, 0.5, row_count)
        cuts = class_cuts(n_classes, len(feature_names))
        return Dataset(rows, np.searchsorted(cuts, noisy).astype(np.float64), tuple(feature_names))
    if task is ModelTask.CLASSIFICATION:
        probability = 1.0 / (1.0 + np.exp(-margin))
        targets = (rng.random(row_count) < probability).astype(np.float64)
    else:
        targets = margin + rng.normal(0.0, 0.5, row_count)
    return Dataset(rows, targets, tuple(feature_names))


def true_margin(rows: FloatArray) -> FloatArray:
    """The generating relation's linear margin for rows of `make_dataset`'s feature layout;
    `sigmoid(margin)` is the positive-class probability (the demo's label feed draws from it)."""
    true_weights = np.random.default_rng(_TRUE_WEIGHTS_SEED).normal(0.0, 1.0, rows.shape[1])
    margin: FloatArray = rows @ true_weights + 0.25
    return margin


def class_cuts(n_classes: int, n_features: int) -> FloatArray:
    """Margin thresholds between the multi-class bands: roughly equal classes on unshifted
    rows (the margin of N(0, 1) rows is ~N(0.25, |w|^2); cuts at its normal quantiles)."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    weights = np.random.default_rng(_TRUE_WEIGHTS_SEED).normal(0.0, 1.0, n_features)
    spread = float(np.sqrt(weights @ weights + 0.25))
    sample = np.random.default_rng(1).normal(0.25, spread, 20_000)
    cuts: FloatArray = np.quantile(sample, np.arange(1, n_classes) / n_classes)
    return cuts


def train_model(
    name: str,
    version: str,
    task: ModelTask,
    dataset: Dataset,
) -> tuple[LinearModel, ModelMetadata]:
    """Fit on 80 % of the rows, measure on the rest, and record the training baseline."""
    split = int(dataset.rows.shape[0] * (1.0 - _HOLDOUT_SHARE))
    train_rows, holdout_rows = dataset.rows[:split], dataset.rows[split:]
    train_targets, holdout_targets = dataset.targets[:split], dataset.targets[split:]
    if task is ModelTask.MULTICLASS:
        raise ValueError("multi-class models are trained by train_multiclass_model")
    model: LinearModel
    if task is ModelTask.CLASSIFICATION:
        model = train_logistic(train_rows, train_targets, dataset.feature_names, version)
    else:
        model = train_linear(train_rows, train_targets, dataset.feature_names, version)
    holdout_scores = model.predict_batch(holdout_rows)
    primary, metrics = holdout_metrics(task, holdout_scores, holdout_targets)
    # Regressors keep their holdout residuals, for residual drift.
    residual = holdout_targets - holdout_scores if task is ModelTask.REGRESSION else None
    baseline = ModelBaseline.from_training_data(
        {feature: dataset.rows[:, index] for index, feature in enumerate(dataset.feature_names)},
        score=model.predict_batch(dataset.rows),
        residual=residual,
    )
    metadata = ModelMetadata(
        name=name,
        version=version,
        task=task,
        kind=model.kind.value,
        feature_names=dataset.feature_names,
        created_at_ms=time.time_ns() // 1_000_000,
        training_rows=split,
        baseline=baseline,
        primary_metric=primary,
        metrics=metrics,
    )
    return model, metadata


def holdout_metrics(
    task: ModelTask, scores: FloatArray, targets: FloatArray
) -> tuple[str, dict[str, float]]:
    """The primary metric's name and every holdout metric: accuracy or RMSE first."""
    if task is ModelTask.CLASSIFICATION:
        clipped = np.clip(scores, 1e-12, 1.0 - 1e-12)
        log_loss = -np.mean(targets * np.log(clipped) + (1.0 - targets) * np.log(1.0 - clipped))
        accuracy = np.mean((scores >= 0.5) == (targets >= 0.5))
        return "accuracy", {
            "accuracy": float(accuracy),
            "log_loss": float(log_loss),
            "positive_rate": float(targets.mean()),
        }
    errors = scores - targets
    return "rmse", {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
    }


def multiclass_holdout_metrics(
    probabilities: FloatArray, targets: FloatArray
) -> tuple[str, dict[str, float]]:
    """Macro F1 (the primary metric), accuracy and log loss of an (N, K) probability matrix."""
    figures = multiclass_metrics_of_probabilities(targets, probabilities)
    metrics = {
        "macro_f1": figures.macro_f1,
        "accuracy": figures.accuracy,
        "log_loss": figures.log_loss,
    }
    return "macro_f1", {name: float(value) for name, value in metrics.items() if value is not None}


def train_multiclass_model(
    name: str, version: str, dataset: Dataset
) -> tuple[SoftmaxModel, ModelMetadata]:
    """`train_model` for multi-class targets 0..K-1: softmax regression, judged by macro F1."""
    split = int(dataset.rows.shape[0] * (1.0 - _HOLDOUT_SHARE))
    model = train_softmax(
        dataset.rows[:split], dataset.targets[:split], dataset.feature_names, version
    )
    primary, metrics = multiclass_holdout_metrics(
        model.predict_proba_batch(dataset.rows[split:]), dataset.targets[split:]
    )
    metadata = ModelMetadata(
        name=name,
        version=version,
        task=ModelTask.MULTICLASS,
        kind=model.kind,
        feature_names=dataset.feature_names,
        created_at_ms=time.time_ns() // 1_000_000,
        training_rows=split,
        baseline=ModelBaseline.from_training_data(
            {name: dataset.rows[:, index] for index, name in enumerate(dataset.feature_names)},
            score=model.predict_batch(dataset.rows),
        ),
        primary_metric=primary,
        metrics=metrics,
    )
    return model, metadata
