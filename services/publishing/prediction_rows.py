"""JSON objects (the HTTP ingest's batches) to validated PredictionEvents.

Required: model_name, model_version, prediction (or error). Optional: prediction_id (generated
when absent), timestamp (default now), features, confidence, latency_ms, route (production,
canary, shadow), replica_id, routing_key (default the prediction_id), error,
class_probabilities (multi-class models: P(class k) at index k), segments (segment key -> value,
e.g. {"country": "BR"}, for per-segment metrics and gates).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.exceptions import DecodeError
from safeloop.schemas.validation import validate_prediction
from safeloop.services.publishing import fields
from safeloop.services.publishing.exceptions import InvalidRecordError

EXTERNAL_HASH_VERSION = 0


def prediction_event(row: object, *, replica_id: str, now_ms: int) -> PredictionEvent:
    """The prediction in `row`; `InvalidRecordError` names the field and the problem."""
    if not isinstance(row, Mapping):
        raise InvalidRecordError("record", "is not an object", f"record={row!r}: is not an object")
    prediction_id = fields.text(row, "prediction_id", required=False) or os.urandom(16).hex()
    error = fields.text(row, "error", required=False)
    route_text = fields.text(row, "route", required=False) or Route.PRODUCTION.value
    try:
        route = Route(route_text)
    except ValueError:
        raise fields.invalid("route", "must be production, canary or shadow", route_text) from None
    event = PredictionEvent(
        prediction_id=prediction_id,
        model_name=_required_text(row, "model_name"),
        model_version=_required_text(row, "model_version"),
        timestamp=_or(fields.timestamp_ms(row, "timestamp", required=False), now_ms),
        features=fields.features(row, "features"),
        prediction=fields.number(row, "prediction", required=error is None),
        confidence=fields.number(row, "confidence", required=False),
        latency_ms=_or(fields.number(row, "latency_ms", required=False), 0.0),
        route=route,
        replica_id=fields.text(row, "replica_id", required=False) or replica_id,
        routing_key=fields.text(row, "routing_key", required=False) or prediction_id,
        routing_hash_version=EXTERNAL_HASH_VERSION,
        error=error,
        class_probabilities=fields.numbers(row, "class_probabilities"),
        segments=fields.strings(row, "segments"),
    )
    try:
        validate_prediction(event, now_ms)
    except DecodeError as exc:
        field = exc.field or "record"
        problem = exc.message.split(": ", 1)[-1]
        raise InvalidRecordError(field, _value_free(problem), exc.message) from exc
    return event


def _required_text(row: Mapping[str, Any], field: str) -> str:
    value = fields.text(row, field)
    assert value is not None
    return value


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _value_free(problem: str) -> str:
    # "is 1234 ms in the future (allowed skew 300000 ms)" groups as "is in the future".
    return "is in the future" if "in the future" in problem else problem
