"""Registering a retrained candidate in any model store: its lineage as version tags, the
version the store numbers, and finding the run's candidate again after a crash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.store import ModelStore
from safeloop.services.models.store_protocol import ModelStoreProtocol
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.retraining.exceptions import CandidateError
from safeloop.services.retraining.registry import (
    RUN_KEY,
    register_candidate,
    registered_candidate,
)


class NumberingStore(ModelStore):
    """The folder store keeping each version under the next number, as MLflow's registry does."""

    def save(self, model, metadata, tags=None):  # type: ignore[no-untyped-def]
        number = str(len(self.versions(metadata.name)) + 1) if self.names() else "1"
        renamed = dataclasses.replace(metadata, version=number)
        return super().save(dataclasses.replace(model, version=number), renamed, tags)


def _candidate(version: str, run_id: str, seed: int = 0) -> tuple[object, ModelMetadata]:
    dataset = make_dataset(ModelTask.CLASSIFICATION, 300, seed=seed)
    model, metadata = train_model("churn", version, ModelTask.CLASSIFICATION, dataset)
    lineage = {RUN_KEY: run_id, "decision_id": run_id, "half_life_ms": "60000"}
    return model, dataclasses.replace(metadata, lineage=lineage)


@pytest.mark.parametrize("store_type", [ModelStore, NumberingStore])
def test_the_candidate_is_kept_under_the_stores_version_with_its_lineage_as_tags(
    tmp_path: Path, store_type: type[ModelStore]
) -> None:
    store: ModelStoreProtocol = store_type(tmp_path)
    base_model, base = _candidate("v1", "seed")
    store.save(base_model, base)  # type: ignore[arg-type]
    model, metadata = _candidate("v1-rabc", "run-7", seed=1)
    version = register_candidate(store, model, metadata)  # type: ignore[arg-type]
    assert version == ("v1-rabc" if store_type is ModelStore else "2")
    tags = store.version_tags("churn", version)
    assert tags["safeloop.lineage.decision_id"] == "run-7"
    assert tags["safeloop.lineage.half_life_ms"] == "60000"
    found = registered_candidate(store, "churn", "run-7")
    assert found is not None and found[0] == version
    assert found[1].lineage[RUN_KEY] == "run-7"
    assert registered_candidate(store, "churn", "run-8") is None
    assert registered_candidate(store, "fraud", "run-7") is None


def test_a_model_the_store_cannot_keep_fails_the_candidate(tmp_path: Path) -> None:
    class Opaque:
        version = "v1-r1"

        def predict(self, features: object) -> float:
            return 0.5

    _, metadata = _candidate("v1-r1", "run-1")
    with pytest.raises(CandidateError, match="Opaque"):
        register_candidate(ModelStore(tmp_path), Opaque(), metadata)


def test_a_name_another_run_holds_fails_the_candidate(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    model, metadata = _candidate("v1-r1", "run-1")
    register_candidate(store, model, metadata)  # type: ignore[arg-type]
    other = dataclasses.replace(metadata, lineage={RUN_KEY: "run-2"})
    with pytest.raises(CandidateError, match="run-2"):
        register_candidate(store, model, other)  # type: ignore[arg-type]
