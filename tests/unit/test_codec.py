"""Round trips, wire format and error translation of the Avro single-object codec."""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import random
from enum import StrEnum
from typing import Any, get_type_hints

import pytest
from fastavro import schemaless_writer

from safeloop.schemas.codec import (
    CONTROL_CODEC,
    DEAD_LETTER_CODEC,
    FEEDBACK_CODEC,
    HEADER_SIZE,
    MARKER,
    OUTCOME_CODEC,
    PREDICTION_CODEC,
    REPLICA_STATUS_CODEC,
    RETRAINING_CODEC,
    EventCodec,
    codec_for,
    fingerprint_of,
)
from safeloop.schemas.events import (
    CommandKind,
    ControlCommand,
    DeadLetter,
    FeedbackRecord,
    FeedbackStatus,
    ModelConfig,
    OutcomeEvent,
    PredictionEvent,
    ReplicaState,
    ReplicaStatus,
    RetrainingDecision,
    Route,
    Urgency,
)
from safeloop.schemas.exceptions import DecodeError, DecodeReason, EncodeError, SchemaError
from safeloop.schemas.records import RecordMapper
from safeloop.schemas.registry import SchemaRegistry, default_registry, fingerprint

BIG = 2**63 - 1
T0 = 1_700_000_000_123


def prediction(**changes: Any) -> PredictionEvent:
    base = PredictionEvent(
        prediction_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        model_name="fraud",
        model_version="2024.06.1",
        timestamp=T0,
        features={"amount": 12.5, "age_days": 3.0},
        prediction=0.25,
        confidence=0.8,
        latency_ms=4.2,
        route=Route.CANARY,
        replica_id="replica-1",
        routing_key="user-42",
        routing_hash_version=1,
    )
    return dataclasses.replace(base, **changes)


EVENTS: list[Any] = [
    prediction(),
    prediction(prediction=None, confidence=None, error="model timed out", features={}),
    prediction(
        prediction_id="идентификатор-🚀",
        model_name="模型",
        features={"ß-feature ✓": -0.0, "tiny": 5e-324, "huge": 1.7976931348623157e308},
        route=Route.SHADOW,
        routing_hash_version=2**31 - 1,
        timestamp=BIG,
    ),
    OutcomeEvent(prediction_id="p-1", ground_truth=1.0, timestamp=T0, source="chargebacks"),
    OutcomeEvent(prediction_id="p-✓", ground_truth=-1e300, timestamp=0, source=""),
    FeedbackRecord(
        prediction_id="p-1",
        model_name="fraud",
        model_version="v2",
        route=Route.PRODUCTION,
        replica_id="replica-2",
        features={"amount": 1.0},
        prediction=0.9,
        confidence=0.95,
        prediction_timestamp=T0,
        status=FeedbackStatus.JOINED,
        ground_truth=1.0,
        outcome_timestamp=T0 + 86_400_000,
        label_delay_ms=86_400_000,
        outcome_source="chargebacks",
        emitted_at=T0 + 86_400_500,
    ),
    FeedbackRecord(
        prediction_id="p-2",
        model_name="fraud",
        model_version="v2",
        route=Route.SHADOW,
        replica_id="replica-2",
        features={},
        prediction=None,
        confidence=None,
        prediction_timestamp=T0,
        status=FeedbackStatus.EXPIRED,
        ground_truth=None,
        outcome_timestamp=None,
        label_delay_ms=None,
        outcome_source=None,
        emitted_at=T0,
    ),
    ControlCommand(
        command_id="cmd-1",
        model_name="fraud",
        kind=CommandKind.SET_CANARY,
        sequence=BIG,
        issued_at=T0,
        issuer="operator:ada",
        reason="ramp canary to 5 %",
        config=ModelConfig(
            production_version="v1",
            canary_version="v2",
            canary_basis_points=500,
            shadow_version="v3",
            shadow_enabled=True,
            fallback_version="v0",
            flags={"use_new_features": "true", "threshold": "0.7", "label": '"ü"'},
        ),
        key_id="ops-2024",
        signature="c2lnbmF0dXJl",
        details={"ticket": "OPS-1"},
    ),
    ControlCommand(
        command_id="cmd-2",
        model_name="fraud",
        kind=CommandKind.ROLLBACK,
        sequence=0,
        issued_at=T0,
        issuer="rollback-guard",
        reason="",
        config=ModelConfig(production_version="v1", kill_switch=True),
        key_id="",
        signature="",
    ),
    ReplicaStatus(
        replica_id="replica-1",
        timestamp=T0,
        state=ReplicaState.READY,
        started_at=T0 - 1,
        config_versions={"fraud": BIG, "churn": -1},
        last_command_id="cmd-1",
        refused_count=3,
        last_refusal="bad signature from key ops-2023",
    ),
    ReplicaStatus(
        replica_id="r",
        timestamp=T0,
        state=ReplicaState.STARTING,
        started_at=T0,
        config_versions={},
        last_command_id=None,
        refused_count=0,
    ),
    RetrainingDecision(
        decision_id="d-1",
        model_name="fraud",
        model_version="v2",
        timestamp=T0,
        should_retrain=True,
        urgency=Urgency.CRITICAL,
        reason="PSI 0.4 on amount",
        max_psi=0.4,
        performance_drop=0.12,
        drifted_features=["amount", "größe"],
    ),
    RetrainingDecision(
        decision_id="d-2",
        model_name="fraud",
        model_version="v2",
        timestamp=T0,
        should_retrain=False,
        urgency=Urgency.NONE,
        reason="",
        max_psi=None,
        performance_drop=None,
        drifted_features=[],
    ),
    DeadLetter(
        source_topic="predictions",
        source_partition=7,
        source_offset=BIG,
        key=b"\x00\xffkey",
        value=b"\xc3\x01garbage\x00",
        reason="unknown_fingerprint: 0011223344556677",
        error_type="DecodeError",
        timestamp=T0,
        consumer="safeloop-streams",
    ),
    DeadLetter(
        source_topic="outcomes",
        source_partition=0,
        source_offset=0,
        key=None,
        value=None,
        reason="tombstone",
        error_type="DecodeError",
        timestamp=T0,
        consumer="c",
    ),
]

ALL_CODECS: list[EventCodec[Any]] = [
    PREDICTION_CODEC,
    OUTCOME_CODEC,
    FEEDBACK_CODEC,
    CONTROL_CODEC,
    REPLICA_STATUS_CODEC,
    RETRAINING_CODEC,
    DEAD_LETTER_CODEC,
]


def _crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint exactly as the Avro specification spells it out."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_round_trip(event: Any) -> None:
    codec = codec_for(type(event))
    data = codec.encode(event)
    assert data[:2] == MARKER
    assert fingerprint_of(data) == codec.fingerprint
    assert codec.decode(data) == event


def test_decoded_fields_have_python_types() -> None:
    event = PREDICTION_CODEC.decode(PREDICTION_CODEC.encode(prediction()))
    # timestamp-millis must stay int ms, not become datetime; enums come back as members.
    assert type(event.timestamp) is int
    assert type(event.route) is Route
    status = REPLICA_STATUS_CODEC.decode(REPLICA_STATUS_CODEC.encode(EVENTS[9]))
    assert type(status.state) is ReplicaState
    command = CONTROL_CODEC.decode(CONTROL_CODEC.encode(EVENTS[7]))
    assert type(command.config) is ModelConfig
    assert type(command.kind) is CommandKind


def test_nan_survives_the_wire() -> None:
    # The codec carries NaN faithfully; rejecting it is validation's job.
    event = prediction(prediction=math.nan, features={"x": math.inf})
    decoded = PREDICTION_CODEC.decode(PREDICTION_CODEC.encode(event))
    assert decoded.prediction is not None and math.isnan(decoded.prediction)
    assert decoded.features == {"x": math.inf}


def test_plain_strings_encode_as_enum_symbols() -> None:
    event = prediction(route="shadow")
    assert PREDICTION_CODEC.decode(PREDICTION_CODEC.encode(event)).route is Route.SHADOW


def test_batch_forms_match_single_forms() -> None:
    events = [prediction(prediction_id=f"p-{i}", timestamp=T0 + i) for i in range(50)]
    encoded = PREDICTION_CODEC.encode_many(events)
    assert encoded == [PREDICTION_CODEC.encode(e) for e in events]
    assert PREDICTION_CODEC.decode_many(encoded) == events
    assert PREDICTION_CODEC.decode_many([]) == []


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = PREDICTION_CODEC.encode(prediction())
    assert PREDICTION_CODEC.decode(bytearray(data)) == prediction()  # type: ignore[arg-type]
    assert PREDICTION_CODEC.decode(memoryview(data)) == prediction()  # type: ignore[arg-type]


def test_fingerprint_is_little_endian_crc64_avro_of_canonical_form() -> None:
    # The specification's own test vector, then an independent Rabin implementation.
    assert int.from_bytes(fingerprint("null"), "little") == 7195948357588979594
    canonical = (
        '{"name":"safeloop.v1.OutcomeEvent","type":"record","fields":['
        '{"name":"prediction_id","type":"string"},{"name":"ground_truth","type":"double"},'
        '{"name":"timestamp","type":"long"},{"name":"source","type":"string"}]}'
    )
    expected = _crc64_avro(canonical.encode()).to_bytes(8, "little")
    assert OUTCOME_CODEC.fingerprint == expected
    assert OUTCOME_CODEC.encode(EVENTS[3])[:10] == b"\xc3\x01" + expected


def test_codec_for_returns_the_shared_codecs() -> None:
    for codec in ALL_CODECS:
        assert codec_for(codec.event_type) is codec
    with pytest.raises(TypeError, match="not a safeloop event type"):
        codec_for(int)


@pytest.mark.parametrize("codec", ALL_CODECS, ids=repr)
def test_schema_matches_dataclass(codec: EventCodec[Any]) -> None:
    """The .avsc and events.py must agree field by field and symbol by symbol."""
    _assert_record_matches(codec.schema.source, codec.event_type)


def _assert_record_matches(schema: dict[str, Any], cls: type[Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert [f["name"] for f in schema["fields"]] == list(fields)
    types = get_type_hints(cls)
    for avro_field in schema["fields"]:
        hint = types[avro_field["name"]]
        avro_type = avro_field["type"]
        if isinstance(hint, type) and issubclass(hint, StrEnum):
            assert avro_type["type"] == "enum"
            assert avro_type["symbols"] == [m.value for m in hint]
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            _assert_record_matches(avro_type, hint)
        default = fields[avro_field["name"]].default
        if default is not dataclasses.MISSING:
            # A Python default must be the Avro default, or producers and consumers disagree.
            assert avro_field.get("default") == default, avro_field["name"]


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"\xc3\x01\x00", b"\x00\x01" + bytes(8) + b"\x00", b"{json: 1}" * 3],
    ids=["empty", "half-marker", "short-header", "wrong-marker", "json"],
)
def test_bad_marker(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        PREDICTION_CODEC.decode(data)
    assert info.value.reason == DecodeReason.BAD_MARKER
    assert "c301" in str(info.value)


def test_tombstone_is_a_bad_marker_not_a_crash() -> None:
    with pytest.raises(DecodeError) as info:
        PREDICTION_CODEC.decode(None)  # type: ignore[arg-type]
    assert info.value.reason == DecodeReason.BAD_MARKER
    assert "NoneType" in str(info.value)


def test_unknown_fingerprint() -> None:
    data = MARKER + bytes.fromhex("0011223344556677") + b"\x00"
    with pytest.raises(DecodeError) as info:
        PREDICTION_CODEC.decode(data)
    assert info.value.reason == DecodeReason.UNKNOWN_FINGERPRINT
    assert "0011223344556677" in str(info.value)


def test_other_event_type_is_rejected_by_fingerprint() -> None:
    data = OUTCOME_CODEC.encode(EVENTS[3])
    with pytest.raises(DecodeError) as info:
        PREDICTION_CODEC.decode(data)
    assert info.value.reason == DecodeReason.UNKNOWN_FINGERPRINT
    assert "safeloop.v1.OutcomeEvent" in str(info.value)


def test_every_truncation_is_malformed() -> None:
    data = PREDICTION_CODEC.encode(prediction())
    for cut in range(10, len(data)):
        with pytest.raises(DecodeError) as info:
            PREDICTION_CODEC.decode(data[:cut])
        assert info.value.reason == DecodeReason.MALFORMED_BODY, cut


def test_trailing_bytes_are_malformed() -> None:
    data = OUTCOME_CODEC.encode(EVENTS[3])
    with pytest.raises(DecodeError, match="2 unexpected bytes") as info:
        OUTCOME_CODEC.decode(data + b"\x00\x00")
    assert info.value.reason == DecodeReason.MALFORMED_BODY


def test_corrupt_body_is_malformed() -> None:
    header = MARKER + PREDICTION_CODEC.fingerprint
    bad_utf8 = header + b"\x04\xff\xfe"  # a 2-byte string that is not UTF-8
    with pytest.raises(DecodeError) as info:
        PREDICTION_CODEC.decode(bad_utf8)
    assert info.value.reason == DecodeReason.MALFORMED_BODY
    good = OUTCOME_CODEC.encode(EVENTS[3])
    with pytest.raises(DecodeError) as info:
        OUTCOME_CODEC.decode(good[:10] + b"\x7f" + good[11:])  # string length beyond the end
    assert info.value.reason == DecodeReason.MALFORMED_BODY


@pytest.mark.parametrize(
    "event", [EVENTS[0], EVENTS[7], EVENTS[13]], ids=lambda e: type(e).__name__
)
def test_random_corruption_raises_only_decode_errors(event: Any) -> None:
    # A stream must survive any bytes: whatever happens inside fastavro surfaces as DecodeError.
    codec = codec_for(type(event))
    good = codec.encode(event)
    rng = random.Random(20240601)
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(HEADER_SIZE, len(data))
            choice = rng.random()
            if choice < 0.6:
                data[position] = rng.randrange(256)
            elif choice < 0.8:
                del data[position]
            else:
                data.insert(position, rng.randrange(256))
        try:
            codec.decode(bytes(data))
        except DecodeError as exc:
            assert exc.reason in {DecodeReason.MALFORMED_BODY, DecodeReason.INVALID_FIELD}


def test_unknown_enum_symbol_without_default_is_an_invalid_field() -> None:
    future = _future_prediction_schema(route_symbols=["production", "canary", "shadow", "explore"])
    registry = _registry_with(future)
    data = _encode_with(future, _record(prediction(), route="explore"))
    with pytest.raises(DecodeError) as info:
        EventCodec(PredictionEvent, registry).decode(data)
    assert info.value.reason == DecodeReason.INVALID_FIELD
    assert "explore" in str(info.value)


def test_unknown_enum_symbol_with_default_falls_back() -> None:
    schema = dict(REPLICA_STATUS_CODEC.schema.source)
    fields = [dict(f) for f in schema["fields"]]
    state = next(f for f in fields if f["name"] == "state")
    state["type"] = dict(state["type"], symbols=["starting", "ready", "stopping", "draining"])
    schema["fields"] = fields
    registry = _registry_with(schema)
    data = _encode_with(schema, _record(EVENTS[9], state="draining"))
    decoded = EventCodec(ReplicaStatus, registry).decode(data)
    assert decoded.state is ReplicaState.STARTING


def test_encode_rejects_the_wrong_event_type() -> None:
    with pytest.raises(EncodeError, match="expected PredictionEvent"):
        PREDICTION_CODEC.encode(EVENTS[3])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"latency_ms": "fast"}, "latency_ms"),
        ({"timestamp": "2024-01-01"}, "timestamp"),
        ({"timestamp": 2**70}, "timestamp"),
        ({"prediction": "yes"}, "prediction"),
        ({"features": {"x": "high"}}, "features"),
        ({"features": None}, "features"),
        ({"route": "sideways"}, "route"),
        ({"model_name": None}, "model_name"),
    ],
)
def test_encode_errors_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(EncodeError, match=field) as info:
        PREDICTION_CODEC.encode(prediction(**changes))
    assert isinstance(info.value, SchemaError)
    assert info.value.__cause__ is not None


def test_decode_error_pickles() -> None:
    error = DecodeError(DecodeReason.INVALID_FIELD, "bad confidence", field="confidence")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.message, copy.field) == (error.reason, "bad confidence", "confidence")


def test_registry_knows_every_current_schema() -> None:
    registry = default_registry()
    for codec in ALL_CODECS:
        assert registry.get(codec.fingerprint) is codec.schema
        assert registry.current(codec.schema.name) is codec.schema
    with pytest.raises(SchemaError):
        registry.current("safeloop.v1.Nope")


# --- helpers -------------------------------------------------------------------------------


def _record(event: Any, **changes: Any) -> dict[str, Any]:
    record = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    record.update(changes)
    return record


def _future_prediction_schema(route_symbols: list[str]) -> dict[str, Any]:
    schema = dict(PREDICTION_CODEC.schema.source)
    fields = [dict(f) for f in schema["fields"]]
    route = next(f for f in fields if f["name"] == "route")
    route["type"] = dict(route["type"], symbols=route_symbols)
    schema["fields"] = fields
    return schema


def _registry_with(*extra: dict[str, Any]) -> SchemaRegistry:
    registry = SchemaRegistry()
    for codec in ALL_CODECS:
        registry.register(codec.schema.source, current=True)
    for schema in extra:
        registry.register(schema)
    return registry


def _encode_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    entry = SchemaRegistry().register(schema)
    out = io.BytesIO()
    out.write(MARKER + entry.fingerprint)
    schemaless_writer(out, entry.parsed, record)
    return out.getvalue()


# --- record mapping ------------------------------------------------------------------------


class _Colour(StrEnum):
    RED = "red"


@dataclasses.dataclass
class _Plain:
    """No slots and a __post_init__: must take the keyword path and still run it."""

    colour: _Colour
    count: int
    seen: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen.append("post_init")


def test_record_mapper_honours_post_init_and_converts_enums() -> None:
    mapper = RecordMapper(_Plain)
    built = mapper.from_record({"colour": "red", "count": 2, "seen": []})
    assert built == _Plain(_Colour.RED, 2, [])  # both ran __post_init__ once
    assert built.colour is _Colour.RED
    assert mapper.to_record(built) == {"colour": "red", "count": 2, "seen": ["post_init"]}


def test_record_mapper_rejects_an_unknown_enum_value() -> None:
    record = _record(prediction(), route="sideways")
    with pytest.raises(DecodeError) as info:
        RecordMapper(PredictionEvent).from_record(record)
    assert info.value.reason == DecodeReason.INVALID_FIELD
    assert info.value.field == "route"
    assert "PredictionEvent.route='sideways'" in str(info.value)


def test_a_body_fastavro_finds_short_says_it_ends_early() -> None:
    # fastavro's EOFError carries no text when a number is cut off; the dead letter's reason
    # should still say something.
    plain = EventCodec(PredictionEvent, native=False)
    data = plain.encode(prediction())
    reasons = []
    for cut in range(HEADER_SIZE, len(data)):
        with pytest.raises(DecodeError) as short:
            plain.decode(data[:cut])
        assert short.value.reason is DecodeReason.MALFORMED_BODY
        reasons.append(str(short.value))
    assert not [r for r in reasons if r.endswith(": ")], reasons
    assert any(r.endswith("EOFError: it ends early") for r in reasons), reasons
