"""The on-disk format of one model version: `model.npz` (weights) beside `metadata.json`.

Both stores keep exactly these two files: the folder store in `<root>/<name>/<version>/`,
the MLflow store as the artifacts of the version's run (`model/`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from safeloop.services.models.exceptions import ModelLoadError
from safeloop.services.models.linear import LinearKind, LinearModel, LogisticModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.softmax import SOFTMAX_KIND, SoftmaxModel, load_softmax

ARTIFACT_FILE = "model.npz"
METADATA_FILE = "metadata.json"
_MODEL_TYPES: dict[str, type[LinearModel]] = {
    LinearKind.LINEAR.value: LinearModel,
    LinearKind.LOGISTIC.value: LogisticModel,
}


def write_artifact(
    directory: Path, model: LinearModel | SoftmaxModel, metadata: ModelMetadata
) -> None:
    """Write both files into an existing directory."""
    np.savez(directory / ARTIFACT_FILE, weights=model.weights, bias=np.array(model.bias))
    (directory / METADATA_FILE).write_text(json.dumps(metadata.to_json(), indent=2) + "\n")


def read_metadata(directory: Path) -> ModelMetadata:
    """Parse `metadata.json`; a missing or invalid file raises `ModelLoadError` naming it."""
    metadata_path = directory / METADATA_FILE
    try:
        return ModelMetadata.from_json(json.loads(metadata_path.read_text()))
    except FileNotFoundError as exc:
        raise ModelLoadError(metadata_path, "metadata.json is missing") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(metadata_path, f"metadata.json is invalid: {exc!r}") from exc


def read_artifact(directory: Path, metadata: ModelMetadata) -> LoadedModel:
    """Load and validate the weights; `metadata` names the version the model answers as."""
    artifact_path = directory / ARTIFACT_FILE
    if metadata.kind == SOFTMAX_KIND:
        softmax = load_softmax(artifact_path, metadata.version, metadata.feature_names)
        return LoadedModel(softmax, metadata)
    model_type = _MODEL_TYPES.get(metadata.kind)
    if model_type is None:
        raise ModelLoadError(artifact_path, f"unknown model kind {metadata.kind!r}")
    try:
        with np.load(artifact_path, allow_pickle=False) as artifact:
            weights = np.asarray(artifact["weights"], dtype=np.float64)
            bias = float(artifact["bias"])
    except FileNotFoundError as exc:
        raise ModelLoadError(artifact_path, "model.npz is missing") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(artifact_path, f"model.npz is unreadable: {exc!r}") from exc
    if weights.shape != (len(metadata.feature_names),):
        raise ModelLoadError(
            artifact_path,
            f"{weights.shape[0] if weights.ndim else 0} weights for "
            f"{len(metadata.feature_names)} features",
        )
    if not (np.isfinite(weights).all() and np.isfinite(bias)):
        raise ModelLoadError(artifact_path, "weights hold NaN or infinite values")
    model = model_type(metadata.version, metadata.feature_names, weights, bias)
    return LoadedModel(model, metadata)


def renamed(metadata: ModelMetadata, name: str, version: str) -> ModelMetadata:
    """The metadata as the store names the version (a registry assigns its own numbers)."""
    if (metadata.name, metadata.version) == (name, version):
        return metadata
    return dataclasses.replace(metadata, name=name, version=version)
