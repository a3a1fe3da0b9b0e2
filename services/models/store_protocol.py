"""What every model store offers (the folder store, the MLflow registry): the `ModelStore` seam."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from safeloop.services.models.linear import LinearModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.softmax import SoftmaxModel

# The alias that names the version in production; promotions move it, rollbacks move it back.
CHAMPION_ALIAS = "champion"


@runtime_checkable
class ModelStoreProtocol(Protocol):
    """Versioned models with their metadata, tags and aliases; versions are immutable."""

    @property
    def location(self) -> str:
        """Where the store lives, for messages (a folder, or a tracking URI without secrets)."""
        ...

    def save(
        self,
        model: LinearModel | SoftmaxModel,
        metadata: ModelMetadata,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Store a new version; returns the version it is kept as (a registry numbers its own)."""
        ...

    def names(self) -> list[str]: ...

    def versions(self, name: str) -> list[str]:
        """Versions of `name`, oldest first; `ModelNotFoundError` if there are none."""
        ...

    def default_version(self, name: str) -> str:
        """What replicas serve before any control command."""
        ...

    def load_metadata(self, name: str, version: str) -> ModelMetadata: ...

    def load(self, name: str, version: str) -> LoadedModel:
        """Load and validate one version (`ModelLoadError` names what is broken)."""
        ...

    def load_all(self, name: str) -> dict[str, LoadedModel]: ...

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags saved with the version (lineage) and those its aliases' moves added."""
        ...

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version `alias` points at, or None if it points nowhere."""
        ...

    def set_alias(self, name: str, alias: str, version: str, tags: Mapping[str, str]) -> None:
        """Point `alias` at `version`; `tags` say why and are kept with the version."""
        ...
