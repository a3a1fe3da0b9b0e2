"""Errors raised by `services.models`."""

from __future__ import annotations

from pathlib import Path

from safeloop import SafeloopError


class ModelError(SafeloopError):
    """Root of every error raised by `services.models`."""


class ModelLoadError(ModelError):
    """An artifact or its metadata is missing or broken; raised at start-up, not per request."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot load model from {path}: {reason}")
        self.path = path
        self.reason = reason


class ModelNotFoundError(ModelError):
    """The store holds no such model (or no such version of it)."""

    def __init__(self, name: str | None, version: str | None = None) -> None:
        if name is None:
            message = "the model store holds no model"
        elif version is None:
            message = f"model {name!r} is not in the model store"
        else:
            message = f"model {name!r} version {version!r} is not in the model store"
        super().__init__(
            f"{message} (`safeloop model list` shows what it holds; `safeloop model train NAME "
            "--version V` adds one)"
        )
        self.name = name
        self.version = version


class ModelRegistryError(ModelError):
    """The model registry (MLflow) refused or could not be reached; `location` names it."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"model registry at {location}: {reason}")
        self.location = location
        self.reason = reason


class ModelReferenceError(ModelError, ValueError):
    """A model URI is not `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS")
        self.uri = uri


class TrainingError(ModelError):
    """Training data cannot produce a model (wrong shapes, too few rows, non-finite values)."""
