"""A model ready to serve, with the metadata it was saved with."""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.protocol import ModelProtocol


@dataclass(frozen=True)
class LoadedModel:
    """One servable version: the model and its metadata (features, task, baseline)."""

    model: ModelProtocol
    metadata: ModelMetadata

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version
