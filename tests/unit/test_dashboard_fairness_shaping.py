"""Fairness shaping: per-group figures from counts, sample markers, best-worst gaps; its SQL
binds the segment key instead of writing it into the text."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from safeloop.services.dashboard import fairness_queries
from safeloop.services.dashboard.fairness_shaping import fairness_view, label_figures, task_of
from safeloop.services.dashboard.queries import Scope
from safeloop.services.metrics.classification import classification_metrics
from safeloop.services.metrics.performance import Task

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
HOSTILE = "gender'] ; DROP TABLE predictions; --"


def _labels(version: str, segment: str, score: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """A group_labels row computed the way the SQL does, from raw pairs."""
    predicted = score >= 0.5
    positive = truth == 1
    return {
        "model_version": version,
        "route": "production",
        "segment": segment,
        "labelled": len(score),
        "tp": int(np.sum(predicted & positive)),
        "fp": int(np.sum(predicted & ~positive)),
        "fn": int(np.sum(~predicted & positive)),
        "exact": int(np.sum(score == truth)),
        "abs_error_sum": float(np.sum(np.abs(score - truth))),
        "squared_error_sum": float(np.sum((score - truth) ** 2)),
    }


def test_binary_figures_match_the_metrics_core() -> None:
    rng = np.random.default_rng(3)
    score = rng.random(400)
    truth = (rng.random(400) < score).astype(float)
    figures = label_figures(Task.CLASSIFICATION, _labels("v1", "f", score, truth))
    core = classification_metrics(truth, score)
    assert figures["accuracy"] == pytest.approx(core.accuracy)
    assert figures["f1"] == pytest.approx(core.f1)


def test_regression_and_multiclass_figures() -> None:
    score, truth = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 1.0])
    regression = label_figures(Task.REGRESSION, _labels("v1", "a", score, truth))
    assert regression["mae"] == pytest.approx((0 + 1 + 3) / 3)
    assert regression["rmse"] == pytest.approx(math.sqrt((0 + 1 + 9) / 3))
    multiclass = label_figures(Task.MULTICLASS, _labels("v1", "a", score, truth))
    assert multiclass == {"accuracy": pytest.approx(1 / 3)}
    empty = _labels("v1", "a", np.array([]), np.array([]))
    assert label_figures(Task.CLASSIFICATION, empty) == {"accuracy": None, "f1": None}


def test_gaps_rank_groups_and_leave_small_ones_out() -> None:
    serving = [
        {"model_version": "v1", "route": "production", "segment": s, "requests": n, "errors": e}
        for s, n, e in [("DE", 200, 2), ("FR", 100, 10), ("IT", 5, 5), ("ES", 50, 1)]
    ]
    ones, zeros = np.ones(60), np.zeros(60)
    labels = [
        _labels("v1", "DE", np.r_[ones[:54], zeros[:6]], ones),  # accuracy 0.9
        _labels("v1", "FR", np.r_[ones[:42], zeros[:18]], ones),  # accuracy 0.7
        _labels("v1", "IT", zeros[:5], ones[:5]),  # accuracy 0, but 5 labels only
    ]
    view = fairness_view("country", Task.CLASSIFICATION, serving, labels, min_sample=30)
    (series,) = view["series"]
    assert series["name"] == "v1 (production)"
    groups = {g["group"]: g for g in series["groups"]}
    assert [g["group"] for g in series["groups"]] == ["DE", "ES", "FR", "IT"]
    assert groups["IT"]["requests_enough"] is False and groups["IT"]["labelled_enough"] is False
    assert groups["ES"]["labelled"] == 0 and groups["ES"]["accuracy"] is None
    error_gap = series["gaps"]["error_rate"]
    # IT's 100 % error rate has 5 requests: it does not count; FR (10 %) vs DE (1 %).
    assert (error_gap["worst"], error_gap["best"]) == ("FR", "DE")
    assert error_gap["gap"] == pytest.approx(0.10 - 0.01)
    assert error_gap["groups"] == 3
    accuracy_gap = series["gaps"]["accuracy"]
    assert (accuracy_gap["best"], accuracy_gap["worst"]) == ("DE", "FR")
    assert accuracy_gap["gap"] == pytest.approx(0.2)
    assert [f["name"] for f in view["figures"]] == ["error_rate", "accuracy", "f1"]


def test_one_group_has_no_gap_and_versions_are_separate() -> None:
    serving = [
        {"model_version": v, "route": r, "segment": "f", "requests": 100, "errors": 1}
        for v, r in [("v1", "production"), ("v2", "canary")]
    ]
    view = fairness_view("gender", Task.REGRESSION, serving, [], min_sample=10)
    assert [s["name"] for s in view["series"]] == ["v1 (production)", "v2 (canary)"]
    assert all(gap is None for s in view["series"] for gap in s["gaps"].values())
    assert set(view["series"][0]["gaps"]) == {"error_rate", "mae", "rmse"}


def test_task_comes_from_the_windows() -> None:
    assert task_of([{"multiclass": 0, "regression": 3}]) is Task.REGRESSION
    assert task_of([{"multiclass": 2, "regression": 0}]) is Task.MULTICLASS
    assert task_of([{"multiclass": 0, "regression": 0}]) is Task.CLASSIFICATION
    assert task_of([]) is Task.CLASSIFICATION


def test_the_segment_key_is_bound_never_written_into_the_sql() -> None:
    scope = Scope.last("fraud", 60, now=NOW)
    for query in (
        fairness_queries.group_serving(scope, HOSTILE),
        fairness_queries.group_labels(scope, HOSTILE),
    ):
        assert HOSTILE not in query.sql
        assert query.parameters["key"] == HOSTILE
    assert fairness_queries.segment_keys(scope).parameters["model"] == "fraud"
    assert fairness_queries.group_serving(scope, "a").sql == (
        fairness_queries.group_serving(scope, "b").sql
    )
