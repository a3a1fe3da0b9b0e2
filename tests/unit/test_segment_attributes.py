"""Segment attributes end to end in memory: declared keys, request attributes, events, rows."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from _stream_events import outcome, prediction

from safeloop.schemas.events import PredictionEvent
from safeloop.schemas.exceptions import DecodeError
from safeloop.schemas.tables import FEEDBACK, PREDICTIONS
from safeloop.schemas.validation import validate_prediction
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.models.linear import LogisticModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.task import ModelTask
from safeloop.services.publishing.exceptions import InvalidRecordError
from safeloop.services.publishing.prediction_rows import prediction_event
from safeloop.services.serving.catalog import ModelCatalog
from safeloop.services.serving.exceptions import InvalidRequestError
from safeloop.services.serving.predictor import Predictor
from safeloop.services.serving.segments import request_segments
from safeloop.services.serving.sink import SinkStats
from safeloop.services.serving.validation import parse_request
from safeloop.streams.join import JoinWindow
from safeloop.streams.state import EarlyOutcome, InMemoryStateStore, PendingPrediction
from safeloop.streams.windows import JoinWindows

FEATURES = ("age", "income")
ROW = {"age": 1.0, "income": 2.0}
NOW = 1_764_460_000_000


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []
        self._lock = threading.Lock()

    def publish(self, event: PredictionEvent) -> None:
        with self._lock:
            self.events.append(event)

    def stats(self) -> SinkStats:
        return SinkStats(accepted=len(self.events))


def metadata(segment_keys: tuple[str, ...] = ()) -> ModelMetadata:
    rng = np.random.default_rng(0)
    return ModelMetadata(
        name="churn",
        version="v1",
        task=ModelTask.CLASSIFICATION,
        kind="logistic",
        feature_names=FEATURES,
        created_at_ms=0,
        training_rows=100,
        baseline=ModelBaseline.from_training_data({f: rng.normal(size=100) for f in FEATURES}),
        primary_metric="accuracy",
        metrics={"accuracy": 0.8},
        segment_keys=segment_keys,
    )


def serving(segment_keys: tuple[str, ...]) -> tuple[Predictor, CollectingSink]:
    catalog = ModelCatalog()
    model = LogisticModel("v1", FEATURES, np.array([1.0, 0.5]), 0.0)
    catalog.add(LoadedModel(model, metadata(segment_keys)))
    sink = CollectingSink()
    predictor = Predictor(catalog, sink, "replica-test")
    predictor.mark_ready()
    return predictor, sink


def test_segments_come_from_attributes_then_features_and_skip_what_is_missing() -> None:
    keys = ("country", "age", "tenant")
    assert request_segments(keys, {"country": "BR", "other": "x"}, {"age": 3.0}) == {
        "country": "BR",
        "age": "3",
    }
    # An attribute wins over a feature of the same name; non-numeric features are not used.
    assert request_segments(("age",), {"age": "adult"}, {"age": 3.0}) == {"age": "adult"}
    assert request_segments(("age",), {}, {"age": "old"}) == {}
    assert request_segments((), {"country": "BR"}, ROW) == {}


def test_the_replica_publishes_only_the_declared_segments() -> None:
    predictor, sink = serving(("country", "device"))
    attributes = {"country": "BR", "device": "ios", "email": "not-kept@example.com"}
    predictor.predict("churn", "user-1", ROW, attributes)
    [event] = sink.events
    assert event.segments == {"country": "BR", "device": "ios"}


def test_a_failed_request_carries_its_segments_too() -> None:
    # Error rates are judged per segment, so the failures must know theirs.
    predictor, sink = serving(("country",))
    with pytest.raises(InvalidRequestError):
        predictor.predict("churn", "user-1", {"age": 1.0}, {"country": "BR"})
    [event] = sink.events
    assert event.error is not None
    assert event.segments == {"country": "BR"}


def test_a_model_without_segment_keys_publishes_no_segments() -> None:
    predictor, sink = serving(())
    predictor.predict("churn", "user-1", ROW, {"country": "BR"})
    assert sink.events[0].segments == {}


def test_request_attributes_are_parsed_and_checked() -> None:
    body: dict[str, Any] = {
        "routing_key": "u",
        "features": ROW,
        "attributes": {"country": "BR", "premium": True, "tier": 2},
    }
    assert parse_request(body).attributes == {"country": "BR", "premium": "true", "tier": "2"}
    assert parse_request({"routing_key": "u", "features": ROW}).attributes == {}
    for bad in ({"country": None}, {"country": ""}, {"country": "x" * 200}, ["BR"]):
        with pytest.raises(InvalidRequestError, match="attributes"):
            parse_request({**body, "attributes": bad})


def test_metadata_keeps_segment_keys_and_reads_old_files_without_them() -> None:
    declared = metadata(("country", "device"))
    assert ModelMetadata.from_json(declared.to_json()).segment_keys == ("country", "device")
    plain = metadata().to_json()
    assert "segment_keys" not in plain
    assert ModelMetadata.from_json(plain).segment_keys == ()
    for bad in ("country", ["country", "country"], [""]):
        with pytest.raises(ValueError, match="segment_keys"):
            ModelMetadata.from_json({**plain, "segment_keys": bad})


def test_the_join_copies_segments_into_feedback_and_both_rows_carry_them() -> None:
    join = JoinWindow(
        InMemoryStateStore[PendingPrediction](),
        InMemoryStateStore[EarlyOutcome](),
        JoinWindows(default_window_ms=10_000, early_outcome_wait_ms=3_600_000),
        lambda: 1_500,
    )
    event = replace(prediction(), segments={"country": "BR"})
    join.on_prediction(0, event)
    [record] = join.on_outcome(0, outcome()).feedback
    assert record.segments == {"country": "BR"}
    [feedback_row] = FEEDBACK.rows([record])
    [prediction_row] = PREDICTIONS.rows([event])
    assert feedback_row[FEEDBACK.columns.index("segments")] == {"country": "BR"}
    assert prediction_row[PREDICTIONS.columns.index("segments")] == {"country": "BR"}


def test_published_rows_carry_segments_and_bad_ones_are_refused() -> None:
    row = {"model_name": "churn", "model_version": "v1", "prediction": 0.4}
    event = prediction_event({**row, "segments": {"tenant": "acme"}}, replica_id="i", now_ms=NOW)
    assert event.segments == {"tenant": "acme"}
    with pytest.raises(InvalidRecordError, match="segments"):
        prediction_event({**row, "segments": {"tenant": 3}}, replica_id="i", now_ms=NOW)
    with pytest.raises(InvalidRecordError, match="segments"):
        prediction_event({**row, "segments": {"tenant": ""}}, replica_id="i", now_ms=NOW)


def test_validation_bounds_segments() -> None:
    event = replace(prediction(), segments={f"k{i}": "v" for i in range(17)})
    with pytest.raises(DecodeError, match="more than 16 keys"):
        validate_prediction(event, NOW)
    validate_prediction(replace(prediction(), segments={"country": "BR"}), NOW)
