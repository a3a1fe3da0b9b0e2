"""Decoded events -> (keys, column batches) for `KeyedWindows.append`, NaN for missing values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from itertools import chain
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
    batch.update(_probability_batch(records, batch["ground_truth"]))
    return keys, batch


def _probability_batch(records: Sequence[FeedbackRecord], truth: npt.NDArray[Any]) -> Batch:
    """P(true class), the top probability and the sum of squared probabilities per record,
    NaN without probabilities (and P(true class) NaN without a label that is one of the
    classes); segment reductions over all records' probabilities flattened into one array."""
    count = len(records)
    lengths = np.fromiter((len(r.class_probabilities) for r in records), np.int64, count)
    top = np.full(count, math.nan)
    squared = np.full(count, math.nan)
    true_class = np.full(count, math.nan)
    has = lengths > 0
    if bool(has.any()):
        flat = np.fromiter(
            chain.from_iterable(r.class_probabilities for r in records),
            np.float64,
            int(lengths.sum()),
        )
        starts = np.cumsum(lengths) - lengths
        # Empty rows hold no values, so each non-empty row's segment ends at the next one.
        top[has] = np.maximum.reduceat(flat, starts[has])
        squared[has] = np.add.reduceat(flat * flat, starts[has])
        with np.errstate(invalid="ignore"):
            valid = has & (truth >= 0) & (truth < lengths) & (truth == np.floor(truth))
        true_class[valid] = flat[starts[valid] + truth[valid].astype(np.int64)]
    return {
        "true_class_probability": true_class,
        "top_probability": top,
        "probability_squared_sum": squared,
    }
