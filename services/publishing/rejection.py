"""Why one record was not published: the field, a short reason to group by, and the detail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safeloop.services.publishing.exceptions import InvalidRecordError


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused record: `index` in the input (0-based row or batch position)."""

    index: int
    prediction_id: str | None
    field: str
    # Short and value-free ("must be a finite number"), so that summaries can group by it.
    problem: str
    # The full message, with the offending value.
    detail: str

    @property
    def reason(self) -> str:
        """`field: problem`, the key rejects are grouped by."""
        return f"{self.field}: {self.problem}"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "prediction_id": self.prediction_id,
            "field": self.field,
            "reason": self.reason,
            "detail": self.detail,
        }


def rejection_of(error: InvalidRecordError, index: int, prediction_id: str | None) -> Rejection:
    """The `Rejection` of record `index` that failed with `error`."""
    return Rejection(index, prediction_id, error.field, error.problem, error.detail)
