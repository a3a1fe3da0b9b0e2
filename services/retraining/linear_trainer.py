"""The training entry point safeloop ships (and the demo uses): recency-weighted logistic,
softmax (multi-class) or linear regression on the exported window.
`SAFELOOP_RETRAIN_TRAINER` names it by default."""

from __future__ import annotations

from safeloop.services.models.linear import LinearModel, train_linear, train_logistic
from safeloop.services.models.softmax import SoftmaxModel, train_softmax
from safeloop.services.models.task import ModelTask
from safeloop.services.retraining.trainer import TrainingWindow

ENTRY_POINT = "safeloop.services.retraining.linear_trainer:train"


def train(window: TrainingWindow) -> LinearModel | SoftmaxModel:
    """Fit the window's rows, each weighted by its recency weight."""
    rows, targets, weights = window.features(), window.targets(), window.weights()
    if window.task is ModelTask.MULTICLASS:
        return train_softmax(
            rows,
            targets,
            window.feature_names,
            window.version,
            n_classes=window.n_classes,
            sample_weight=weights,
        )
    if window.task is ModelTask.CLASSIFICATION:
        return train_logistic(
            rows, targets, window.feature_names, window.version, sample_weight=weights
        )
    return train_linear(rows, targets, window.feature_names, window.version, sample_weight=weights)
