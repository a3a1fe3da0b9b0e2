"""A versioned model store on disk: `<root>/<name>/<version>/{model.npz, metadata.json}`."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from safeloop.services.models.exceptions import ModelLoadError, ModelNotFoundError
from safeloop.services.models.linear import LinearKind, LinearModel, LogisticModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.softmax import SOFTMAX_KIND, SoftmaxModel, load_softmax

ARTIFACT_FILE = "model.npz"
METADATA_FILE = "metadata.json"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MODEL_TYPES: dict[str, type[LinearModel]] = {
    LinearKind.LINEAR.value: LinearModel,
    LinearKind.LOGISTIC.value: LogisticModel,
}


def check_name(what: str, value: str) -> str:
    """Names and versions become directory names, so keep them to a safe alphabet."""
    if not _NAME_PATTERN.match(value):
        raise ValueError(f"{what} {value!r} must be 1-128 letters, digits, '_', '.' or '-'")
    return value


class ModelStore:
    """Saves and loads numpy models; loading validates everything so errors surface at start-up."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, name: str, version: str) -> Path:
        return self.root / check_name("model name", name) / check_name("version", version)

    def save(self, model: LinearModel | SoftmaxModel, metadata: ModelMetadata) -> Path:
        """Write one version atomically; an existing version is never overwritten."""
        target = self.path_of(metadata.name, metadata.version)
        if target.exists():
            raise FileExistsError(f"{target} already exists; versions are immutable")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{metadata.version}.", dir=target.parent))
        try:
            np.savez(staging / ARTIFACT_FILE, weights=model.weights, bias=np.array(model.bias))
            (staging / METADATA_FILE).write_text(json.dumps(metadata.to_json(), indent=2) + "\n")
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(path.name for path in self.root.iterdir() if _is_store_dir(path))

    def versions(self, name: str) -> list[str]:
        """Versions of `name`, oldest first (by training time, then by name)."""
        directory = self.root / check_name("model name", name)
        if not directory.is_dir():
            raise ModelNotFoundError(name)
        found = [self.load_metadata(name, p.name) for p in directory.iterdir() if _is_store_dir(p)]
        if not found:
            raise ModelNotFoundError(name)
        found.sort(key=lambda meta: (meta.created_at_ms, meta.version))
        return [meta.version for meta in found]

    def default_version(self, name: str) -> str:
        """What replicas serve before any control command: the oldest version, so that adding
        a version to the store never changes traffic by itself."""
        return self.versions(name)[0]

    def load_metadata(self, name: str, version: str) -> ModelMetadata:
        path = self.path_of(name, version)
        metadata_path = path / METADATA_FILE
        if not path.is_dir():
            raise ModelNotFoundError(name, version)
        try:
            metadata = ModelMetadata.from_json(json.loads(metadata_path.read_text()))
        except FileNotFoundError as exc:
            raise ModelLoadError(metadata_path, "metadata.json is missing") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(metadata_path, f"metadata.json is invalid: {exc!r}") from exc
        if (metadata.name, metadata.version) != (name, version):
            raise ModelLoadError(
                metadata_path,
                f"metadata names {metadata.name}/{metadata.version}, not {name}/{version}",
            )
        return metadata

    def load(self, name: str, version: str) -> LoadedModel:
        """Load and validate one version; any defect raises `ModelLoadError` naming the file."""
        metadata = self.load_metadata(name, version)
        artifact_path = self.path_of(name, version) / ARTIFACT_FILE
        if metadata.kind == SOFTMAX_KIND:
            softmax = load_softmax(artifact_path, version, metadata.feature_names)
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
        model = model_type(version, metadata.feature_names, weights, bias)
        return LoadedModel(model, metadata)

    def load_all(self, name: str) -> dict[str, LoadedModel]:
        """Every version of `name`, validated, keyed by version."""
        return {version: self.load(name, version) for version in self.versions(name)}


def _is_store_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and bool(_NAME_PATTERN.match(path.name))
