"""Decoded events -> (keys, column batches) for `KeyedWindows.append`, NaN for missing values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.schemas.events import FeedbackRecord, PredictionEvent
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN

Batch = dict[str, npt.NDArray[Any]]


class ScoreConvention(StrEnum):
    """How a model fills `prediction` and `confidence`; metrics need P(y=1) or the value."""

    # prediction is P(y=1) itself.
    PROBABILITY = "probability"
    # prediction is the class (0 or 1), confidence the probability of that class.
    LABEL_CONFIDENCE = "label_confidence"
    # regression: prediction is the value.
    VALUE = "value"


def positive_score(
    prediction: float | None, confidence: float | None, convention: ScoreConvention
) -> float:
    """P(y=1) for classifiers, the value for regressors; NaN when the event has none."""
    if prediction is None:
        return math.nan
    if convention is not ScoreConvention.LABEL_CONFIDENCE:
        return prediction
    if confidence is None:
        return math.nan
    if prediction not in (0.0, 1.0):
        raise InvalidInputError(f"label_confidence needs a 0/1 prediction, got {prediction}")
    return confidence if prediction == 1.0 else 1.0 - confidence


def health_batch(events: Sequence[PredictionEvent]) -> tuple[list[WindowKey], Batch]:
    """Keys and `HEALTH_COLUMNS` of prediction events."""
    keys = [WindowKey(event.model_name, event.model_version, event.route) for event in events]
    count = len(events)
    batch: Batch = {
        TIMESTAMP_COLUMN: np.fromiter((e.timestamp for e in events), np.int64, count),
        "latency_ms": np.fromiter((e.latency_ms for e in events), np.float64, count),
        "error": np.fromiter((e.server_error for e in events), np.bool_, count),
        "client_error": np.fromiter((e.client_error for e in events), np.bool_, count),
    }
    return keys, batch


def feedback_batch(
    records: Sequence[FeedbackRecord], convention: ScoreConvention
) -> tuple[list[WindowKey], Batch]:
    """Keys and `FEEDBACK_COLUMNS` of feedback records, timed by their prediction timestamp.

    Expired records keep NaN ground truth, so they count towards label coverage only.
    Records with class probabilities (multi-class) also fill the probability columns.
    """
    keys = [WindowKey(record.model_name, record.model_version, record.route) for record in records]
    count = len(records)
    nan = math.nan
    batch: Batch = {
        TIMESTAMP_COLUMN: np.fromiter((r.prediction_timestamp for r in records), np.int64, count),
        "score": np.fromiter(
            (positive_score(r.prediction, r.confidence, convention) for r in records),
            np.float64,
            count,
        ),
        "ground_truth": np.fromiter(
            (nan if r.ground_truth is None else r.ground_truth for r in records), np.float64, count
        ),
        "label_delay_ms": np.fromiter(
            (nan if r.label_delay_ms is None else r.label_delay_ms for r in records),
            np.float64,
            count,
        ),
    }
    batch.update(_probability_batch(records))
    return keys, batch


_NAN3: tuple[float, float, float] = (math.nan, math.nan, math.nan)


def _probability_figures(probabilities: Sequence[float], truth: float | None) -> tuple[float, ...]:
    """(P(true class), top probability, sum of squares); NaN for P(true class) without a label
    or with a label that is not one of the classes."""
    if not probabilities:
        return _NAN3
    top = max(probabilities)
    squared = math.fsum(p * p for p in probabilities)
    valid = truth is not None and math.isfinite(truth) and truth == int(truth)
    index = int(truth) if valid and truth is not None else -1
    true_class = probabilities[index] if 0 <= index < len(probabilities) else math.nan
    return true_class, top, squared


def _probability_batch(records: Sequence[FeedbackRecord]) -> Batch:
    count = len(records)
    if not any(r.class_probabilities for r in records):
        nan = np.full(count, math.nan)
        return {
            "true_class_probability": nan,
            "top_probability": nan.copy(),
            "probability_squared_sum": nan.copy(),
        }
    figures = np.array(
        [_probability_figures(r.class_probabilities, r.ground_truth) for r in records],
        dtype=np.float64,
    ).reshape(count, 3)
    return {
        "true_class_probability": figures[:, 0].copy(),
        "top_probability": figures[:, 1].copy(),
        "probability_squared_sum": figures[:, 2].copy(),
    }
