"""A multi-class model trained, stored, loaded and served: answers carry class probabilities."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from safeloop.schemas.events import PredictionEvent, Route
from safeloop.services.models.answer import answer
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.softmax import SoftmaxModel, train_softmax
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model, train_multiclass_model
from safeloop.services.serving.catalog import ModelCatalog
from safeloop.services.serving.predictor import Predictor
from safeloop.services.serving.sink import SinkStats


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []
        self._lock = threading.Lock()

    def publish(self, event: PredictionEvent) -> None:
        with self._lock:
            self.events.append(event)

    def stats(self) -> SinkStats:
        return SinkStats(accepted=len(self.events))


def test_softmax_learns_the_generated_classes() -> None:
    dataset = make_dataset(ModelTask.MULTICLASS, 6_000, seed=4, n_classes=3)
    counts = np.bincount(dataset.targets.astype(int), minlength=3)
    assert counts.min() > 1_000  # the bands are roughly balanced
    model, metadata = train_multiclass_model("species", "v1", dataset)
    assert model.n_classes == 3
    assert metadata.task is ModelTask.MULTICLASS and metadata.kind == "softmax"
    assert metadata.primary_metric == "macro_f1"
    assert metadata.metrics["macro_f1"] > 0.6
    assert metadata.metrics["log_loss"] < np.log(3)  # better than a uniform guess
    with pytest.raises(ValueError, match="train_multiclass_model"):
        train_model("species", "v1", ModelTask.MULTICLASS, dataset)


def test_single_row_and_batch_probabilities_agree() -> None:
    dataset = make_dataset(ModelTask.MULTICLASS, 600, seed=1, n_classes=4)
    model = train_softmax(dataset.rows, dataset.targets, dataset.feature_names, "v1", epochs=50)
    batch = model.predict_proba_batch(dataset.rows[:10])
    for row, expected in zip(dataset.rows[:10], batch, strict=True):
        features = dict(zip(dataset.feature_names, row.tolist(), strict=True))
        np.testing.assert_allclose(model.predict_proba(features), expected, rtol=1e-9)
        assert model.predict(features) == float(expected.argmax())
    np.testing.assert_allclose(batch.sum(axis=1), 1.0)


def test_a_stored_softmax_model_loads_and_answers(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    dataset = make_dataset(ModelTask.MULTICLASS, 2_000, seed=2)
    store.save(*train_multiclass_model("species", "v1", dataset))
    loaded = store.load("species", "v1")
    assert isinstance(loaded.model, SoftmaxModel) and loaded.model.n_classes == 3
    features = dict(zip(dataset.feature_names, dataset.rows[0].tolist(), strict=True))
    answered = answer(loaded, features)
    assert len(answered.class_probabilities) == 3
    assert sum(answered.class_probabilities) == pytest.approx(1.0)
    assert answered.confidence == max(answered.class_probabilities)
    assert answered.prediction == float(np.argmax(answered.class_probabilities))


def test_the_replica_publishes_class_probabilities(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    dataset = make_dataset(ModelTask.MULTICLASS, 2_000, seed=2)
    store.save(*train_multiclass_model("species", "v1", dataset))
    catalog = ModelCatalog()
    catalog.add(store.load("species", "v1"))
    sink = CollectingSink()
    predictor = Predictor(catalog, sink, "replica-test")
    predictor.mark_ready()
    features = dict(zip(dataset.feature_names, dataset.rows[3].tolist(), strict=True))
    result = predictor.predict("species", "user-1", features)
    [event] = sink.events
    assert event.route is Route.PRODUCTION
    assert event.class_probabilities == list(result.class_probabilities)
    assert event.prediction == result.prediction == float(np.argmax(event.class_probabilities))
    assert result.to_json()["class_probabilities"] == event.class_probabilities


class BadProbabilities:
    version = "v-bad"

    def predict(self, features: Mapping[str, float]) -> float:
        return 0.0

    def predict_proba(self, features: Mapping[str, float]) -> list[float]:
        return [0.5, 0.6]


def test_probabilities_that_do_not_sum_to_one_are_a_model_failure(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save(*train_multiclass_model("species", "v1", make_dataset(ModelTask.MULTICLASS, 500)))
    metadata = store.load_metadata("species", "v1")
    with pytest.raises(ValueError, match="sum to"):
        answer(LoadedModel(BadProbabilities(), metadata), {})
