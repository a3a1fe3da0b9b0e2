"""Outcome and prediction rows from loose input: what is accepted, and each rejection's reason."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from safeloop.schemas.events import OutcomeEvent, Route
from safeloop.schemas.exceptions import DecodeError
from safeloop.schemas.validation import validate_outcome
from safeloop.services.publishing.exceptions import InvalidRecordError
from safeloop.services.publishing.outcome_rows import (
    OutcomeDefaults,
    checked_outcome_tuple,
    outcome_tuple,
)
from safeloop.services.publishing.prediction_rows import prediction_event

NOW = 1_764_460_000_000
DEFAULTS = OutcomeDefaults(source="labels", timestamp_ms=NOW - 1000)


def reason(row: dict[str, Any]) -> str:
    with pytest.raises(InvalidRecordError) as caught:
        outcome_tuple(row, DEFAULTS, NOW)
    return f"{caught.value.field}: {caught.value.problem}"


def test_csv_text_values_become_typed_outcomes_with_defaults() -> None:
    assert outcome_tuple({"prediction_id": "p1", "ground_truth": "1"}, DEFAULTS, NOW) == (
        "p1",
        1.0,
        NOW - 1000,
        "labels",
    )
    row = {
        "prediction_id": "p2",
        "ground_truth": "0.25",
        "timestamp": "1764459000000",
        "source": "crm",
    }
    assert outcome_tuple(row, DEFAULTS, NOW) == ("p2", 0.25, 1_764_459_000_000, "crm")


def test_booleans_iso_timestamps_and_naive_times_as_utc() -> None:
    row = {"prediction_id": "p", "ground_truth": True, "timestamp": "2025-11-29T23:00:00.123Z"}
    assert outcome_tuple(row, DEFAULTS, NOW)[1:3] == (1.0, 1_764_457_200_123)
    naive = {"prediction_id": "p", "ground_truth": "false", "timestamp": "2025-11-29T23:00:00"}
    assert outcome_tuple(naive, DEFAULTS, NOW)[1:3] == (0.0, 1_764_457_200_000)
    zoned = {"prediction_id": "p", "ground_truth": 2, "timestamp": "2025-11-29T16:00:00-07:00"}
    assert outcome_tuple(zoned, DEFAULTS, NOW)[1:3] == (2.0, 1_764_457_200_000)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"ground_truth": 1}, "prediction_id: is missing"),
        ({"prediction_id": "", "ground_truth": 1}, "prediction_id: is missing"),
        ({"prediction_id": "  ", "ground_truth": 1}, "prediction_id: must not be empty"),
        ({"prediction_id": 17, "ground_truth": 1}, "prediction_id: must be a string"),
        ({"prediction_id": "p"}, "ground_truth: is missing"),
        ({"prediction_id": "p", "ground_truth": "nan"}, "ground_truth: must be a finite number"),
        ({"prediction_id": "p", "ground_truth": math.inf}, "ground_truth: must be a finite number"),
        ({"prediction_id": "p", "ground_truth": "yes please"}, "ground_truth: is not a number"),
        ({"prediction_id": "p", "ground_truth": [1]}, "ground_truth: is not a number"),
        (
            {"prediction_id": "p", "ground_truth": 1, "timestamp": "soon"},
            "timestamp: is not a timestamp",
        ),
        (
            {"prediction_id": "p", "ground_truth": 1, "timestamp": -5},
            "timestamp: must not be before 1970",
        ),
        (
            {"prediction_id": "p", "ground_truth": 1, "timestamp": NOW + 3_600_000},
            "timestamp: is in the future",
        ),
        ({"prediction_id": "p", "ground_truth": 1, "source": 3}, "source: must be a string"),
    ],
)
def test_each_bad_row_is_rejected_with_its_field_and_problem(
    row: dict[str, Any], expected: str
) -> None:
    assert reason(row) == expected


def test_rejection_detail_names_the_value() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        outcome_tuple({"prediction_id": "p", "ground_truth": "NaN"}, DEFAULTS, NOW)
    assert caught.value.detail == "ground_truth='NaN': must be a finite number"


def test_a_row_without_timestamp_is_rejected_when_there_is_no_default() -> None:
    with pytest.raises(InvalidRecordError, match="timestamp is missing"):
        outcome_tuple({"prediction_id": "p", "ground_truth": 1}, OutcomeDefaults("s"), NOW)


@pytest.mark.parametrize("truth", [0.0, 1.0, -3.5, 1e300])
@pytest.mark.parametrize("stamp", [0, NOW, NOW + 299_000])
def test_what_the_inline_checks_accept_schema_validation_accepts(truth: float, stamp: int) -> None:
    row = outcome_tuple(
        {"prediction_id": "p", "ground_truth": truth, "timestamp": stamp}, DEFAULTS, NOW
    )
    validate_outcome(OutcomeEvent(*row), NOW)


def test_schema_validation_refuses_what_the_inline_checks_refuse() -> None:
    for truth, stamp in [(math.nan, NOW), (1.0, -1), (1.0, NOW + 400_000)]:
        with pytest.raises(DecodeError):
            validate_outcome(OutcomeEvent("p", truth, stamp, "s"), NOW)
        with pytest.raises(InvalidRecordError):
            outcome_tuple(
                {"prediction_id": "p", "ground_truth": truth, "timestamp": stamp}, DEFAULTS, NOW
            )


def test_a_prediction_row_gets_an_id_defaults_and_is_validated() -> None:
    event = prediction_event(
        {"model_name": "churn", "model_version": "v1", "prediction": 0.7, "features": {"age": 3}},
        replica_id="ingest",
        now_ms=NOW,
    )
    assert len(event.prediction_id) == 32
    assert (event.timestamp, event.route, event.replica_id, event.routing_key) == (
        NOW,
        Route.PRODUCTION,
        "ingest",
        event.prediction_id,
    )
    assert event.features == {"age": 3.0}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"model_version": "v1", "prediction": 1}, "model_name: is missing"),
        ({"model_name": "m", "model_version": "v1"}, "prediction: is missing"),
        (
            {"model_name": "m", "model_version": "v1", "prediction": 1, "route": "blue"},
            "route: must be production, canary or shadow",
        ),
        (
            {"model_name": "m", "model_version": "v1", "prediction": 1, "confidence": 2},
            "confidence: must be within [0, 1]",
        ),
        (
            {"model_name": "m", "model_version": "v1", "prediction": 1, "features": {"a": "x"}},
            "features: must be an object of numbers",
        ),
        (
            {"model_name": "m", "model_version": "v1", "prediction": 1, "latency_ms": -1},
            "latency_ms: must not be negative",
        ),
    ],
)
def test_each_bad_prediction_is_rejected_with_its_field_and_problem(
    row: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        prediction_event(row, replica_id="r", now_ms=NOW)
    assert f"{caught.value.field}: {caught.value.problem}" == expected


def test_a_failed_request_may_carry_no_prediction() -> None:
    event = prediction_event(
        {"model_name": "m", "model_version": "v1", "error": "timeout"}, replica_id="r", now_ms=NOW
    )
    assert (event.prediction, event.error) == (None, "timeout")


def test_the_fast_path_and_the_checked_path_agree_on_every_row() -> None:
    rng = random.Random(3)
    values: list[Any] = [None, "", " ", "1", " 0.5 ", "nan", "inf", "-inf", "true", "No", "x",
                         "1_0", "²", "0012", "-5", 1, 0, -3, 1.5, math.nan, math.inf, True, [1],
                         str(NOW), NOW, NOW + 10**9, 10**400, "2025-11-29T23:00:00Z",
                         1.7e12]  # fmt: skip
    for _ in range(5000):
        row = {
            name: rng.choice(values)
            for name in ("prediction_id", "ground_truth", "timestamp", "source")
            if rng.random() < 0.9
        }
        if rng.random() < 0.5:
            row["prediction_id"] = rng.choice(["p", " p ", "p-1"])
        fast = _outcome_or_reason(outcome_tuple, row)
        checked = _outcome_or_reason(checked_outcome_tuple, row)
        assert fast == checked, row


def _outcome_or_reason(parse: Any, row: dict[str, Any]) -> object:
    try:
        return parse(row, DEFAULTS, NOW)
    except InvalidRecordError as exc:
        return exc.detail


def test_a_multiclass_prediction_row_carries_its_class_probabilities() -> None:
    row = {"model_name": "species", "model_version": "v1", "prediction": 2}
    event = prediction_event(
        {**row, "class_probabilities": [0.1, 0.2, 0.7]}, replica_id="ingest", now_ms=NOW
    )
    assert event.class_probabilities == [0.1, 0.2, 0.7]
    assert prediction_event(row, replica_id="ingest", now_ms=NOW).class_probabilities == []


@pytest.mark.parametrize(
    ("probabilities", "expected"),
    [
        ([0.5, 0.6], "class_probabilities: must sum to 1"),
        ([1.0], "class_probabilities: needs at least two classes"),
        ([1.5, -0.5], "class_probabilities: must hold probabilities within [0, 1]"),
        ("0.5,0.5", "class_probabilities: must be an array of numbers"),
        ([0.5, None], "class_probabilities: must be an array of numbers"),
    ],
)
def test_class_probabilities_that_are_not_probabilities_are_rejected(
    probabilities: Any, expected: str
) -> None:
    row = {"model_name": "m", "model_version": "v1", "prediction": 0}
    with pytest.raises(InvalidRecordError) as caught:
        prediction_event({**row, "class_probabilities": probabilities}, replica_id="i", now_ms=NOW)
    assert f"{caught.value.field}: {caught.value.problem}" == expected
