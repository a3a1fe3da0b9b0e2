"""Semantic checks on decoded events; Avro guarantees types, these guarantee sense.

Each check raises DecodeError(reason=INVALID_FIELD) naming the field and the value, so the
stream processor can dead-letter the event with a reason an operator can act on.
"""

from __future__ import annotations

import math
from typing import Final

from safeloop.schemas.events import OutcomeEvent, PredictionEvent
from safeloop.schemas.exceptions import DecodeError, DecodeReason

DEFAULT_MAX_FUTURE_SKEW_MS: Final = 5 * 60 * 1000


def _invalid(owner: str, name: str, value: object, problem: str) -> DecodeError:
    return DecodeError(
        DecodeReason.INVALID_FIELD, f"{owner}.{name}={value!r}: {problem}", field=name
    )


def _require_text(owner: str, name: str, value: str) -> None:
    if not value.strip():
        raise _invalid(owner, name, value, "must not be empty")


def _require_finite(owner: str, name: str, value: float) -> None:
    if not math.isfinite(value):
        raise _invalid(owner, name, value, "must be a finite number")


def _require_timestamp(
    owner: str, name: str, value: int, now_ms: int, max_future_skew_ms: int
) -> None:
    if value < 0:
        raise _invalid(owner, name, value, "must not be before 1970")
    if value > now_ms + max_future_skew_ms:
        raise _invalid(
            owner,
            name,
            value,
            f"is {value - now_ms} ms in the future (allowed skew {max_future_skew_ms} ms)",
        )


def validate_prediction(
    event: PredictionEvent, now_ms: int, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
) -> None:
    """Raise DecodeError if the prediction makes no sense; a failed request (error set) may
    carry no prediction."""
    owner = "PredictionEvent"
    _require_text(owner, "prediction_id", event.prediction_id)
    _require_text(owner, "model_name", event.model_name)
    _require_text(owner, "model_version", event.model_version)
    _require_timestamp(owner, "timestamp", event.timestamp, now_ms, max_future_skew_ms)
    if event.prediction is None:
        if not event.error:
            raise _invalid(owner, "prediction", None, "is missing and no error says why")
    else:
        _require_finite(owner, "prediction", event.prediction)
    if event.confidence is not None:
        _require_finite(owner, "confidence", event.confidence)
        if not 0.0 <= event.confidence <= 1.0:
            raise _invalid(owner, "confidence", event.confidence, "must be within [0, 1]")
    _require_finite(owner, "latency_ms", event.latency_ms)
    if event.latency_ms < 0:
        raise _invalid(owner, "latency_ms", event.latency_ms, "must not be negative")
    # One pass over values in C; name the culprit only when something is wrong.
    if not all(map(math.isfinite, event.features.values())):
        name, value = next((k, v) for k, v in event.features.items() if not math.isfinite(v))
        raise DecodeError(
            DecodeReason.INVALID_FIELD,
            f"{owner}.features[{name!r}]={value!r}: must be a finite number",
            field="features",
        )
    probabilities = event.class_probabilities
    if probabilities:
        _require_class_probabilities(owner, probabilities)
    if event.segments:
        _require_segments(owner, event.segments)


# Segments become metric rows and gate comparisons: bounded so one producer cannot flood them.
MAX_SEGMENT_KEYS: Final = 16
MAX_SEGMENT_CHARS: Final = 128


def _require_segments(owner: str, segments: dict[str, str]) -> None:
    name = "segments"
    if len(segments) > MAX_SEGMENT_KEYS:
        raise _invalid(owner, name, segments, f"has more than {MAX_SEGMENT_KEYS} keys")
    for key, value in segments.items():
        if not key.strip() or not value.strip():
            raise _invalid(owner, name, {key: value}, "keys and values must not be empty")
        if len(key) > MAX_SEGMENT_CHARS or len(value) > MAX_SEGMENT_CHARS:
            raise _invalid(
                owner, name, {key: value}, f"keys and values are at most {MAX_SEGMENT_CHARS} chars"
            )


# Producers outside safeloop may round (float32): a sum this close to 1 is one.
PROBABILITY_SUM_TOLERANCE: Final = 1e-3


def _require_class_probabilities(owner: str, probabilities: list[float]) -> None:
    name = "class_probabilities"
    if len(probabilities) < 2:
        raise _invalid(owner, name, probabilities, "needs at least two classes")
    if not all(0.0 <= p <= 1.0 for p in probabilities):
        raise _invalid(owner, name, probabilities, "must hold probabilities within [0, 1]")
    if abs(math.fsum(probabilities) - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise _invalid(owner, name, probabilities, "must sum to 1")


def validate_outcome(
    event: OutcomeEvent, now_ms: int, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
) -> None:
    """Raise DecodeError if the outcome makes no sense."""
    owner = "OutcomeEvent"
    _require_text(owner, "prediction_id", event.prediction_id)
    _require_finite(owner, "ground_truth", event.ground_truth)
    _require_timestamp(owner, "timestamp", event.timestamp, now_ms, max_future_skew_ms)
