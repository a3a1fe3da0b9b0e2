"""What the retraining loop needs of a model registry, and the folder store behind it.

The loop registers candidates, loads versions and reads their metadata (lineage included);
any registry offering these calls (the folder store here, or an MLflow-backed one) will do.
"""

from __future__ import annotations

from typing import Protocol

from safeloop.services.models.exceptions import ModelNotFoundError
from safeloop.services.models.linear import LinearModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.protocol import ModelProtocol
from safeloop.services.models.store import ModelStore
from safeloop.services.retraining.exceptions import CandidateError

# The lineage key a registered candidate carries its retraining run under.
RUN_KEY = "retraining_run"


class CandidateRegistry(Protocol):
    def register(self, model: ModelProtocol, metadata: ModelMetadata) -> None:
        """Store a new version; registering the same run's version again is a no-op."""
        ...

    def load(self, name: str, version: str) -> LoadedModel: ...

    def load_metadata(self, name: str, version: str) -> ModelMetadata: ...


class FolderRegistry:
    """`ModelStore` as a `CandidateRegistry`: it keeps linear and logistic models."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def register(self, model: ModelProtocol, metadata: ModelMetadata) -> None:
        if not isinstance(model, LinearModel):
            raise CandidateError(
                f"the folder model store keeps linear and logistic models, not "
                f"{type(model).__name__}; configure a registry that stores it"
            )
        try:
            existing = self.store.load_metadata(metadata.name, metadata.version)
        except ModelNotFoundError:
            self.store.save(model, metadata)
            return
        if existing.lineage.get(RUN_KEY) != metadata.lineage.get(RUN_KEY):
            raise CandidateError(
                f"{metadata.name} {metadata.version} exists and was not registered by "
                f"retraining run {metadata.lineage.get(RUN_KEY)!r}"
            )

    def load(self, name: str, version: str) -> LoadedModel:
        return self.store.load(name, version)

    def load_metadata(self, name: str, version: str) -> ModelMetadata:
        return self.store.load_metadata(name, version)
