"""Recency weights and the weighted export of the labelled window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, Route
from safeloop.services.retraining.exceptions import ExportError, RetrainingError
from safeloop.services.retraining.export import weighted_export
from safeloop.services.retraining.weights import recency_weights

HOUR_MS = 3_600_000


def test_weights_halve_every_half_life() -> None:
    now = 10 * HOUR_MS
    weights = recency_weights(
        [now, now - HOUR_MS, now - 2 * HOUR_MS, now - 3 * HOUR_MS], now, HOUR_MS
    )
    np.testing.assert_allclose(weights, [1.0, 0.5, 0.25, 0.125])


def test_weights_by_formula_and_future_events() -> None:
    now = 1_000_000
    stamps = [now - 1_234, now - 77_777, now + 5_000]
    weights = recency_weights(stamps, now, 10_000.0)
    expected = [math.pow(0.5, 1_234 / 10_000), math.pow(0.5, 77_777 / 10_000), 1.0]
    np.testing.assert_allclose(weights, expected)


def test_normalised_weights_average_one() -> None:
    weights = recency_weights([0, 1_000, 2_000], 2_000, 1_000.0, normalise=True)
    assert weights.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(weights / weights[-1], [0.25, 0.5, 1.0])
    assert recency_weights([], 0, 1.0, normalise=True).shape == (0,)
    with pytest.raises(RetrainingError):
        recency_weights([0], 0, 0.0)


def record(index: int, truth: float | None, features: dict[str, float]) -> FeedbackRecord:
    return FeedbackRecord(
        prediction_id=f"pred-{index}",
        model_name="m",
        model_version="v1",
        route=Route.PRODUCTION,
        replica_id="r",
        features=features,
        prediction=0.25 * index,
        confidence=None,
        prediction_timestamp=index * HOUR_MS,
        status=FeedbackStatus.JOINED if truth is not None else FeedbackStatus.EXPIRED,
        ground_truth=truth,
        outcome_timestamp=None,
        label_delay_ms=None if truth is None else 60_000,
        outcome_source=None,
        emitted_at=0,
    )


def test_export_holds_labelled_rows_with_weights_and_features() -> None:
    records = [
        record(0, 1.0, {"x": 1.0, "y": 2.0}),
        record(1, None, {"x": 9.0}),
        record(2, 0.0, {"x": 3.0}),
    ]
    rows = weighted_export(records, now_ms=2 * HOUR_MS, half_life_ms=HOUR_MS)
    assert rows["prediction_id"].tolist() == ["pred-0", "pred-2"]
    assert rows["model_version"].tolist() == ["v1", "v1"]
    np.testing.assert_allclose(rows["weight"], [0.25, 1.0])
    np.testing.assert_allclose(rows["ground_truth"], [1.0, 0.0])
    np.testing.assert_allclose(rows["prediction"], [0.0, 0.5])
    np.testing.assert_allclose(rows["feature_x"], [1.0, 3.0])
    assert rows["feature_y"][0] == 2.0 and math.isnan(rows["feature_y"][1])
    assert rows["label_delay_ms"].tolist() == [60_000.0, 60_000.0]


def test_export_with_fixed_features_and_empty_input() -> None:
    rows = weighted_export([record(0, 1.0, {"x": 1.0, "y": 2.0})], 0, HOUR_MS, feature_names=["y"])
    assert "feature_x" not in (rows.dtype.names or ())
    assert rows["feature_y"].tolist() == [2.0]
    empty = weighted_export([record(0, None, {})], 0, HOUR_MS)
    assert empty.shape == (0,)
    assert "weight" in (empty.dtype.names or ())
    with pytest.raises(ExportError):
        weighted_export([], 0, HOUR_MS, feature_names=["a", "a"])
