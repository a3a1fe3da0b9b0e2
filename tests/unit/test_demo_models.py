"""The demo's model versions: v2 beats v1, v3 is wrong on clean data; labels follow the
same generating relation as the training data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from safeloop.services.demo.models import train_story_models
from safeloop.services.demo.progress import Gauges, Progress
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, true_margin


def _accuracy(store: ModelStore, version: str, rows: np.ndarray, targets: np.ndarray) -> float:
    model = store.load("churn", version).model
    scores = np.array(
        [model.predict(dict(zip(model.feature_names, row, strict=True))) for row in rows]
    )
    return float(np.mean((scores >= 0.5) == (targets >= 0.5)))


def test_story_versions_are_good_better_and_bad(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    train_story_models(store, "churn")
    assert store.versions("churn") == ["v1", "v2", "v3"]
    clean = make_dataset(ModelTask.CLASSIFICATION, 3000, seed=99)
    v1 = _accuracy(store, "v1", clean.rows, clean.targets)
    v2 = _accuracy(store, "v2", clean.rows, clean.targets)
    v3 = _accuracy(store, "v3", clean.rows, clean.targets)
    assert v2 > v1 + 0.05
    assert v3 < 0.4
    # v1's stored figures describe the restricted model, not the one it was cut from.
    assert abs(store.load_metadata("churn", "v1").metrics["accuracy"] - v1) < 0.05


def test_true_margin_is_the_relation_make_dataset_draws_from() -> None:
    data = make_dataset(ModelTask.CLASSIFICATION, 20_000, seed=4)
    probability = 1.0 / (1.0 + np.exp(-true_margin(data.rows)))
    assert abs(float(probability.mean()) - float(data.targets.mean())) < 0.02


def test_progress_without_a_terminal_prints_plain_lines() -> None:
    out = io.StringIO()
    progress = Progress(out, lambda: Gauges(10.0, 5.0, 42, 100, 0), live=False)
    progress.start()
    progress.phase("2/4 canary")
    progress.event("rollout v2: running at 5 %")
    progress.stop()
    text = out.getvalue()
    assert "== 2/4 canary" in text
    assert "rollout v2: running at 5 %" in text
    assert "\x1b[" not in text
