"""The compiled Avro loops (schemas/flat_avro.c, and schemas/native_codec.py built by mypyc)
against fastavro: same bytes, same records, never laxer on bad bytes; and the codec using them
only where it may."""

from __future__ import annotations

import importlib.util
import io
import math
import random
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from safeloop.schemas import flat_loop, native_codec
from safeloop.schemas.codec import (
    CONTROL_CODEC,
    FEEDBACK_CODEC,
    HEADER_SIZE,
    OUTCOME_CODEC,
    PREDICTION_CODEC,
    EventCodec,
)
from safeloop.schemas.events import (
    FeedbackRecord,
    FeedbackStatus,
    OutcomeEvent,
    PredictionEvent,
    Route,
)
from safeloop.schemas.exceptions import DecodeError, DecodeReason, EncodeError

HOT_PATH_CODECS = (PREDICTION_CODEC, OUTCOME_CODEC, FEEDBACK_CODEC)
# What the loop refuses and fastavro reads: negative enum and union indexes (Python's
# from-the-end indexes there) and varints past 64 bits (which it reads as other numbers).
STRICTER = ("index -", "varint past 64 bits")


def _source_module() -> ModuleType:
    """The module run from its source, as Python, whatever the build."""
    path = native_codec.__file__.rsplit("/", 1)[0] + "/native_codec.py"
    spec = importlib.util.spec_from_file_location("native_codec_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE = _source_module()
C_LOOP = flat_loop.c_loop()
# The loops that must agree with fastavro: the C one, mypyc's build, and its source as Python.
LOOPS = [C_LOOP, native_codec, SOURCE]
LOOP_IDS = ["c", "compiled", "source"]


def _text(rng: random.Random) -> str:
    alphabet = "abcXYZ09-_ é€😀\x00"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def _double(rng: random.Random) -> float:
    return rng.choice(
        [0.0, -0.0, 1.5, -3e300, 5e-324, math.inf, -math.inf, math.nan, rng.uniform(-1e6, 1e6)]
    )


def _long(rng: random.Random) -> int:
    return rng.choice(
        [0, -1, 1, 63, 64, -65, 2**31, -(2**63), 2**63 - 1, rng.randrange(-(2**40), 2**40)]
    )


def _prediction(rng: random.Random) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=_text(rng),
        model_name=_text(rng),
        model_version=_text(rng),
        timestamp=_long(rng),
        features={_text(rng): _double(rng) for _ in range(rng.randrange(0, 12))},
        prediction=rng.choice([None, _double(rng)]),
        confidence=rng.choice([None, _double(rng)]),
        latency_ms=_double(rng),
        route=rng.choice(list(Route)),
        replica_id=_text(rng),
        routing_key=_text(rng),
        routing_hash_version=_long(rng),
        error=rng.choice([None, _text(rng)]),
        class_probabilities=[_double(rng) for _ in range(rng.randrange(0, 4))],
        segments={_text(rng): _text(rng) for _ in range(rng.randrange(0, 3))},
    )


def _outcome(rng: random.Random) -> OutcomeEvent:
    return OutcomeEvent(_text(rng), _double(rng), _long(rng), _text(rng))


def _feedback(rng: random.Random) -> FeedbackRecord:
    p = _prediction(rng)
    return FeedbackRecord(
        prediction_id=p.prediction_id,
        model_name=p.model_name,
        model_version=p.model_version,
        route=p.route,
        replica_id=p.replica_id,
        features=p.features,
        prediction=p.prediction,
        confidence=p.confidence,
        prediction_timestamp=p.timestamp,
        status=rng.choice(list(FeedbackStatus)),
        ground_truth=rng.choice([None, _double(rng)]),
        outcome_timestamp=rng.choice([None, _long(rng)]),
        label_delay_ms=rng.choice([None, _long(rng)]),
        outcome_source=rng.choice([None, _text(rng)]),
        emitted_at=_long(rng),
        class_probabilities=p.class_probabilities,
        segments=p.segments,
    )


EVENTS = {PREDICTION_CODEC: _prediction, OUTCOME_CODEC: _outcome, FEEDBACK_CODEC: _feedback}


def _fastavro_body(codec: EventCodec[Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, codec.schema.parsed, record)
    return out.getvalue()


def _fastavro_record(codec: EventCodec[Any], body: bytes) -> dict[str, Any]:
    stream = io.BytesIO(body)
    record: dict[str, Any] = schemaless_reader(stream, codec.schema.parsed, None)
    if stream.tell() != len(body):
        raise ValueError("trailing bytes")
    return record


def test_make_native_built_the_loops_and_the_hot_path_codecs_use_the_c_one() -> None:
    assert native_codec.compiled(), (
        f"{native_codec.__file__} is not a current mypyc build: run `make native`"
    )
    assert C_LOOP is not None, "schemas/flat_avro.c is not built, or changed since: `make native`"
    for codec in HOT_PATH_CODECS:
        assert codec._native is not None, codec
        assert codec._loop is C_LOOP, codec
    assert not SOURCE.compiled()


@pytest.mark.parametrize("module", LOOPS, ids=LOOP_IDS)
@pytest.mark.parametrize("codec", HOT_PATH_CODECS, ids=repr)
def test_the_loop_writes_fastavros_bytes_and_reads_its_records(
    module: ModuleType, codec: EventCodec[Any]
) -> None:
    rng = random.Random(f"{codec!r}")
    plan = native_codec.plan_for(codec.schema.parsed)
    for _ in range(400):
        event = EVENTS[codec](rng)
        record = codec._mapper.to_record(event)
        expected = _fastavro_body(codec, record)
        assert module.write(record, plan, b"H") == b"H" + expected
        assert module.write_attributes(event, plan, b"H") == b"H" + expected
        assert codec._target is not None
        assert repr(module.read_object(b"H" + expected, 1, plan, codec._target)) == repr(event)
        # repr: NaN is not equal to itself, and -0.0 equals 0.0.
        assert repr(module.read(b"H" + expected, 1, plan)) == repr(
            _fastavro_record(codec, expected)
        )


@pytest.mark.parametrize("module", LOOPS[:2], ids=LOOP_IDS[:2])
@pytest.mark.parametrize("codec", HOT_PATH_CODECS, ids=repr)
def test_damaged_bodies_read_as_fastavro_reads_them_or_are_refused(
    module: ModuleType, codec: EventCodec[Any]
) -> None:
    """Truncated, flipped, inserted and trailing bytes: the loop never accepts what fastavro
    refuses nor reads another record; what it refuses alone is in STRICTER."""
    rng = random.Random(7)
    plan = native_codec.plan_for(codec.schema.parsed)
    refused_only_here = 0
    for _ in range(3000):
        body = bytearray(_fastavro_body(codec, codec._mapper.to_record(EVENTS[codec](rng))))
        damage = rng.randrange(4)
        if damage == 0:
            del body[rng.randrange(len(body)) :]
        elif damage == 1:
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif damage == 2:
            body.append(rng.randrange(256))
        else:
            body.insert(rng.randrange(len(body)), rng.randrange(256))
        try:
            expected: Any = repr(_fastavro_record(codec, bytes(body)))
        except Exception:
            expected = None
        try:
            record = module.read(bytes(body), 0, plan)
            got: Any = repr(record)
        except ValueError:
            got = None
        try:
            built: Any = module.read_object(bytes(body), 0, plan, codec._target)
        except ValueError:
            built = None
        except KeyError:  # an enum symbol the class lacks: the codec reads the record instead
            built = KeyError
        if got is None:
            assert built is None, "the object path read what the record path refused"
        elif built is not KeyError:
            assert repr(built) == repr(codec._mapper.from_record(record))
        if got is not None:
            assert got == expected
        elif expected is not None:
            refused_only_here += 1
            why = _refusal(module, bytes(body), plan)
            assert any(reason in why for reason in STRICTER), why
    assert refused_only_here < 150  # a few percent of the damaged bodies


def _refusal(module: ModuleType, body: bytes, plan: native_codec.FlatPlan) -> str:
    with pytest.raises(ValueError) as refused:
        module.read(body, 0, plan)
    return str(refused.value)


def test_a_negative_enum_index_is_a_dead_letter_not_the_last_route() -> None:
    record = PREDICTION_CODEC._mapper.to_record(_prediction(random.Random(3)))
    body = bytearray(_fastavro_body(PREDICTION_CODEC, record))
    plan = native_codec.plan_for(PREDICTION_CODEC.schema.parsed)
    assert plan is not None
    route_at = _offset_of_field(body, plan, "route")
    body[route_at] = 0x01  # zigzag -1
    data = PREDICTION_CODEC._header + bytes(body)
    assert _fastavro_record(PREDICTION_CODEC, bytes(body))["route"] == "shadow"
    with pytest.raises(DecodeError) as refused:
        PREDICTION_CODEC.decode(data)
    assert refused.value.reason is DecodeReason.MALFORMED_BODY
    assert "enum index -1 of route" in str(refused.value)


def _offset_of_field(body: bytearray, plan: native_codec.FlatPlan, name: str) -> int:
    """Where field `name` starts: the body with every later field cut off reads short."""
    for end in range(len(body)):
        try:
            native_codec.read(bytes(body[:end]), 0, _prefix_plan(plan, name))
        except ValueError:
            continue
        return end
    raise AssertionError(name)


def _prefix_plan(plan: native_codec.FlatPlan, name: str) -> native_codec.FlatPlan:
    upto = plan.names.index(name)
    return native_codec.FlatPlan(plan.names[:upto], plan.kinds[:upto], plan.symbols[:upto])


def test_only_flat_schemas_get_a_plan() -> None:
    assert (
        native_codec.plan_for(
            {"type": "record", "name": "r", "fields": [{"name": "a", "type": ["double", "null"]}]}
        )
        is None
    )
    assert (
        native_codec.plan_for(
            {
                "type": "record",
                "name": "r",
                "fields": [{"name": "a", "type": {"type": "record", "name": "n", "fields": []}}],
            }
        )
        is None
    )
    assert (
        native_codec.plan_for(
            {
                "type": "record",
                "name": "r",
                "fields": [{"name": "a", "type": {"type": "array", "items": "string"}}],
            }
        )
        is None
    )
    assert native_codec.plan_for({"type": "map", "values": "double"}) is None
    # ControlCommand nests records: fastavro keeps it.
    assert CONTROL_CODEC._native is None


def test_a_value_the_loop_refuses_is_encoded_by_fastavro() -> None:
    event = _prediction(random.Random(5))
    # A Decimal is no float to the compiled loop; fastavro writes it as a double.
    odd = PredictionEvent(**{**_fields(event), "latency_ms": Decimal("2.5")})  # type: ignore[arg-type]
    plain = PredictionEvent(**{**_fields(event), "latency_ms": 2.5})
    assert PREDICTION_CODEC.encode(odd) == PREDICTION_CODEC.encode(plain)
    wrong = PredictionEvent(**{**_fields(event), "features": {"a": "x"}})  # type: ignore[dict-item]
    with pytest.raises(EncodeError, match="features"):
        PREDICTION_CODEC.encode(wrong)


def _fields(event: PredictionEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in PREDICTION_CODEC._mapper.field_names}


def test_bytes_of_an_older_writer_still_go_through_fastavros_resolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = EventCodec(PredictionEvent)
    assert codec._native is not None
    calls: list[bytes] = []
    loop = codec._loop
    assert loop is not None

    class Counting:
        def read(self, data: bytes, pos: int, plan: native_codec.FlatPlan) -> dict[str, Any]:
            calls.append(data)
            assert loop is not None
            return loop.read(data, pos, plan)

        def read_object(self, data: bytes, pos: int, plan: Any, target: Any) -> Any:
            calls.append(data)
            assert loop is not None
            return loop.read_object(data, pos, plan, target)

        def write(self, record: dict[str, Any], plan: Any, header: bytes) -> bytes:
            assert loop is not None
            return loop.write(record, plan, header)

    monkeypatch.setattr(codec, "_loop", Counting())
    data = codec.encode(_prediction(random.Random(9)))
    current = codec.decode(data)
    assert len(calls) == 1
    # Another writer's fingerprint (here the same fields): fastavro resolves it, not the loop.
    codec._plans[b"\x00" * 8] = (codec.schema.parsed, codec.schema.parsed)
    older = data[:2] + b"\x00" * 8 + data[HEADER_SIZE:]
    assert repr(codec.decode(older)) == repr(current)
    assert len(calls) == 1


def test_a_codec_built_without_the_loop_reads_and_writes_the_same() -> None:
    plain = EventCodec(PredictionEvent, native=False)
    assert plain._native is None
    rng = random.Random(11)
    for _ in range(50):
        event = _prediction(rng)
        data = PREDICTION_CODEC.encode(event)
        assert plain.encode(event) == data
        assert repr(plain.decode(data)) == repr(PREDICTION_CODEC.decode(data))


@pytest.mark.parametrize("module", LOOPS[:2], ids=LOOP_IDS[:2])
def test_records_larger_than_the_writers_first_buffer_round_trip(module: ModuleType) -> None:
    """The C writer starts in a 512-byte buffer and grows it: thousands of features, long texts."""
    rng = random.Random(13)
    event = _prediction(rng)
    features = {f"feature_{i:05d}_{'x' * (i % 40)}": rng.uniform(-1, 1) for i in range(3000)}
    big = PredictionEvent(**{**_fields(event), "features": features, "replica_id": "é" * 70_000})
    record = PREDICTION_CODEC._mapper.to_record(big)
    plan = native_codec.plan_for(PREDICTION_CODEC.schema.parsed)
    expected = _fastavro_body(PREDICTION_CODEC, record)
    assert len(expected) > 200_000
    assert module.write(record, plan, b"HEAD") == b"HEAD" + expected
    assert module.read(b"HEAD" + expected, 4, plan) == _fastavro_record(PREDICTION_CODEC, expected)


@pytest.mark.parametrize("module", LOOPS[:2], ids=LOOP_IDS[:2])
def test_values_that_do_not_fit_are_refused_with_the_python_errors(module: ModuleType) -> None:
    plan = native_codec.plan_for(PREDICTION_CODEC.schema.parsed)
    record = PREDICTION_CODEC._mapper.to_record(_prediction(random.Random(17)))
    for field, value, error in [
        ("timestamp", 2**63, ValueError),
        ("timestamp", "1", TypeError),
        ("latency_ms", "1.5", TypeError),
        ("route", "sideways", KeyError),
        ("features", [("a", 1.0)], TypeError),
        ("features", {"a": "1.0"}, TypeError),
        ("features", {1: 1.0}, TypeError),
        ("class_probabilities", (0.5,), TypeError),
        ("segments", {"a": 1}, TypeError),
    ]:
        with pytest.raises(error):
            module.write({**record, field: value}, plan, b"")
    del record["model_name"]
    with pytest.raises(KeyError):
        module.write(record, plan, b"")
    with pytest.raises(AttributeError):
        module.write_attributes(OUTCOME_CODEC._mapper.from_record(_outcome_record()), plan, b"")


def _outcome_record() -> dict[str, Any]:
    return OUTCOME_CODEC._mapper.to_record(_outcome(random.Random(19)))


def test_an_enum_symbol_the_class_lacks_is_refused_by_the_object_path_and_named_by_the_codec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = EventCodec(PredictionEvent)
    assert codec._target is not None
    data = codec.encode(_prediction(random.Random(23)))
    route_at = codec._native.names.index("route")  # type: ignore[union-attr]
    members = dict(codec._target.enums[route_at] or {})
    del members["canary"], members["production"], members["shadow"]
    for module in LOOPS[:2]:
        with pytest.raises(KeyError):
            module.read_object(
                data, HEADER_SIZE, codec._native, _target_with(codec, route_at, members)
            )
    monkeypatch.setattr(codec, "_target", _target_with(codec, route_at, members))
    # Falls back to the record path, which reads it (the class's own enum has the symbol).
    assert repr(codec.decode(data)) == repr(PREDICTION_CODEC.decode(data))


def _target_with(codec: EventCodec[Any], at: int, members: dict[str, Any]) -> Any:
    target = codec._target
    assert target is not None
    enums = list(target.enums)
    enums[at] = members
    return native_codec.ObjectTarget(target.cls, list(target.slots), enums)


def test_a_class_with_a_post_init_is_not_built_slot_by_slot() -> None:
    from dataclasses import dataclass

    from safeloop.schemas.records import RecordMapper

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: str

        def __post_init__(self) -> None:
            if not self.a:
                raise ValueError("a is empty")

    assert RecordMapper(Checked).object_target(["a"]) is None
    assert RecordMapper(OutcomeEvent).object_target(["prediction_id"]) is None  # fields missing
