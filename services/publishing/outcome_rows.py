"""Input rows (mappings from a file, a JSON batch, a pipeline) to OutcomeEvent tuples.

A row has `prediction_id` and `ground_truth`; `timestamp` (when the truth was observed; epoch
ms or ISO-8601, UTC) and `source` are optional and fall back to the publisher's defaults.
The checks are those of `schemas.validation.validate_outcome`, done inline on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from safeloop.schemas.outcome_batch import OutcomeTuple
from safeloop.schemas.validation import DEFAULT_MAX_FUTURE_SKEW_MS
from safeloop.services.publishing import fields
from safeloop.services.publishing.exceptions import InvalidRecordError

# The columns of an outcome row, in the order of `OutcomeCells`.
OUTCOME_COLUMNS = ("prediction_id", "ground_truth", "timestamp", "source")
# A row's values in that order, None where the input has no such column (files read by column).
OutcomeCells = tuple[Any, Any, Any, Any]


@dataclass(frozen=True, slots=True)
class OutcomeDefaults:
    """What a row that leaves out `timestamp` or `source` gets."""

    source: str
    # None: a row without a timestamp is rejected.
    timestamp_ms: int | None = None
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS


def outcome_tuple(row: Mapping[str, Any], defaults: OutcomeDefaults, now_ms: int) -> OutcomeTuple:
    """The outcome in `row`; `InvalidRecordError` names the field and the problem."""
    get = row.get
    plain = outcome_from_cells(
        (get("prediction_id"), get("ground_truth"), get("timestamp"), get("source")),
        defaults,
        now_ms,
    )
    return plain if plain is not None else checked_outcome_tuple(row, defaults, now_ms)


def outcome_from_cells(
    cells: OutcomeCells, defaults: OutcomeDefaults, now_ms: int
) -> OutcomeTuple | None:
    """The hot path of a label file: the outcome if its values are plainly fine, else None.

    A few type checks instead of field-by-field parsing; None sends the row to
    `checked_outcome_tuple`, which accepts the same rows and says what is wrong with the others.
    """
    prediction_id, truth, stamp, source = cells
    kind = type(truth)
    if not (
        type(prediction_id) is str
        and prediction_id
        and not prediction_id.isspace()
        and (kind is str or kind is float or kind is int)
    ):
        return None
    try:
        value = float(truth)
    except (ValueError, OverflowError):
        return None
    if stamp is None or stamp == "":
        timestamp = defaults.timestamp_ms
    elif type(stamp) is int:
        timestamp = stamp
    elif type(stamp) is str and stamp.isascii() and stamp.isdigit():
        timestamp = int(stamp)
    else:
        return None
    if (
        value - value == 0.0  # finite: inf - inf and nan - nan are nan
        and timestamp is not None
        and 0 <= timestamp <= now_ms + defaults.max_future_skew_ms
    ):
        if source is None or source == "":
            return (prediction_id, value, timestamp, defaults.source)
        if type(source) is str and not source.isspace():
            return (prediction_id, value, timestamp, source)
    return None


def cells_as_row(cells: OutcomeCells) -> dict[str, Any]:
    """A row of cells as the mapping `checked_outcome_tuple` reads (None: absent)."""
    return {
        name: value for name, value in zip(OUTCOME_COLUMNS, cells, strict=True) if value is not None
    }


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
    if type(row) is tuple:
        return row[0] if row and isinstance(row[0], str) else None
    if isinstance(row, Mapping):
        value = row.get("prediction_id")
        if isinstance(value, str):
            return value
    return None
