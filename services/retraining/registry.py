"""Registering a retrained candidate in the model store (any `ModelStoreProtocol`: the folder
store, or the MLflow registry, which numbers its own versions) and finding it again.

The candidate is trained under a name derived from its run (`candidate_version`); the store
keeps it under the version it returns, and its lineage goes with it twice: in its metadata
(what safeloop reads) and as version tags (what MLflow's UI shows), `safeloop.lineage.<key>`.
"""

from __future__ import annotations

from collections.abc import Mapping

from safeloop.services.models.exceptions import ModelNotFoundError
from safeloop.services.models.linear import LinearModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.protocol import ModelProtocol
from safeloop.services.models.softmax import SoftmaxModel
from safeloop.services.models.store_protocol import ModelStoreProtocol
from safeloop.services.retraining.exceptions import CandidateError

# The lineage key a registered candidate carries its retraining run under.
RUN_KEY = "retraining_run"
LINEAGE_TAG_PREFIX = "safeloop.lineage."


def lineage_tags(lineage: Mapping[str, str]) -> dict[str, str]:
    """The version tags that carry `lineage` (decision id, data window, half-life, ...)."""
    return {LINEAGE_TAG_PREFIX + key: value for key, value in lineage.items()}


def register_candidate(
    store: ModelStoreProtocol, model: ModelProtocol, metadata: ModelMetadata
) -> str:
    """Save the candidate with its lineage as tags; returns the version the store keeps it as."""
    if not isinstance(model, LinearModel | SoftmaxModel):
        raise CandidateError(
            f"the model store keeps linear, logistic and softmax models, not "
            f"{type(model).__name__}; return one of those from the trainer"
        )
    try:
        return store.save(model, metadata, tags=lineage_tags(metadata.lineage))
    except FileExistsError as exc:
        # The folder store keeps the trained-as name: another version already holds it.
        raise CandidateError(
            f"{metadata.name} {metadata.version} exists and was not registered by retraining "
            f"run {metadata.lineage.get(RUN_KEY)!r}"
        ) from exc


def registered_candidate(
    store: ModelStoreProtocol, model_name: str, run_id: str
) -> tuple[str, ModelMetadata] | None:
    """The version an earlier attempt of `run_id` registered (then crashed), newest first."""
    try:
        versions = store.versions(model_name)
    except ModelNotFoundError:
        return None
    tag = LINEAGE_TAG_PREFIX + RUN_KEY
    for version in reversed(versions):
        if store.version_tags(model_name, version).get(tag) == run_id:
            return version, store.load_metadata(model_name, version)
    return None
