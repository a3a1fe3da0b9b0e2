"""The model store the settings choose: the folder store, or the MLflow registry."""

from __future__ import annotations

from safeloop.infra.settings import Settings
from safeloop.services.models.store import ModelStore
from safeloop.services.models.store_protocol import ModelStoreProtocol


def open_model_store(settings: Settings) -> ModelStoreProtocol:
    """`SAFELOOP_MODEL_STORE=mlflow`: MLflow's registry (imported only then); else the folder."""
    if settings.model_store == "mlflow":
        return open_mlflow_store(settings)
    return ModelStore(settings.models_path)


def open_mlflow_store(settings: Settings) -> ModelStoreProtocol:
    """The MLflow registry at MLFLOW_TRACKING_URI, or the embedded SQLite one under state."""
    # MLflow takes seconds to import: only processes that use the registry pay for it.
    from safeloop.services.models.mlflow_store import MlflowModelStore  # noqa: PLC0415

    root = settings.mlflow_artifact_root
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    return MlflowModelStore(
        settings.mlflow_uri, artifact_root=root, experiment=settings.mlflow_experiment
    )
