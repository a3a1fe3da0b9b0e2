"""Old and future writers on the same topic: the reader resolves them against its own schema."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from safeloop.schemas.codec import MARKER, PREDICTION_CODEC, EventCodec, codec_for
from safeloop.schemas.events import (
    ControlCommand,
    DeadLetter,
    ErrorKind,
    FeedbackRecord,
    OutcomeEvent,
    PredictionEvent,
    ReplicaState,
    ReplicaStatus,
    RetrainingDecision,
    Route,
)
from safeloop.schemas.exceptions import DecodeError, DecodeReason
from safeloop.schemas.registry import (
    HISTORY_DIR,
    SchemaRegistry,
    WriterSchema,
    default_registry,
    load_avsc,
)

# Every fingerprint ever published. Changing a schema in place fails here: copy the old
# .avsc into schemas/avro/history/ first, then add the new fingerprint below.
PUBLISHED = {
    "safeloop.v1.PredictionEvent": {
        "d50575b1ffa03eec",
        "4e881a4468aa7b95",
        "a5ff3ef427d5ade5",
        "817af437e54c34da",
        "3ea96dbda2447fbe",
    },
    "safeloop.v1.OutcomeEvent": {"05cf3ce1db821b49"},
    "safeloop.v1.FeedbackRecord": {
        "b232ef249e0b0d75",
        "3b8960a1142da605",
        "8e47a16db359373d",
    },
    "safeloop.v1.ControlCommand": {"2d9d6ea8264f7816", "ae0ca36d9561048d"},
    "safeloop.v1.ReplicaStatus": {"a232a7be4082d7d2", "bc2dbe1ee4b75ff8"},
    "safeloop.v1.RetrainingDecision": {"03d4efc7d250385e"},
    "safeloop.v1.DeadLetter": {"53f738fc1086f2cd"},
}
EVENT_TYPES = [
    PredictionEvent,
    OutcomeEvent,
    FeedbackRecord,
    ControlCommand,
    ReplicaStatus,
    RetrainingDecision,
    DeadLetter,
]

V1_RECORD: dict[str, Any] = {
    "prediction_id": "p-legacy",
    "model_name": "fraud",
    "model_version": "2023.11.0",
    "timestamp": 1_690_000_000_000,
    "features": {"amount": 10.0},
    "prediction": 0.4,
    "confidence": 0.6,
    "latency_ms": 2.5,
}


def _write(entry: WriterSchema, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(MARKER + entry.fingerprint)
    schemaless_writer(out, entry.parsed, record)
    return out.getvalue()


def _history(file_name: str) -> WriterSchema:
    entry = default_registry().get(
        SchemaRegistry().register(load_avsc(HISTORY_DIR / file_name)).fingerprint
    )
    assert entry is not None, f"{file_name} must stay in the registry"
    return entry


def _v1() -> WriterSchema:
    return _history("prediction_event.v1.avsc")


def test_v1_prediction_is_read_with_current_defaults() -> None:
    v1 = _v1()
    assert v1.fingerprint != PREDICTION_CODEC.fingerprint
    event = PREDICTION_CODEC.decode(_write(v1, V1_RECORD))
    assert event == PredictionEvent(
        **V1_RECORD,
        route=Route.PRODUCTION,
        replica_id="",
        routing_key="",
        routing_hash_version=0,
        error=None,
    )
    assert type(event.timestamp) is int


def test_v1_and_current_bytes_mix_in_one_batch() -> None:
    old = _write(_v1(), V1_RECORD)
    new = PREDICTION_CODEC.encode(PREDICTION_CODEC.decode(old))
    assert PREDICTION_CODEC.decode_many([old, new, old]) == [PREDICTION_CODEC.decode(old)] * 3


def test_future_writer_with_an_extra_field_is_read_by_the_current_reader() -> None:
    future = dict(PREDICTION_CODEC.schema.source)
    future["fields"] = [
        *future["fields"],
        {"name": "explanation", "type": {"type": "map", "values": "double"}, "default": {}},
    ]
    registry = SchemaRegistry()
    registry.register(PREDICTION_CODEC.schema.source, current=True)
    entry = registry.register(future)
    current = PREDICTION_CODEC.decode(_write(_v1(), V1_RECORD))
    record = {name: getattr(current, name) for name in PredictionEvent.__dataclass_fields__}
    data = _write(entry, {**record, "explanation": {"amount": 0.7}})
    assert EventCodec(PredictionEvent, registry).decode(data) == current


def test_a_reader_rejects_an_unknown_fingerprint() -> None:
    future = dict(PREDICTION_CODEC.schema.source, doc="changed docs keep the fingerprint")
    assert SchemaRegistry().register(future).fingerprint == PREDICTION_CODEC.fingerprint
    renamed = dict(future)
    renamed["fields"] = [*future["fields"], {"name": "extra", "type": "int", "default": 0}]
    entry = SchemaRegistry().register(renamed)
    record = {**V1_RECORD, "route": "production", "replica_id": "", "routing_key": ""}
    data = _write(entry, {**record, "routing_hash_version": 0, "error": None, "extra": 1})
    with pytest.raises(DecodeError) as info:
        PREDICTION_CODEC.decode(data)
    assert info.value.reason == DecodeReason.UNKNOWN_FINGERPRINT
    assert entry.fingerprint.hex() in str(info.value)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_published_fingerprint_stays_readable(event_type: type[Any]) -> None:
    codec = codec_for(event_type)
    known = {entry.fingerprint.hex() for entry in default_registry().versions(codec.schema.name)}
    assert codec.fingerprint.hex() in PUBLISHED[codec.schema.name], (
        f"{codec.schema.name} changed: keep the old .avsc in schemas/avro/history/ "
        f"and add {codec.fingerprint.hex()} to PUBLISHED"
    )
    assert PUBLISHED[codec.schema.name] <= known


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_fields_added_since_an_old_version_have_defaults(event_type: type[Any]) -> None:
    # Without a default, bytes from the old writer could not be read by the current reader.
    codec = codec_for(event_type)
    for old in default_registry().versions(codec.schema.name):
        old_names = {f["name"] for f in old.source["fields"]}
        for field in codec.schema.source["fields"]:
            if field["name"] not in old_names:
                assert "default" in field, f"{field['name']} is new since {old.fingerprint.hex()}"


def test_a_v2_error_without_a_kind_is_read_as_a_server_error() -> None:
    # v2 writers (before error_kind) published every failure alike: the guard keeps counting
    # them against the model, as it did when they were written.
    v2 = _history("prediction_event.v2.avsc")
    record = {
        **V1_RECORD,
        "prediction": None,
        "route": "canary",
        "replica_id": "r",
        "routing_key": "k",
        "routing_hash_version": 1,
        "error": "model churn version v2 failed: boom",
    }
    event = PREDICTION_CODEC.decode(_write(v2, record))
    assert event.error_kind is None
    assert event.server_error and not event.client_error


def test_current_error_kinds_round_trip_as_enums() -> None:
    event = PREDICTION_CODEC.decode(_write(_v1(), V1_RECORD))
    for kind in ErrorKind:
        failed = PREDICTION_CODEC.decode(
            PREDICTION_CODEC.encode(
                PredictionEvent(
                    **{
                        **{n: getattr(event, n) for n in PredictionEvent.__dataclass_fields__},
                        "error": "x",
                        "error_kind": kind,
                    }
                )
            )
        )
        assert failed.error_kind is kind
        assert failed.client_error is (kind is ErrorKind.CLIENT)


def test_a_v1_replica_status_is_read_with_no_loaded_versions() -> None:
    v1 = _history("replica_status.v1.avsc")
    record = {
        "replica_id": "old",
        "timestamp": 1_700_000_000_000,
        "state": "ready",
        "started_at": 1_699_999_000_000,
        "config_versions": {"churn": 3},
        "last_command_id": None,
        "refused_count": 0,
        "last_refusal": None,
    }
    status = codec_for(ReplicaStatus).decode(_write(v1, record))
    assert status.state is ReplicaState.READY
    assert status.config_versions == {"churn": 3}
    assert status.loaded_versions == {}


def test_a_v1_control_command_is_read_without_an_injection() -> None:
    v1 = _history("control_command.v1.avsc")
    record = {
        "command_id": "c1",
        "model_name": "churn",
        "kind": "set_canary",
        "sequence": 4,
        "issued_at": 1_700_000_000_000,
        "issuer": "ops",
        "reason": "",
        "config": {
            "production_version": "v1",
            "canary_version": "v2",
            "canary_basis_points": 500,
            "canary_enabled": True,
            "shadow_version": None,
            "shadow_enabled": False,
            "kill_switch": False,
            "fallback_version": None,
            "flags": {},
        },
        "key_id": "k",
        "signature": "s",
        "details": {},
    }
    command = codec_for(ControlCommand).decode(_write(v1, record))
    assert command.config.canary_basis_points == 500
    assert command.config.injection is None


def test_a_v3_prediction_from_an_old_producer_reads_with_no_class_probabilities() -> None:
    # Producers built before multi-class support keep publishing v3 bytes on the same topic.
    v3 = _history("prediction_event.v3.avsc")
    assert v3.fingerprint != PREDICTION_CODEC.fingerprint
    record = {
        **V1_RECORD,
        "route": "canary",
        "replica_id": "r",
        "routing_key": "k",
        "routing_hash_version": 1,
        "error": None,
        "error_kind": None,
    }
    event = PREDICTION_CODEC.decode(_write(v3, record))
    assert event.class_probabilities == []
    assert event.prediction == 0.4 and event.route is Route.CANARY


def test_a_v1_feedback_record_reads_with_no_class_probabilities() -> None:
    v1 = _history("feedback_record.v1.avsc")
    codec = codec_for(FeedbackRecord)
    assert v1.fingerprint != codec.fingerprint
    record = {
        "prediction_id": "p",
        "model_name": "churn",
        "model_version": "v1",
        "route": "production",
        "replica_id": "r",
        "features": {"x": 1.0},
        "prediction": 0.7,
        "confidence": 0.7,
        "prediction_timestamp": 1_700_000_000_000,
        "status": "joined",
        "ground_truth": 1.0,
        "outcome_timestamp": 1_700_000_000_005,
        "label_delay_ms": 5,
        "outcome_source": "labels",
        "emitted_at": 1_700_000_000_006,
    }
    feedback = codec.decode(_write(v1, record))
    assert feedback.class_probabilities == []
    assert feedback.ground_truth == 1.0


def test_class_probabilities_round_trip() -> None:
    event = PREDICTION_CODEC.decode(_write(_v1(), V1_RECORD))
    fields = {n: getattr(event, n) for n in PredictionEvent.__dataclass_fields__}
    multi = PredictionEvent(**{**fields, "prediction": 2.0, "class_probabilities": [0.1, 0.2, 0.7]})
    data = PREDICTION_CODEC.encode(multi)
    assert PREDICTION_CODEC.decode(data).class_probabilities == [0.1, 0.2, 0.7]


def test_a_v4_prediction_from_an_old_producer_reads_with_no_segments() -> None:
    # Producers built before segments keep publishing v4 bytes on the same topic.
    v4 = _history("prediction_event.v4.avsc")
    assert v4.fingerprint != PREDICTION_CODEC.fingerprint
    record = {
        **V1_RECORD,
        "route": "canary",
        "replica_id": "r",
        "routing_key": "k",
        "routing_hash_version": 1,
        "error": None,
        "error_kind": None,
        "class_probabilities": [],
    }
    event = PREDICTION_CODEC.decode(_write(v4, record))
    assert event.segments == {}
    assert event.route is Route.CANARY


def test_a_v2_feedback_record_reads_with_no_segments() -> None:
    v2 = _history("feedback_record.v2.avsc")
    codec = codec_for(FeedbackRecord)
    assert v2.fingerprint != codec.fingerprint
    record = {
        "prediction_id": "p",
        "model_name": "churn",
        "model_version": "v1",
        "route": "production",
        "replica_id": "r",
        "features": {"x": 1.0},
        "prediction": 0.7,
        "confidence": 0.7,
        "prediction_timestamp": 1_700_000_000_000,
        "status": "joined",
        "ground_truth": 1.0,
        "outcome_timestamp": 1_700_000_000_005,
        "label_delay_ms": 5,
        "outcome_source": "labels",
        "emitted_at": 1_700_000_000_006,
        "class_probabilities": [],
    }
    feedback = codec.decode(_write(v2, record))
    assert feedback.segments == {}
    assert feedback.ground_truth == 1.0


def test_segments_round_trip_and_old_readers_ignore_them() -> None:
    event = PREDICTION_CODEC.decode(_write(_v1(), V1_RECORD))
    fields = {n: getattr(event, n) for n in PredictionEvent.__dataclass_fields__}
    segmented = PredictionEvent(**{**fields, "segments": {"country": "BR", "device": "ios"}})
    data = PREDICTION_CODEC.encode(segmented)
    assert PREDICTION_CODEC.decode(data).segments == {"country": "BR", "device": "ios"}
    # A consumer still on v4 resolves the new bytes by skipping the field it does not know.
    body = io.BytesIO(data[len(MARKER) + 8 :])
    v4 = _history("prediction_event.v4.avsc").parsed
    old = schemaless_reader(body, PREDICTION_CODEC.schema.parsed, v4)
    assert isinstance(old, dict) and "segments" not in old
    assert old["prediction_id"] == "p-legacy"
