"""The story's three versions of one model, trained on generated data into the model store.

- v1, production at the start: knows only two of the four signals (an older feature pipeline).
- v2, the good canary: trained on every feature; clearly more accurate than v1.
- v3, the bad canary: trained on a corrupted label feed (every label flipped), so its holdout
  figures look fine while it is wrong on live traffic most of the time.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.models.linear import LinearModel, LogisticModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import Dataset, make_dataset, train_model

ROWS = 20_000
V1_KNOWN_FEATURES = ("age", "income")


def train_story_models(store: ModelStore, name: str) -> dict[str, str]:
    """Train and save v1, v2, v3 (oldest first); returns version -> one-line description."""
    task = ModelTask.CLASSIFICATION
    dataset = make_dataset(task, ROWS, seed=1)
    model, metadata = train_model(name, "v1", task, dataset)
    store.save(*_restricted(model, metadata, dataset, V1_KNOWN_FEATURES))
    time.sleep(0.005)  # versions are ordered by training time
    store.save(*train_model(name, "v2", task, make_dataset(task, ROWS, seed=2)))
    time.sleep(0.005)
    corrupted = make_dataset(task, ROWS, seed=3)
    store.save(*train_model(name, "v3", task, dataclasses.replace(
        corrupted, targets=1.0 - corrupted.targets
    )))  # fmt: skip
    return {
        "v1": f"production, knows {' and '.join(V1_KNOWN_FEATURES)} only",
        "v2": "retrained on every feature (the good canary)",
        "v3": "trained on a corrupted label feed (the bad canary)",
    }


def _restricted(
    model: LinearModel, metadata: ModelMetadata, dataset: Dataset, keep: tuple[str, ...]
) -> tuple[LinearModel, ModelMetadata]:
    """The model with every weight outside `keep` zeroed, its metadata measured again."""
    mask = np.array([name in keep for name in dataset.feature_names])
    restricted = LogisticModel(
        model.version, model.feature_names, np.where(mask, model.weights, 0.0), model.bias
    )
    scores = restricted.predict_batch(dataset.rows)
    accuracy = float(np.mean((scores >= 0.5) == (dataset.targets >= 0.5)))
    baseline = ModelBaseline.from_training_data(
        {feature: dataset.rows[:, index] for index, feature in enumerate(dataset.feature_names)},
        score=scores,
    )
    return restricted, dataclasses.replace(
        metadata, baseline=baseline, metrics={**metadata.metrics, "accuracy": accuracy}
    )
