"""`models:/` URIs: parsing, and resolution against a store's versions and aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeloop.services.models.exceptions import ModelNotFoundError, ModelReferenceError
from safeloop.services.models.reference import ModelReference, parse_model_uri, resolve
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model


def test_parses_versions_and_aliases() -> None:
    assert parse_model_uri("models:/churn/3") == ModelReference("churn", version="3")
    assert parse_model_uri("models:/churn@champion") == ModelReference("churn", alias="champion")
    assert parse_model_uri("models:/churn@champion").uri == "models:/churn@champion"


@pytest.mark.parametrize(
    "uri",
    ["churn", "models:/churn", "models:/churn/", "models:/churn/v2", "models:/a b/1", "models:/x@"],
)
def test_refuses_what_is_not_a_model_uri(uri: str) -> None:
    with pytest.raises(ModelReferenceError, match="models:/NAME/VERSION"):
        parse_model_uri(uri)


def test_resolves_against_the_store(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    dataset = make_dataset(ModelTask.CLASSIFICATION, 200)
    store.save(*train_model("churn", "7", ModelTask.CLASSIFICATION, dataset))
    assert resolve(store, parse_model_uri("models:/churn/7")) == "7"
    with pytest.raises(ModelNotFoundError):
        resolve(store, parse_model_uri("models:/churn/8"))
    with pytest.raises(ModelNotFoundError, match="@champion"):
        resolve(store, parse_model_uri("models:/churn@champion"))
    store.set_alias("churn", "champion", "7", {"why": "test"})
    assert resolve(store, parse_model_uri("models:/churn@champion")) == "7"
