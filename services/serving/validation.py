"""Turn untrusted JSON into checked requests; every error says exactly what is wrong."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from safeloop.schemas.validation import MAX_SEGMENT_CHARS
from safeloop.services.serving.exceptions import InvalidRequestError

MAX_BATCH_ROWS = 1000
_JSON_TYPE_NAMES = {
    str: "string",
    list: "array",
    dict: "object",
    bool: "boolean",
    type(None): "null",
}
MAX_ROUTING_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class PredictRequest:
    model_name: str | None
    routing_key: str
    # Unchecked: the model version chosen by routing decides which features are required.
    features: Mapping[str, Any]
    # Request attributes (country, tenant, device); the model's segment_keys pick the segments.
    attributes: Mapping[str, str] = field(default_factory=dict)


def parse_request(body: Any, where: str = "body") -> PredictRequest:
    """Check the envelope of one prediction request (`model`, `routing_key`, `features`)."""
    if not isinstance(body, dict):
        raise InvalidRequestError(f"{where} must be a JSON object")
    model_name = body.get("model")
    if model_name is not None and not isinstance(model_name, str):
        raise InvalidRequestError(f"{where}.model must be a string")
    routing_key = body.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        raise InvalidRequestError(f"{where}.routing_key is required: a non-empty string")
    if len(routing_key) > MAX_ROUTING_KEY_CHARS:
        raise InvalidRequestError(f"{where}.routing_key is longer than {MAX_ROUTING_KEY_CHARS}")
    features = body.get("features")
    if not isinstance(features, dict):
        raise InvalidRequestError(f"{where}.features is required: an object of name -> number")
    return PredictRequest(model_name, routing_key, features, parse_attributes(body, where))


def parse_attributes(body: Mapping[str, Any], where: str = "body") -> dict[str, str]:
    """The optional `attributes` object: name -> string (numbers and booleans as text)."""
    raw = body.get("attributes")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"{where}.attributes must be an object of name -> string")
    attributes: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        elif isinstance(value, int | float) and math.isfinite(value):
            text = f"{value:g}"
        else:
            raise InvalidRequestError(
                f"{where}.attributes[{name!r}] must be a string, number or boolean"
            )
        if not text.strip() or len(name) > MAX_SEGMENT_CHARS or len(text) > MAX_SEGMENT_CHARS:
            raise InvalidRequestError(
                f"{where}.attributes[{name!r}] must be non-empty and at most "
                f"{MAX_SEGMENT_CHARS} characters"
            )
        attributes[name] = text
    return attributes


def parse_batch(body: Any) -> tuple[str | None, list[PredictRequest]]:
    """`{"model": ..., "rows": [{"routing_key", "features"}, ...]}`; row errors name the row."""
    if not isinstance(body, dict):
        raise InvalidRequestError("body must be a JSON object")
    rows = body.get("rows")
    if not isinstance(rows, list) or not rows:
        raise InvalidRequestError("rows is required: a non-empty array")
    if len(rows) > MAX_BATCH_ROWS:
        raise InvalidRequestError(f"rows has {len(rows)} entries; at most {MAX_BATCH_ROWS}")
    model_name = body.get("model")
    if model_name is not None and not isinstance(model_name, str):
        raise InvalidRequestError("model must be a string")
    return model_name, [parse_request(row, f"rows[{index}]") for index, row in enumerate(rows)]


def check_features(raw: Mapping[str, Any], expected: Sequence[str]) -> dict[str, float]:
    """Exactly the expected features, each a finite number (booleans are not numbers)."""
    missing = [name for name in expected if name not in raw]
    if missing:
        raise InvalidRequestError(f"missing features: {', '.join(missing)}")
    if len(raw) != len(expected):
        known = set(expected)
        unknown = sorted(name for name in raw if name not in known)
        raise InvalidRequestError(
            f"unknown features: {', '.join(unknown)} (expected {', '.join(expected)})"
        )
    checked: dict[str, float] = {}
    for name in expected:
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequestError(
                f"feature {name!r} must be a number, got "
                f"{_JSON_TYPE_NAMES.get(type(value), type(value).__name__)}"
            )
        number = float(value)
        if not math.isfinite(number):
            raise InvalidRequestError(f"feature {name!r} must be finite, got {value}")
        checked[name] = number
    return checked


def numeric_part(raw: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric features of a rejected request, kept for its error event."""
    return {
        str(name): float(value)
        for name, value in raw.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    }
