"""Semantic validation of decoded predictions and outcomes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from safeloop.schemas.events import OutcomeEvent, PredictionEvent, Route
from safeloop.schemas.exceptions import DecodeError, DecodeReason
from safeloop.schemas.validation import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    validate_outcome,
    validate_prediction,
)

NOW = 1_700_000_000_000


def prediction(**changes: Any) -> PredictionEvent:
    base = PredictionEvent(
        prediction_id="p-1",
        model_name="fraud",
        model_version="v2",
        timestamp=NOW - 1_000,
        features={"amount": 1.5, "age": 0.0},
        prediction=0.7,
        confidence=0.9,
        latency_ms=3.0,
        route=Route.PRODUCTION,
        replica_id="replica-1",
        routing_key="user-1",
        routing_hash_version=1,
    )
    return dataclasses.replace(base, **changes)


def outcome(**changes: Any) -> OutcomeEvent:
    base = OutcomeEvent(prediction_id="p-1", ground_truth=1.0, timestamp=NOW, source="labels")
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "event",
    [
        prediction(),
        prediction(prediction=None, confidence=None, error="upstream timeout"),
        prediction(confidence=0.0),
        prediction(confidence=1.0),
        prediction(latency_ms=0.0),
        prediction(features={}),
        prediction(timestamp=NOW + DEFAULT_MAX_FUTURE_SKEW_MS),
        prediction(timestamp=0),
        prediction(prediction=-1e300, error=""),
    ],
)
def test_valid_predictions_pass(event: PredictionEvent) -> None:
    validate_prediction(event, now_ms=NOW)


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [
        ({"prediction_id": ""}, "prediction_id", "empty"),
        ({"prediction_id": "   "}, "prediction_id", "empty"),
        ({"model_name": ""}, "model_name", "empty"),
        ({"model_version": ""}, "model_version", "empty"),
        ({"prediction": math.nan}, "prediction", "nan"),
        ({"prediction": math.inf}, "prediction", "inf"),
        ({"prediction": None}, "prediction", "no error says why"),
        ({"prediction": None, "error": ""}, "prediction", "no error says why"),
        ({"confidence": math.nan}, "confidence", "finite"),
        ({"confidence": 1.01}, "confidence", "[0, 1]"),
        ({"confidence": -0.1}, "confidence", "[0, 1]"),
        ({"latency_ms": -1.0}, "latency_ms", "negative"),
        ({"latency_ms": math.inf}, "latency_ms", "finite"),
        ({"features": {"a": 1.0, "b": math.nan}}, "features", "'b'"),
        ({"features": {"a": -math.inf}}, "features", "-inf"),
        ({"timestamp": NOW + DEFAULT_MAX_FUTURE_SKEW_MS + 1}, "timestamp", "future"),
        ({"timestamp": -5}, "timestamp", "1970"),
    ],
)
def test_invalid_predictions_raise(changes: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(DecodeError) as info:
        validate_prediction(prediction(**changes), now_ms=NOW)
    assert info.value.reason == DecodeReason.INVALID_FIELD
    assert info.value.field == field
    assert needle in str(info.value)
    assert str(info.value).startswith(f"PredictionEvent.{field}")


def test_future_skew_is_configurable() -> None:
    event = prediction(timestamp=NOW + 10_000)
    validate_prediction(event, now_ms=NOW)
    with pytest.raises(DecodeError, match="10000 ms in the future"):
        validate_prediction(event, now_ms=NOW, max_future_skew_ms=1_000)


def test_valid_outcomes_pass() -> None:
    validate_outcome(outcome(), now_ms=NOW)
    validate_outcome(outcome(ground_truth=-3.5, source=""), now_ms=NOW)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"prediction_id": ""}, "prediction_id"),
        ({"ground_truth": math.nan}, "ground_truth"),
        ({"ground_truth": -math.inf}, "ground_truth"),
        ({"timestamp": NOW + DEFAULT_MAX_FUTURE_SKEW_MS + 1}, "timestamp"),
    ],
)
def test_invalid_outcomes_raise(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as info:
        validate_outcome(
            outcome(**changes), now_ms=NOW, max_future_skew_ms=DEFAULT_MAX_FUTURE_SKEW_MS
        )
    assert info.value.reason == DecodeReason.INVALID_FIELD
    assert info.value.field == field
