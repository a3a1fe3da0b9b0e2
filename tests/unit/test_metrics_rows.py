"""Snapshot -> ClickHouse long-layout rows."""

from __future__ import annotations

import math

import numpy as np

from safeloop.schemas.events import Route
from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.metrics.classification import classification_metrics
from safeloop.services.metrics.drift import model_drift
from safeloop.services.metrics.estimation import compare_estimate, estimate_performance
from safeloop.services.metrics.health import health_snapshot
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.performance import Task, performance_snapshot
from safeloop.services.metrics.rows import (
    RowContext,
    drift_rows,
    estimate_rows,
    health_rows,
    performance_rows,
    shadow_rows,
)
from safeloop.services.metrics.shadow import compare_shadow

CONTEXT = RowContext(WindowKey("fraud", "v2", Route.CANARY), 1_000, 61_000, {"window": "time:60s"})


def by_metric(rows: list[MetricRow]) -> dict[str, MetricRow]:
    return {row.metric: row for row in rows}


def test_health_rows() -> None:
    rows = by_metric(
        health_rows(CONTEXT, health_snapshot([10.0, 20.0], [False, True], span_ms=60_000))
    )
    assert rows["error_rate"].value == 0.5
    assert rows["error_rate"].sample_count == 2
    assert rows["latency_p50_ms"].value == 15.0
    row = rows["request_count"]
    assert (row.model_name, row.model_version, row.route) == ("fraud", "v2", "canary")
    assert (row.window_start_ms, row.window_end_ms) == (1_000, 61_000)
    assert row.as_dict()["labels"] == {"window": "time:60s"}
    assert row.as_dict()["feature"] == ""


def test_empty_window_rows_skip_undefined_figures() -> None:
    rows = by_metric(health_rows(CONTEXT, health_snapshot([], [])))
    assert set(rows) == {"request_count", "error_count"}
    performance = by_metric(
        performance_rows(CONTEXT, performance_snapshot(Task.CLASSIFICATION, [], []))
    )
    assert set(performance) == {"predicted_count", "labelled_count"}


def test_performance_rows_include_reliability_bins() -> None:
    snapshot = performance_snapshot(
        Task.CLASSIFICATION,
        [0.05, 0.15, 0.95, 0.9],
        [0.0, 1.0, 1.0, 1.0],
        label_delay_ms=[10.0, 20.0, 30.0, 40.0],
    )
    rows = by_metric(performance_rows(CONTEXT, snapshot))
    assert rows["accuracy"].value == 0.75
    assert rows["roc_auc"].value == 1.0
    assert rows["reliability_bin_09_count"].value == 2
    assert rows["reliability_bin_09_observed_rate"].value == 1.0
    assert math.isclose(rows["reliability_bin_01_mean_predicted"].value, 0.15)
    assert "reliability_bin_05_count" not in rows
    assert rows["label_delay_p50_ms"].value == 25.0
    regression = by_metric(
        performance_rows(CONTEXT, performance_snapshot(Task.REGRESSION, [1.0, 2.0], [1.0, 3.0]))
    )
    assert regression["mae"].value == 0.5
    assert "accuracy" not in regression


def test_estimate_and_shadow_rows() -> None:
    scores = [0.9, 0.2, 0.7]
    estimate = estimate_performance(scores)
    comparison = compare_estimate(estimate, classification_metrics([1, 0, 0], scores))
    rows = by_metric(estimate_rows(CONTEXT, estimate, comparison))
    assert math.isclose(rows["cbpe_expected_accuracy"].value, (0.9 + 0.8 + 0.7) / 3)
    assert math.isclose(rows["cbpe_accuracy_error"].value, 0.8 - 2 / 3)
    shadow = by_metric(
        shadow_rows(CONTEXT, compare_shadow(Task.CLASSIFICATION, [0.9, 0.1], [0.8, 0.6]))
    )
    assert shadow["shadow_agreement_rate"].value == 0.5
    assert "shadow_performance" not in shadow


def test_drift_rows_name_features_and_bands() -> None:
    rng = np.random.default_rng(0)
    baseline = ModelBaseline.from_training_data(
        {"amount": rng.normal(size=2_000)}, score=rng.random(2_000)
    )
    drift = model_drift(baseline, {"amount": rng.normal(2.0, 1.0, 500)}, score=rng.random(500))
    rows = drift_rows(CONTEXT, drift)
    psi_rows = {row.feature: row for row in rows if row.metric == "psi"}
    assert set(psi_rows) == {"amount", ""}
    assert psi_rows["amount"].labels["band"] == "major"
    assert psi_rows["amount"].labels["window"] == "time:60s"
    assert psi_rows[""].labels["band"] == "stable"
    assert psi_rows["amount"].sample_count == 500
    assert {row.metric for row in rows} == {
        "psi",
        "ks",
        "js_divergence",
        "wasserstein",
        "missing_fraction",
    }
