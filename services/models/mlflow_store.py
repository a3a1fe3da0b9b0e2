"""The MLflow model registry as a model store: one registered model per safeloop model.

A version is a run of the `safeloop` experiment whose `model/` artifacts hold the folder
store's two files (weights, and metadata with the training baseline), whose metrics are the
holdout metrics, and which the registry numbers: that number is the safeloop version.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from safeloop.services.models.artifact import (
    METADATA_FILE,
    read_artifact,
    read_metadata,
    renamed,
    write_artifact,
)
from safeloop.services.models.exceptions import (
    ModelNotFoundError,
    ModelRegistryError,
)
from safeloop.services.models.linear import LinearModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.softmax import SoftmaxModel
from safeloop.services.models.store import check_name
from safeloop.services.models.store_protocol import CHAMPION_ALIAS

logger = logging.getLogger(__name__)

ARTIFACT_PATH = "model"
# Marks registered models this store wrote, so `names()` skips what it cannot serve.
FORMAT_TAG = "safeloop.format"
FORMAT_VALUE = "1"
TRAINED_AS_TAG = "safeloop.trained_as"
# MLflow keeps tag values up to 5000 characters.
_TAG_VALUE_MAX = 5000
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
_EXISTS = "RESOURCE_ALREADY_EXISTS"
T = TypeVar("T")


def public_location(uri: str) -> str:
    """The tracking URI without user:password, for messages and logs."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class MlflowModelStore:
    """Registers, lists and loads safeloop models in an MLflow registry; moves aliases."""

    def __init__(
        self, tracking_uri: str, *, artifact_root: Path | None = None, experiment: str = "safeloop"
    ) -> None:
        self._uri = tracking_uri
        self._artifact_root = artifact_root
        self._experiment = experiment
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._metadata: dict[tuple[str, str], ModelMetadata] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return public_location(self._uri)

    def save(
        self,
        model: LinearModel | SoftmaxModel,
        metadata: ModelMetadata,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Log a run with the artifacts and holdout metrics, then register it as a version."""
        name = check_name("model name", metadata.name)
        run_tags = {"safeloop.model": name, TRAINED_AS_TAG: metadata.version, **(tags or {})}

        def register() -> str:
            experiment_id = self._experiment_id()
            run = self._client.create_run(
                experiment_id, run_name=f"{name}-{metadata.version}", tags=run_tags
            )
            run_id = run.info.run_id
            params = {
                "task": metadata.task.value,
                "kind": metadata.kind,
                "training_rows": str(metadata.training_rows),
                "primary_metric": metadata.primary_metric,
                "features": ",".join(metadata.feature_names),
            }
            # One round trip: the holdout metrics (what the UI charts) and the training facts.
            self._client.log_batch(
                run_id,
                metrics=[
                    Metric(f"holdout_{metric}", value, metadata.created_at_ms, 0)
                    for metric, value in metadata.metrics.items()
                ],
                params=[Param(key, _clip(text)) for key, text in params.items()],
            )
            with tempfile.TemporaryDirectory(prefix="safeloop-model-") as staging:
                write_artifact(Path(staging), model, metadata)
                self._client.log_artifacts(run_id, staging, artifact_path=ARTIFACT_PATH)
            self._client.set_terminated(run_id)
            self._ensure_registered(name)
            version = self._client.create_model_version(
                name,
                source=f"runs:/{run_id}/{ARTIFACT_PATH}",
                run_id=run_id,
                tags={k: _clip(v) for k, v in run_tags.items()},
                description=f"{metadata.task.value} {metadata.kind}, "
                f"{metadata.primary_metric} {metadata.primary_metric_value:.4f} on holdout",
            )
            return str(version.version)

        version = self._call(register)
        logger.info("registered %s version %s in %s", name, version, self.location)
        return version

    def names(self) -> list[str]:
        def listing() -> list[str]:
            found: list[str] = []
            token: str | None = None
            while True:
                page = self._client.search_registered_models(page_token=token)
                found += [m.name for m in page if m.tags.get(FORMAT_TAG) == FORMAT_VALUE]
                token = page.token
                if not token:
                    return sorted(found)

        return self._call(listing)

    def versions(self, name: str) -> list[str]:
        """Versions of `name`, oldest first (the registry's numbers increase with time)."""
        check_name("model name", name)

        def listing() -> list[ModelVersion]:
            found: list[ModelVersion] = []
            token: str | None = None
            while True:
                page = self._client.search_model_versions(f"name='{name}'", page_token=token)
                found += list(page)
                token = page.token
                if not token:
                    return found

        found = self._call(listing)
        if not found:
            raise ModelNotFoundError(name)
        return [str(v.version) for v in sorted(found, key=lambda v: int(v.version))]

    def default_version(self, name: str) -> str:
        """The `champion` alias once a promotion has set it, else the oldest version."""
        return self.alias_version(name, CHAMPION_ALIAS) or self.versions(name)[0]

    def load_metadata(self, name: str, version: str) -> ModelMetadata:
        key = (name, version)
        cached = self._metadata.get(key)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="safeloop-model-") as staging:
            directory = self._download(name, version, Path(staging), METADATA_FILE)
            metadata = renamed(read_metadata(directory), name, version)
        with self._lock:
            self._metadata[key] = metadata
        return metadata

    def load(self, name: str, version: str) -> LoadedModel:
        with tempfile.TemporaryDirectory(prefix="safeloop-model-") as staging:
            directory = self._download(name, version, Path(staging))
            metadata = renamed(read_metadata(directory), name, version)
            loaded = read_artifact(directory, metadata)
        with self._lock:
            self._metadata[(name, version)] = metadata
        return loaded

    def load_all(self, name: str) -> dict[str, LoadedModel]:
        return {version: self.load(name, version) for version in self.versions(name)}

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self._version(name, version).tags)

    def alias_version(self, name: str, alias: str) -> str | None:
        try:
            found = self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # A missing alias is INVALID_PARAMETER_VALUE in the SQL store, NOT_FOUND over REST.
            if exc.error_code in (_NOT_FOUND, "INVALID_PARAMETER_VALUE"):
                return None
            raise ModelRegistryError(self.location, exc.message) from exc
        except OSError as exc:
            raise ModelRegistryError(self.location, str(exc)) from exc
        return str(found.version)

    def set_alias(self, name: str, alias: str, version: str, tags: Mapping[str, str]) -> None:
        """Move the alias, tag the version, and keep the move in the registered model's tags
        (one tag per move, keyed by the control sequence when `tags` carries one)."""
        self._version(name, version)
        sequence = tags.get("safeloop.control_sequence", "")
        history_key = f"safeloop.{alias}.{sequence.zfill(8) if sequence else 'moved'}"
        summary = f"{alias} -> {version}; " + "; ".join(
            f"{key.removeprefix('safeloop.')}={value}" for key, value in tags.items()
        )

        def move() -> None:
            # The story first: whoever sees the alias moved also finds why.
            for key, value in tags.items():
                self._client.set_model_version_tag(name, version, key, _clip(value))
            self._client.set_registered_model_tag(name, history_key, _clip(summary))
            self._client.set_registered_model_alias(name, alias, version)

        self._call(move)
        logger.info("alias %s of %s now points at version %s", alias, name, version)

    def _version(self, name: str, version: str) -> ModelVersion:
        try:
            return self._client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code in (_NOT_FOUND, "INVALID_PARAMETER_VALUE"):
                raise ModelNotFoundError(name, version) from exc
            raise ModelRegistryError(self.location, exc.message) from exc
        except OSError as exc:
            raise ModelRegistryError(self.location, str(exc)) from exc

    def _download(self, name: str, version: str, into: Path, file: str | None = None) -> Path:
        """Fetch the version's artifacts (or one file of them) into `into`; returns the folder."""
        source = self._version(name, version).source or ""
        if not source.startswith("runs:/"):
            raise ModelRegistryError(
                self.location, f"{name} version {version} was not registered by safeloop"
            )
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        wanted = f"{path}/{file}" if file else path

        def fetch() -> str:
            return self._client.download_artifacts(run_id, wanted, str(into))

        local = Path(self._call(fetch))
        return local.parent if file else local

    def _experiment_id(self) -> str:
        found = self._client.get_experiment_by_name(self._experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None if self._artifact_root is None else self._artifact_root.resolve().as_uri()
        try:
            return str(self._client.create_experiment(self._experiment, location))
        except MlflowException as exc:
            if exc.error_code != _EXISTS:
                raise
            # Another process created it first.
            again = self._client.get_experiment_by_name(self._experiment)
            assert again is not None
            return str(again.experiment_id)

    def _ensure_registered(self, name: str) -> None:
        try:
            self._client.create_registered_model(name, tags={FORMAT_TAG: FORMAT_VALUE})
        except MlflowException as exc:
            if exc.error_code != _EXISTS:
                raise
            self._client.set_registered_model_tag(name, FORMAT_TAG, FORMAT_VALUE)

    def _call(self, action: Callable[[], T]) -> T:
        """Run registry calls, translating MLflow's errors into the store's."""
        try:
            return action()
        except MlflowException as exc:
            raise ModelRegistryError(self.location, exc.message) from exc
        except OSError as exc:
            raise ModelRegistryError(self.location, str(exc)) from exc


def _clip(value: str) -> str:
    return value if len(value) <= _TAG_VALUE_MAX else value[: _TAG_VALUE_MAX - 1] + "…"
