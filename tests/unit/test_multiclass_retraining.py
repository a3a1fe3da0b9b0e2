"""Retraining a multi-class model: the shipped trainer fits recency-weighted softmax regression,
and the candidate is judged by macro F1 beside production, each checked against a reference
computed here by brute force (duplicated rows for weights, loops for F1)."""

from __future__ import annotations

import numpy as np
import pytest

from safeloop.services.models.linear import FloatArray
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.softmax import SoftmaxModel, train_softmax
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_multiclass_model
from safeloop.services.retraining.candidate import (
    CandidateSpec,
    build_candidate,
    class_probabilities,
)
from safeloop.services.retraining.export import FEATURE_PREFIX
from safeloop.services.retraining.linear_trainer import train
from safeloop.services.retraining.trainer import TrainingWindow

FEATURES = ("age", "income", "tenure_months", "sessions_7d")


def _window_rows(count: int, seed: int, weights: FloatArray | None = None) -> np.ndarray:
    """`weighted_export`'s layout: features, class-index labels, weights, oldest first."""
    data = make_dataset(ModelTask.MULTICLASS, count, FEATURES, seed=seed)
    dtype = [
        ("prediction_timestamp", np.int64),
        ("ground_truth", np.float64),
        ("weight", np.float64),
        *((FEATURE_PREFIX + name, np.float64) for name in FEATURES),
    ]
    rows = np.empty(count, dtype=dtype)
    rows["prediction_timestamp"] = np.arange(count) * 1_000
    rows["ground_truth"] = data.targets
    rows["weight"] = np.ones(count) if weights is None else weights
    for index, name in enumerate(FEATURES):
        rows[FEATURE_PREFIX + name] = data.rows[:, index]
    return rows


def _macro_f1_by_loops(truth: list[int], predicted: list[int], classes: int) -> float:
    scores = []
    for k in range(classes):
        tp = sum(t == k and p == k for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != k and p == k for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == k and p != k for t, p in zip(truth, predicted, strict=True))
        if tp + fp + fn == 0:
            continue
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


def test_integer_weights_train_the_same_softmax_as_repeated_rows() -> None:
    data = make_dataset(ModelTask.MULTICLASS, 120, FEATURES, seed=4)
    counts = np.random.default_rng(5).integers(1, 4, 120)
    weighted = train_softmax(
        data.rows, data.targets, FEATURES, "w", epochs=200, sample_weight=counts.astype(float)
    )
    repeated = train_softmax(
        np.repeat(data.rows, counts, axis=0), np.repeat(data.targets, counts), FEATURES, "r",
        epochs=200,
    )  # fmt: skip
    np.testing.assert_allclose(weighted.weights, repeated.weights, atol=1e-9)
    np.testing.assert_allclose(weighted.bias, repeated.bias, atol=1e-9)


def test_the_shipped_trainer_fits_softmax_keeping_every_class_of_production() -> None:
    rows = _window_rows(300, seed=1)
    # The window happens to hold no class 2 at all; production answers three classes.
    rows = rows[rows["ground_truth"] != 2]
    window = TrainingWindow("tickets", "v1-r1", ModelTask.MULTICLASS, FEATURES, rows, 1.0, 3)
    model = train(window)
    assert isinstance(model, SoftmaxModel) and model.version == "v1-r1"
    assert model.n_classes == 3
    predicted = model.predict_batch(window.features())
    assert np.mean(predicted == window.targets()) > 0.6


def test_recency_weights_steer_the_multiclass_trainer() -> None:
    old, new = _window_rows(400, seed=2), _window_rows(400, seed=3)
    # The old rows' labels are rotated (a relation that no longer holds); weights favour the new.
    old["ground_truth"] = (old["ground_truth"] + 1) % 3
    rows = np.concatenate([old, new])
    rows["weight"] = np.where(np.arange(800) < 400, 0.01, 1.0)
    model = train(TrainingWindow("tickets", "v", ModelTask.MULTICLASS, FEATURES, rows, 1.0, 3))
    fresh = _window_rows(400, seed=9)
    window = TrainingWindow("tickets", "v", ModelTask.MULTICLASS, FEATURES, fresh, 1.0, 3)
    assert np.mean(model.predict_batch(window.features()) == window.targets()) > 0.6


def test_a_multiclass_candidate_is_judged_by_macro_f1_beside_production() -> None:
    rows = _window_rows(1_000, seed=6)
    # Production knows only the bias: it always answers the same class.
    base, metadata = train_multiclass_model(
        "tickets", "v1", make_dataset(ModelTask.MULTICLASS, 300, FEATURES, seed=7)
    )
    constant = SoftmaxModel("v1", FEATURES, np.zeros((3, 4)), np.array([0.0, 1.0, 0.0]))
    spec = CandidateSpec(
        "tickets", "tickets:v1:1", "v1", ModelTask.MULTICLASS, FEATURES, 60_000.0, n_classes=3
    )
    candidate = build_candidate(
        spec, rows, train, LoadedModel(constant, metadata), now_ms=10**7, lineage={}
    )
    evaluation = candidate.evaluation
    assert evaluation.metric == "macro_f1" and evaluation.higher_is_better
    assert evaluation.rows == 200
    held = rows[-200:]
    truth = held["ground_truth"].astype(int).tolist()
    features = np.column_stack([held[FEATURE_PREFIX + name] for name in FEATURES])
    assert isinstance(candidate.model, SoftmaxModel)
    predicted = candidate.model.predict_batch(features).astype(int).tolist()
    assert evaluation.candidate == pytest.approx(_macro_f1_by_loops(truth, predicted, 3))
    assert evaluation.production == pytest.approx(_macro_f1_by_loops(truth, [1] * 200, 3))
    assert evaluation.candidate > evaluation.production + 0.2
    assert candidate.metadata.task is ModelTask.MULTICLASS
    assert candidate.metadata.kind == "softmax"
    assert {"accuracy", "log_loss", "macro_f1"} <= set(candidate.metadata.metrics)
    assert base.n_classes == 3


def test_a_multiclass_model_without_probabilities_is_scored_by_its_classes() -> None:
    class Classes:
        version = "v1-rx"

        def predict(self, features: dict[str, float]) -> float:
            return 1.0 if features["age"] > 0 else 0.0

    held = _window_rows(80, seed=8)
    features = np.column_stack([held[FEATURE_PREFIX + name] for name in FEATURES])
    # One-hot of the answered class, widened to the three classes the window may hold.
    matrix = class_probabilities(Classes(), FEATURES, features, 3)
    expected = [[0.0, 1.0, 0.0] if age > 0 else [1.0, 0.0, 0.0] for age in held["feature_age"]]
    assert matrix.tolist() == expected
