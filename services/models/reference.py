"""`models:/NAME/VERSION` and `models:/NAME@ALIAS`: MLflow's way of naming a registered model."""

from __future__ import annotations

import re
from dataclasses import dataclass

from safeloop.services.models.exceptions import ModelNotFoundError, ModelReferenceError
from safeloop.services.models.store_protocol import ModelStoreProtocol

MODELS_SCHEME = "models:/"
_URI = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
    r"(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_-]{1,255}))$"
)


@dataclass(frozen=True)
class ModelReference:
    """One registered model, pinned to a version or followed through an alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        tail = f"/{self.version}" if self.version is not None else f"@{self.alias}"
        return f"{MODELS_SCHEME}{self.name}{tail}"


def is_model_uri(text: str) -> bool:
    return text.startswith(MODELS_SCHEME)


def parse_model_uri(uri: str) -> ModelReference:
    """Parse a `models:/` URI; anything else raises `ModelReferenceError`."""
    match = _URI.match(uri.strip())
    if match is None:
        raise ModelReferenceError(uri)
    return ModelReference(match["name"], match["version"], match["alias"])


def resolve(store: ModelStoreProtocol, reference: ModelReference) -> str:
    """The version `reference` names in `store` (`ModelNotFoundError` if there is none)."""
    if reference.version is not None:
        store.load_metadata(reference.name, reference.version)
        return reference.version
    alias = reference.alias or ""
    version = store.alias_version(reference.name, alias)
    if version is None:
        raise ModelNotFoundError(reference.name, f"@{alias}")
    return version
