"""Input rows (mappings from a file, a JSON batch, a pipeline) to OutcomeEvent tuples.

A row has `prediction_id` and `ground_truth`; `timestamp` (when the truth was observed; epoch
ms or ISO-8601, UTC) and `source` are optional and fall back to the publisher's defaults.
The checks are those of `schemas.validation.validate_outcome`, done inline on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from safeloop.schemas.outcome_batch import OutcomeTuple
from safeloop.schemas.validation import DEFAULT_MAX_FUTURE_SKEW_MS
from safeloop.services.publishing import fields
from safeloop.services.publishing.exceptions import InvalidRecordError


@dataclass(frozen=True, slots=True)
class OutcomeDefaults:
    """What a row that leaves out `timestamp` or `source` gets."""

    source: str
    # None: a row without a timestamp is rejected.
    timestamp_ms: int | None = None
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS


def outcome_tuple(row: Mapping[str, Any], defaults: OutcomeDefaults, now_ms: int) -> OutcomeTuple:
    """The outcome in `row`; `InvalidRecordError` names the field and the problem."""
    # The hot path of a label file: plain values that are obviously fine, in a few type
    # checks. Anything else takes `checked_outcome_tuple`, which accepts the same rows and says
    # precisely what is wrong with the others.
    get = row.get
    prediction_id = get("prediction_id")
    truth: Any = get("ground_truth")
    kind = type(truth)
    if (
        type(prediction_id) is str
        and prediction_id
        and not prediction_id.isspace()
        and (kind is str or kind is float or kind is int)
    ):
        try:
            value = float(truth)
        except (ValueError, OverflowError):
            value = math.nan
        stamp = get("timestamp")
        if stamp is None or stamp == "":
            timestamp = defaults.timestamp_ms
        elif type(stamp) is int:
            timestamp = stamp
        elif type(stamp) is str and stamp.isascii() and stamp.isdigit():
            timestamp = int(stamp)
        else:
            timestamp = None
        source = get("source")
        if (
            value - value == 0.0  # finite: inf - inf and nan - nan are nan
            and timestamp is not None
            and 0 <= timestamp <= now_ms + defaults.max_future_skew_ms
        ):
            if source is None or source == "":
                return (prediction_id, value, timestamp, defaults.source)
            if type(source) is str and not source.isspace():
                return (prediction_id, value, timestamp, source)
    return checked_outcome_tuple(row, defaults, now_ms)


def checked_outcome_tuple(
    row: Mapping[str, Any], defaults: OutcomeDefaults, now_ms: int
) -> OutcomeTuple:
    """`outcome_tuple` field by field: the same answer, and the reason when there is none."""
    prediction_id = fields.text(row, "prediction_id")
    ground_truth = fields.number(row, "ground_truth")
    timestamp = fields.timestamp_ms(row, "timestamp", required=defaults.timestamp_ms is None)
    if timestamp is None:
        timestamp = defaults.timestamp_ms
    source = fields.text(row, "source", required=False) or defaults.source
    assert prediction_id is not None and ground_truth is not None and timestamp is not None
    if timestamp < 0:
        raise fields.invalid("timestamp", "must not be before 1970", timestamp)
    if timestamp > now_ms + defaults.max_future_skew_ms:
        raise InvalidRecordError(
            "timestamp",
            "is in the future",
            f"timestamp={timestamp!r}: is {timestamp - now_ms} ms in the future "
            f"(allowed skew {defaults.max_future_skew_ms} ms)",
        )
    return (prediction_id, ground_truth, timestamp, source)


def prediction_id_of(row: object) -> str | None:
    """The row's prediction_id if it has a usable one (for the rejection report)."""
    if isinstance(row, Mapping):
        value = row.get("prediction_id")
        if isinstance(value, str):
            return value
    return None
