"""The versioned model store: round trips, ordering, and clear errors for broken artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from safeloop.services.models.exceptions import ModelLoadError, ModelNotFoundError
from safeloop.services.models.store import ARTIFACT_FILE, METADATA_FILE, ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    for seed, version in enumerate(("v1", "v2")):
        dataset = make_dataset(ModelTask.CLASSIFICATION, 2000, seed=seed)
        model, metadata = train_model("churn", version, ModelTask.CLASSIFICATION, dataset)
        store.save(model, metadata)
    return store


def test_round_trip(store: ModelStore) -> None:
    loaded = store.load("churn", "v1")
    assert loaded.version == "v1"
    assert loaded.metadata.task is ModelTask.CLASSIFICATION
    assert loaded.metadata.primary_metric == "accuracy"
    assert 0.6 < loaded.metadata.primary_metric_value <= 1.0
    assert set(loaded.metadata.baseline.features) == set(loaded.metadata.feature_names)
    assert loaded.metadata.baseline.score is not None
    row = dict.fromkeys(loaded.metadata.feature_names, 0.5)
    assert 0.0 < loaded.model.predict(row) < 1.0


def test_versions_oldest_first_and_default_is_oldest(store: ModelStore) -> None:
    assert store.versions("churn") == ["v1", "v2"]
    assert store.default_version("churn") == "v1"
    assert store.names() == ["churn"]
    assert set(store.load_all("churn")) == {"v1", "v2"}


def test_versions_are_immutable(store: ModelStore) -> None:
    loaded = store.load("churn", "v1")
    with pytest.raises(FileExistsError):
        store.save(loaded.model, loaded.metadata)  # type: ignore[arg-type]


def test_unknown_model_and_version(store: ModelStore) -> None:
    with pytest.raises(ModelNotFoundError, match="'nope'"):
        store.versions("nope")
    with pytest.raises(ModelNotFoundError, match="version 'v9'"):
        store.load("churn", "v9")


def test_unsafe_names_are_rejected(store: ModelStore) -> None:
    with pytest.raises(ValueError, match="must be"):
        store.load("../etc", "v1")


def test_missing_artifact(store: ModelStore) -> None:
    (store.path_of("churn", "v2") / ARTIFACT_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"model\.npz is missing"):
        store.load("churn", "v2")


def test_corrupt_artifact(store: ModelStore) -> None:
    (store.path_of("churn", "v2") / ARTIFACT_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match="unreadable") as caught:
        store.load_all("churn")
    assert caught.value.path.name == ARTIFACT_FILE


def test_wrong_weight_count(store: ModelStore) -> None:
    np.savez(store.path_of("churn", "v2") / ARTIFACT_FILE, weights=np.ones(2), bias=np.array(0.0))
    with pytest.raises(ModelLoadError, match="2 weights for 4 features"):
        store.load("churn", "v2")


def test_non_finite_weights(store: ModelStore) -> None:
    weights = np.array([1.0, np.nan, 0.0, 0.0])
    np.savez(store.path_of("churn", "v2") / ARTIFACT_FILE, weights=weights, bias=np.array(0.0))
    with pytest.raises(ModelLoadError, match="NaN"):
        store.load("churn", "v2")


def test_broken_metadata(store: ModelStore) -> None:
    path = store.path_of("churn", "v2") / METADATA_FILE
    path.write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"metadata\.json is invalid"):
        store.load("churn", "v2")
    raw = json.loads((store.path_of("churn", "v1") / METADATA_FILE).read_text())
    del raw["task"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="'task'"):
        store.load("churn", "v2")


def test_metadata_naming_another_version(store: ModelStore) -> None:
    source = store.path_of("churn", "v1") / METADATA_FILE
    (store.path_of("churn", "v2") / METADATA_FILE).write_text(source.read_text())
    with pytest.raises(ModelLoadError, match="names churn/v1"):
        store.load("churn", "v2")
