"""Train a candidate on the older part of the window and score it, beside production, on the
newest rows it never saw: the estimate the loop judges it by before any traffic does.

Everything but the trainer call is pure; the candidate's metadata carries its training
baseline (for drift), its holdout metrics and its lineage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop import SafeloopError
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.protocol import ModelProtocol
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import holdout_metrics, multiclass_holdout_metrics
from safeloop.services.retraining.exceptions import CandidateError
from safeloop.services.retraining.export import FEATURE_PREFIX
from safeloop.services.retraining.machine import Evaluation
from safeloop.services.retraining.registry import RUN_KEY
from safeloop.services.retraining.trainer import FloatArray, Trainer, TrainingWindow

# Lower is better for these primary metrics; higher for every other (accuracy, ...).
_LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    """What to train: which model, from which run, on what share of the window."""

    model_name: str
    run_id: str
    base_version: str
    task: ModelTask
    feature_names: tuple[str, ...]
    half_life_ms: float
    # The newest share of labelled rows held out of training to estimate performance.
    evaluation_share: float = 0.2
    min_rows: int = 50
    # Multi-class: the classes the model answers (the production model's), else None.
    n_classes: int | None = None


@dataclass(frozen=True)
class Candidate:
    model: ModelProtocol
    metadata: ModelMetadata
    evaluation: Evaluation


def candidate_version(base_version: str, run_id: str) -> str:
    """The deterministic name the run's candidate is trained as (the folder store keeps it
    under that name; a registry such as MLflow's numbers it and tags it `safeloop.trained_as`)."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=4).hexdigest()
    return f"{base_version[:100]}-r{digest}"


def build_candidate(
    spec: CandidateSpec,
    rows: npt.NDArray[np.void],
    trainer: Trainer,
    production: LoadedModel | None,
    *,
    now_ms: int,
    lineage: Mapping[str, str],
) -> Candidate:
    """Train on the older rows, evaluate both models on the newest; CandidateError if not."""
    usable = _complete_rows(rows, spec.feature_names)
    if usable.shape[0] < spec.min_rows:
        raise CandidateError(
            f"{usable.shape[0]} complete labelled rows in the window, {spec.min_rows} needed"
        )
    usable = usable[np.argsort(usable["prediction_timestamp"], kind="stable")]
    held = max(1, int(usable.shape[0] * spec.evaluation_share))
    train_rows, evaluation_rows = usable[:-held], usable[-held:]
    version = candidate_version(spec.base_version, spec.run_id)
    window = TrainingWindow(
        spec.model_name,
        version,
        spec.task,
        spec.feature_names,
        train_rows,
        spec.half_life_ms,
        spec.n_classes,
    )
    try:
        model = trainer(window)
    except SafeloopError as exc:
        raise CandidateError(f"the trainer failed: {exc}") from exc
    except Exception as exc:
        # A user's trainer may raise anything; the run records it as failed and goes on.
        raise CandidateError(f"the trainer raised {type(exc).__name__}: {exc}") from exc
    if model.version != version:
        raise CandidateError(f"the trainer returned version {model.version!r}, not {version!r}")
    evaluation_window = TrainingWindow(
        spec.model_name, version, spec.task, spec.feature_names, evaluation_rows, 1.0
    )
    features, targets = evaluation_window.features(), evaluation_window.targets()
    primary, metrics = _holdout(spec, model, features, targets)
    production_value = None
    if production is not None:
        production_value = _holdout(spec, production.model, features, targets)[1].get(primary)
    evaluation = Evaluation(
        metric=primary,
        higher_is_better=primary not in _LOWER_IS_BETTER,
        candidate=metrics[primary],
        production=production_value,
        rows=int(held),
    )
    train_features = window.features()
    baseline = ModelBaseline.from_training_data(
        {name: train_features[:, i] for i, name in enumerate(spec.feature_names)},
        score=score_rows(model, spec.feature_names, train_features),
    )
    kind = getattr(model, "kind", None)
    metadata = ModelMetadata(
        name=spec.model_name,
        version=version,
        task=spec.task,
        kind=str(getattr(kind, "value", kind or type(model).__name__)),
        feature_names=spec.feature_names,
        created_at_ms=now_ms,
        training_rows=int(train_rows.shape[0]),
        baseline=baseline,
        primary_metric=primary,
        metrics=metrics,
        lineage={
            **lineage,
            RUN_KEY: spec.run_id,
            "base_version": spec.base_version,
            "half_life_ms": f"{spec.half_life_ms:g}",
            "training_rows": str(train_rows.shape[0]),
            "evaluation_rows": str(held),
            "train_from_ms": str(int(train_rows["prediction_timestamp"][0])),
            "train_to_ms": str(int(train_rows["prediction_timestamp"][-1])),
            "evaluation_to_ms": str(int(evaluation_rows["prediction_timestamp"][-1])),
        },
        # A retrained version is judged on the same segments as the one it replaces.
        segment_keys=() if production is None else production.metadata.segment_keys,
    )
    return Candidate(model, metadata, evaluation)


def _holdout(
    spec: CandidateSpec, model: ModelProtocol, features: FloatArray, targets: FloatArray
) -> tuple[str, dict[str, float]]:
    """The primary metric and every holdout metric of `model` on the evaluation rows."""
    if spec.task is ModelTask.MULTICLASS:
        classes = max(spec.n_classes or 0, int(targets.max(initial=0)) + 1)
        probabilities = class_probabilities(model, spec.feature_names, features, classes)
        return multiclass_holdout_metrics(probabilities, targets)
    return holdout_metrics(spec.task, score_rows(model, spec.feature_names, features), targets)


def class_probabilities(
    model: ModelProtocol, feature_names: tuple[str, ...], features: FloatArray, n_classes: int
) -> FloatArray:
    """An (N, K) matrix of class probabilities: the model's own, else one-hot of its classes."""
    batch = getattr(model, "predict_proba_batch", None)
    if callable(batch):
        matrix = np.asarray(batch(features), dtype=np.float64)
    else:
        predicted = score_rows(model, feature_names, features).astype(np.int64)
        matrix = np.eye(max(n_classes, int(predicted.max(initial=0)) + 1))[predicted]
    if matrix.shape[1] < n_classes:
        # A model that never heard of the window's highest class gives it nothing.
        matrix = np.pad(matrix, ((0, 0), (0, n_classes - matrix.shape[1])))
    return matrix


def score_rows(
    model: ModelProtocol, feature_names: tuple[str, ...], features: FloatArray
) -> FloatArray:
    """The model's score of every row (its batch path when it has one)."""
    batch = getattr(model, "predict_batch", None)
    if callable(batch):
        return np.asarray(batch(features), dtype=np.float64)
    return np.array(
        [model.predict(dict(zip(feature_names, row.tolist(), strict=True))) for row in features],
        dtype=np.float64,
    )


def _complete_rows(
    rows: npt.NDArray[np.void], feature_names: tuple[str, ...]
) -> npt.NDArray[np.void]:
    """Rows with a finite label and every feature (a trainer gets no NaN to trip on)."""
    if rows.shape[0] == 0:
        return rows
    keep = np.isfinite(np.asarray(rows["ground_truth"], dtype=np.float64))
    for name in feature_names:
        column = FEATURE_PREFIX + name
        if column not in (rows.dtype.names or ()):
            raise CandidateError(f"the window has no feature {name!r}")
        keep &= np.isfinite(np.asarray(rows[column], dtype=np.float64))
    kept: npt.NDArray[np.void] = rows[keep]
    return kept
