"""Events to column batches, and the score conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.schemas.events import (
    ErrorKind,
    FeedbackRecord,
    FeedbackStatus,
    PredictionEvent,
    Route,
)
from safeloop.services.metrics.columns import (
    ScoreConvention,
    feedback_batch,
    health_batch,
    positive_score,
)
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.health import HEALTH_COLUMNS, health_of_window
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.performance import FEEDBACK_COLUMNS
from safeloop.services.metrics.windows import CountWindow


def prediction(
    index: int, route: Route, error: str | None = None, kind: ErrorKind | None = None
) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=f"p{index}",
        model_name="m",
        model_version="2" if route is Route.CANARY else "1",
        timestamp=1_000 + index,
        features={"x": 1.0},
        prediction=None if error else 0.7,
        confidence=None,
        latency_ms=float(index),
        route=route,
        replica_id="r1",
        routing_key="k",
        routing_hash_version=1,
        error=error,
        error_kind=kind,
    )


def feedback(index: int, truth: float | None) -> FeedbackRecord:
    return FeedbackRecord(
        prediction_id=f"p{index}",
        model_name="m",
        model_version="1",
        route=Route.PRODUCTION,
        replica_id="r1",
        features={"x": float(index)},
        prediction=1.0,
        confidence=0.8,
        prediction_timestamp=1_000 + index,
        status=FeedbackStatus.JOINED if truth is not None else FeedbackStatus.EXPIRED,
        ground_truth=truth,
        outcome_timestamp=None if truth is None else 2_000,
        label_delay_ms=None if truth is None else 1_000 - index,
        outcome_source=None,
        emitted_at=3_000,
    )


def test_positive_score_conventions() -> None:
    assert positive_score(0.3, None, ScoreConvention.PROBABILITY) == 0.3
    assert positive_score(1.0, 0.8, ScoreConvention.LABEL_CONFIDENCE) == 0.8
    assert positive_score(0.0, 0.8, ScoreConvention.LABEL_CONFIDENCE) == pytest.approx(0.2)
    assert math.isnan(positive_score(None, 0.8, ScoreConvention.PROBABILITY))
    assert math.isnan(positive_score(1.0, None, ScoreConvention.LABEL_CONFIDENCE))
    assert positive_score(12.5, None, ScoreConvention.VALUE) == 12.5
    with pytest.raises(InvalidInputError):
        positive_score(0.4, 0.8, ScoreConvention.LABEL_CONFIDENCE)


def test_health_batch_feeds_keyed_windows() -> None:
    events = [
        prediction(0, Route.PRODUCTION),
        prediction(1, Route.CANARY, error="boom"),
        prediction(2, Route.PRODUCTION),
        prediction(3, Route.CANARY),
    ]
    keys, batch = health_batch(events)
    windows = KeyedWindows(lambda: CountWindow(10, HEALTH_COLUMNS))
    windows.append(keys, batch)
    canary = health_of_window(windows.window(WindowKey("m", "2", Route.CANARY)).view())
    assert (canary.request_count, canary.error_count) == (2, 1)
    production = health_of_window(windows.window(WindowKey("m", "1", Route.PRODUCTION)).view())
    assert production.latency_p50_ms == 1.0


def test_health_batch_tells_server_errors_from_client_errors() -> None:
    events = [
        prediction(0, Route.CANARY, error="model failed", kind=ErrorKind.SERVER),
        prediction(1, Route.CANARY, error="missing features: age", kind=ErrorKind.CLIENT),
        prediction(2, Route.CANARY, error="from a writer without kinds"),
        prediction(3, Route.CANARY),
    ]
    keys, batch = health_batch(events)
    assert batch["error"].tolist() == [True, False, True, False]
    assert batch["client_error"].tolist() == [False, True, False, False]
    windows = KeyedWindows(lambda: CountWindow(10, HEALTH_COLUMNS))
    windows.append(keys, batch)
    canary = health_of_window(windows.window(WindowKey("m", "2", Route.CANARY)).view())
    assert (canary.error_count, canary.error_rate) == (2, 0.5)
    assert (canary.client_error_count, canary.client_error_rate) == (1, 0.25)


def test_feedback_batch_marks_expired_rows_unlabelled() -> None:
    keys, batch = feedback_batch(
        [feedback(0, 1.0), feedback(1, None)], ScoreConvention.LABEL_CONFIDENCE
    )
    assert keys == [WindowKey("m", "1", Route.PRODUCTION)] * 2
    assert set(batch) == set(FEEDBACK_COLUMNS)
    np.testing.assert_allclose(batch["score"], [0.8, 0.8])
    assert batch["ground_truth"][0] == 1.0
    assert np.isnan(batch["ground_truth"][1])
    assert np.isnan(batch["label_delay_ms"][1])
    assert batch["timestamp_ms"].tolist() == [1_000, 1_001]
