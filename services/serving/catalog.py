"""The model versions one replica can serve, loaded before it takes traffic."""

from __future__ import annotations

import threading

from safeloop.schemas.events import ModelConfig
from safeloop.services.models.loaded import LoadedModel


class ModelCatalog:
    """Loaded models by name and version, plus what each model serves before any command."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, dict[str, LoadedModel]] = {}
        self._defaults: dict[str, str] = {}

    def add(self, loaded: LoadedModel, *, default: bool = False) -> None:
        """Make a version servable; `default`: served until a control command says otherwise."""
        with self._lock:
            versions = {**self._models.get(loaded.name, {}), loaded.version: loaded}
            self._models = {**self._models, loaded.name: versions}
            if default or loaded.name not in self._defaults:
                self._defaults = {**self._defaults, loaded.name: loaded.version}

    def get(self, model_name: str, version: str) -> LoadedModel | None:
        return self._models.get(model_name, {}).get(version)

    def has(self, model_name: str, version: str) -> bool:
        return version in self._models.get(model_name, {})

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, model_name: str) -> list[str]:
        return sorted(self._models.get(model_name, {}))

    def default_config(self, model_name: str) -> ModelConfig | None:
        version = self._defaults.get(model_name)
        return None if version is None else ModelConfig(production_version=version)
