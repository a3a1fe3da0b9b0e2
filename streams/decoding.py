"""The join's inputs: a prediction or an outcome decoded and validated.

The record's key is not checked: where a record belongs comes from its body's prediction_id
(`streams/routing.py`), so unkeyed records and records under another key are joined too."""

from __future__ import annotations

from safeloop.infra.kafka.dead_letters import ConsumedRecord, decode_or_reject
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import OutcomeEvent, PredictionEvent
from safeloop.schemas.validation import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    validate_outcome,
    validate_prediction,
)


def decode_prediction(
    record: ConsumedRecord, now_ms: int, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
) -> PredictionEvent:
    """The valid prediction in `record`, or RecordRejectedError with a stable reason."""
    return decode_or_reject(
        record,
        PREDICTION_CODEC,
        validate=lambda event: validate_prediction(event, now_ms, max_future_skew_ms),
    )


def decode_outcome(
    record: ConsumedRecord, now_ms: int, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
) -> OutcomeEvent:
    """The valid outcome in `record`, or RecordRejectedError with a stable reason."""
    return decode_or_reject(
        record,
        OUTCOME_CODEC,
        validate=lambda event: validate_outcome(event, now_ms, max_future_skew_ms),
    )
