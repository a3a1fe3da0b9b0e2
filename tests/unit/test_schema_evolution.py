"""Old and future writers on the same topic: the reader resolves them against its own schema."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_writer

from safeloop.schemas.codec import MARKER, PREDICTION_CODEC, EventCodec, codec_for
from safeloop.schemas.events import (
    ControlCommand,
    DeadLetter,
    FeedbackRecord,
    OutcomeEvent,
    PredictionEvent,
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
    "safeloop.v1.PredictionEvent": {"d50575b1ffa03eec", "4e881a4468aa7b95"},
    "safeloop.v1.OutcomeEvent": {"05cf3ce1db821b49"},
    "safeloop.v1.FeedbackRecord": {"b232ef249e0b0d75"},
    "safeloop.v1.ControlCommand": {"2d9d6ea8264f7816"},
    "safeloop.v1.ReplicaStatus": {"a232a7be4082d7d2"},
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


def _v1() -> WriterSchema:
    entry = default_registry().get(
        SchemaRegistry().register(load_avsc(HISTORY_DIR / "prediction_event.v1.avsc")).fingerprint
    )
    assert entry is not None, "v1 of PredictionEvent must stay in the registry"
    return entry


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
