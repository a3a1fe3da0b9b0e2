"""Typed values out of loosely typed input (CSV text, JSON, Parquet): one parser per kind.

Each raises `InvalidRecordError` naming the field and a short, value-free problem, so that a
summary can group rejects; the detail carries the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from safeloop.services.publishing.exceptions import InvalidRecordError

_TRUE: Final = frozenset({"true", "yes"})
_FALSE: Final = frozenset({"false", "no"})
_MISSING: Final = object()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def invalid(field: str, problem: str, value: object) -> InvalidRecordError:
    """The error for `field` holding `value`."""
    return InvalidRecordError(field, problem, f"{field}={value!r}: {problem}")


def raw(row: Mapping[str, Any], field: str, *, required: bool) -> Any:
    """The field's value; None when absent or empty (an error when `required`)."""
    value = row.get(field, _MISSING)
    if value is _MISSING or value is None or value == "":
        if required:
            raise InvalidRecordError(field, "is missing", f"{field} is missing")
        return None
    return value


def text(row: Mapping[str, Any], field: str, *, required: bool = True) -> str | None:
    """A non-blank string."""
    value = raw(row, field, required=required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string", value)
    if not value.strip():
        raise invalid(field, "must not be empty", value)
    return value


def number(row: Mapping[str, Any], field: str, *, required: bool = True) -> float | None:
    """A finite float; numeric strings and booleans (1.0 / 0.0) are accepted."""
    value = raw(row, field, required=required)
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:
            raise invalid(field, "must be a finite number", value) from None
    elif isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return 1.0
        if lowered in _FALSE:
            return 0.0
        try:
            result = float(lowered)
        except ValueError:
            raise invalid(field, "is not a number", value) from None
    else:
        raise invalid(field, "is not a number", value)
    if not math.isfinite(result):
        raise invalid(field, "must be a finite number", value)
    return result


def timestamp_ms(row: Mapping[str, Any], field: str, *, required: bool = True) -> int | None:
    """UTC epoch milliseconds from an integer, a numeric string or an ISO-8601 date-time."""
    value = raw(row, field, required=required)
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid(field, "is not a timestamp", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise invalid(field, "is not a timestamp", value)
    if isinstance(value, datetime):
        return _datetime_ms(value)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isascii() and stripped.lstrip("-").isdigit():
            return int(stripped)
        try:
            return _datetime_ms(datetime.fromisoformat(stripped))
        except ValueError:
            raise invalid(field, "is not a timestamp", value) from None
    raise invalid(field, "is not a timestamp", value)


def features(row: Mapping[str, Any], field: str) -> dict[str, float]:
    """A map of finite floats (a JSON object)."""
    value = raw(row, field, required=False)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(field, "must be an object of numbers", value)
    parsed: dict[str, float] = {}
    for name, item in value.items():
        if not isinstance(name, str) or isinstance(item, bool) or not isinstance(item, int | float):
            raise invalid(field, "must be an object of numbers", {name: item})
        if not math.isfinite(item):
            raise invalid(field, "must hold finite numbers", {name: item})
        parsed[name] = float(item)
    return parsed


def numbers(row: Mapping[str, Any], field: str) -> list[float]:
    """A list of finite floats (a JSON array); absent is empty."""
    value = raw(row, field, required=False)
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise invalid(field, "must be an array of numbers", value)
    parsed: list[float] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise invalid(field, "must be an array of numbers", item)
        if not math.isfinite(item):
            raise invalid(field, "must hold finite numbers", item)
        parsed.append(float(item))
    return parsed


def strings(row: Mapping[str, Any], field: str) -> dict[str, str]:
    """A map of strings (a JSON object of name -> string); absent is empty."""
    value = raw(row, field, required=False)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(field, "must be an object of strings", value)
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise invalid(field, "must be an object of strings", {name: item})
    return dict(value)


def _datetime_ms(moment: datetime) -> int:
    # A date-time without a zone is taken as UTC, the contract's only time zone.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS
