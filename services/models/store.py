"""The folder model store, zero dependencies: `<root>/<name>/<version>/{model.npz, metadata.json}`.

Tags live in `<version>/tags.json`, aliases in `<root>/<name>/aliases.json`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from safeloop.services.models.artifact import (
    ARTIFACT_FILE,
    METADATA_FILE,
    read_artifact,
    read_metadata,
    write_artifact,
)
from safeloop.services.models.exceptions import ModelLoadError, ModelNotFoundError
from safeloop.services.models.linear import LinearModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.softmax import SoftmaxModel

__all__ = ["ARTIFACT_FILE", "METADATA_FILE", "ModelStore", "check_name"]

TAGS_FILE = "tags.json"
ALIASES_FILE = "aliases.json"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(what: str, value: str) -> str:
    """Names and versions become directory names, so keep them to a safe alphabet."""
    if not _NAME_PATTERN.match(value):
        raise ValueError(f"{what} {value!r} must be 1-128 letters, digits, '_', '.' or '-'")
    return value


class ModelStore:
    """Saves and loads numpy models; loading validates everything so errors surface at start-up."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def path_of(self, name: str, version: str) -> Path:
        return self.root / check_name("model name", name) / check_name("version", version)

    def save(
        self,
        model: LinearModel | SoftmaxModel,
        metadata: ModelMetadata,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Write one version atomically; an existing version is never overwritten."""
        target = self.path_of(metadata.name, metadata.version)
        if target.exists():
            raise FileExistsError(f"{target} already exists; versions are immutable")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{metadata.version}.", dir=target.parent))
        try:
            write_artifact(staging, model, metadata)
            if tags:
                (staging / TAGS_FILE).write_text(json.dumps(dict(tags), indent=2) + "\n")
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return metadata.version

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
        if not path.is_dir():
            raise ModelNotFoundError(name, version)
        metadata = read_metadata(path)
        if (metadata.name, metadata.version) != (name, version):
            raise ModelLoadError(
                path / METADATA_FILE,
                f"metadata names {metadata.name}/{metadata.version}, not {name}/{version}",
            )
        return metadata

    def load(self, name: str, version: str) -> LoadedModel:
        """Load and validate one version; any defect raises `ModelLoadError` naming the file."""
        metadata = self.load_metadata(name, version)
        return read_artifact(self.path_of(name, version), metadata)

    def load_all(self, name: str) -> dict[str, LoadedModel]:
        """Every version of `name`, validated, keyed by version."""
        return {version: self.load(name, version) for version in self.versions(name)}

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        path = self.path_of(name, version)
        if not path.is_dir():
            raise ModelNotFoundError(name, version)
        return _read_json_object(path / TAGS_FILE)

    def alias_version(self, name: str, alias: str) -> str | None:
        aliases = _read_json_object(self.root / check_name("model name", name) / ALIASES_FILE)
        return aliases.get(alias)

    def set_alias(self, name: str, alias: str, version: str, tags: Mapping[str, str]) -> None:
        """Point `alias` at `version` and merge `tags` into the version's tags."""
        path = self.path_of(name, version)
        if not path.is_dir():
            raise ModelNotFoundError(name, version)
        _write_json_object(path / TAGS_FILE, {**_read_json_object(path / TAGS_FILE), **tags})
        aliases_path = path.parent / ALIASES_FILE
        _write_json_object(aliases_path, {**_read_json_object(aliases_path), alias: version})


def _read_json_object(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ModelLoadError(path, f"{path.name} is invalid: {exc!r}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(path, f"{path.name} must hold a JSON object")
    return {str(key): str(value) for key, value in raw.items()}


def _write_json_object(path: Path, content: Mapping[str, str]) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(dict(content), indent=2, sort_keys=True) + "\n")
    staging.replace(path)


def _is_store_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and bool(_NAME_PATTERN.match(path.name))
