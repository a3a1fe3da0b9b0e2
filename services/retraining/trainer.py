"""The user's training entry point: a `module:function` taking the window, returning a model."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.models.protocol import ModelProtocol
from safeloop.services.models.task import ModelTask
from safeloop.services.retraining.exceptions import TrainerLoadError
from safeloop.services.retraining.export import FEATURE_PREFIX

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainingWindow:
    """The labelled rows to train on, oldest first, with recency weights (see `export`).

    `rows` is `weighted_export`'s structured array (`feature_<name>`, `ground_truth`,
    `weight`, `prediction_timestamp`, ...); the returned model must carry `version`. Multi-class
    targets are class indices 0..K-1; such a model should offer `predict_proba_batch`.
    """

    model_name: str
    version: str
    task: ModelTask
    feature_names: tuple[str, ...]
    rows: npt.NDArray[np.void]
    half_life_ms: float
    # Multi-class: how many classes the model answers (the base model's; the window may lack one).
    n_classes: int | None = None

    def features(self) -> FloatArray:
        """The `(n_rows, n_features)` matrix, columns in `feature_names` order."""
        columns = [self.rows[FEATURE_PREFIX + name] for name in self.feature_names]
        return np.column_stack(columns).astype(np.float64) if columns else np.empty((0, 0))

    def targets(self) -> FloatArray:
        return np.asarray(self.rows["ground_truth"], dtype=np.float64)

    def weights(self) -> FloatArray:
        return np.asarray(self.rows["weight"], dtype=np.float64)


Trainer = Callable[[TrainingWindow], ModelProtocol]


def load_trainer(spec: str) -> Trainer:
    """Import `module:function`; TrainerLoadError names what is wrong."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise TrainerLoadError(f"training entry point {spec!r} is not 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainerLoadError(f"training entry point {spec!r}: {exc}") from exc
    target: object = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise TrainerLoadError(f"training entry point {spec!r}: no {part!r} in {module_name}")
    if not callable(target):
        raise TrainerLoadError(f"training entry point {spec!r} is not callable")
    trainer: Trainer = target
    return trainer
