"""Avro single-object encoding of the typed events: `C3 01` + 8-byte fingerprint + body.

The fingerprint names the writer's schema; the registry maps it to that schema and fastavro
resolves it against the reader's current one, so old and new producers can share a topic.

Enums are Avro enums rather than strings: the symbols document the contract in the schema, take
one byte on the wire, and a reader meeting a symbol it does not know falls back to the enum's
`default` where a fallback is safe (ReplicaState, Urgency) and fails with a DecodeError where a
guess would be wrong (Route: never count an unknown route as production; CommandKind: a replica
must refuse what it does not understand; FeedbackStatus).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any, Final, Generic, TypeVar, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate

from safeloop.schemas import native_codec
from safeloop.schemas.events import (
    ControlCommand,
    DeadLetter,
    FeedbackRecord,
    OutcomeEvent,
    PredictionEvent,
    ReplicaStatus,
    RetrainingDecision,
)
from safeloop.schemas.exceptions import DecodeError, DecodeReason, EncodeError
from safeloop.schemas.flat_loop import LOOP, FlatLoop
from safeloop.schemas.records import RecordMapper
from safeloop.schemas.registry import SchemaRegistry, WriterSchema, default_registry

log = logging.getLogger(__name__)

E = TypeVar("E")

MARKER: Final = b"\xc3\x01"
HEADER_SIZE: Final = 10
NAMESPACE: Final = "safeloop.v1"
# Flat records of the current schema go through a compiled loop when `make native` built one.
NATIVE: Final = LOOP is not None


def fingerprint_of(data: bytes) -> bytes:
    """The writer-schema fingerprint of single-object-encoded bytes."""
    if len(data) < HEADER_SIZE or data[:2] != MARKER:
        raise DecodeError(
            DecodeReason.BAD_MARKER,
            f"not Avro single-object encoding: expected marker c301 and 8 fingerprint bytes, "
            f"got {bytes(data[:HEADER_SIZE]).hex() or 'nothing'} ({len(data)} bytes in all)",
        )
    return bytes(data[2:HEADER_SIZE])


class EventCodec(Generic[E]):
    """Encodes and decodes one event type; build once, share freely (it is thread-safe)."""

    def __init__(
        self,
        event_type: type[E],
        registry: SchemaRegistry | None = None,
        *,
        native: bool = NATIVE,
    ) -> None:
        self.event_type = event_type
        self._registry = registry or default_registry()
        self._mapper = RecordMapper(event_type)
        self._from_record: Callable[[Any], E] = self._mapper.from_record
        self.schema: WriterSchema = self._registry.current(f"{NAMESPACE}.{event_type.__name__}")
        self.fingerprint = self.schema.fingerprint
        self._header = MARKER + self.fingerprint
        # fingerprint -> (writer schema, reader schema or None when they are the same).
        self._plans: dict[bytes, tuple[Any, Any]] = {self.fingerprint: (self.schema.parsed, None)}
        # Bytes of the current schema only: older writers need fastavro's schema resolution.
        self._loop: FlatLoop | None = LOOP if native else None
        self._native = native_codec.plan_for(self.schema.parsed) if self._loop is not None else None
        # Events of the current schema are built by the loop itself when the class allows it.
        self._target = (
            None if self._native is None else self._mapper.object_target(self._native.names)
        )

    def __repr__(self) -> str:
        return f"EventCodec({self.event_type.__name__}, {self.fingerprint.hex()})"

    def encode(self, event: E) -> bytes:
        """The event as single-object-encoded bytes; EncodeError if it does not fit the schema."""
        if type(event) is not self.event_type:
            raise EncodeError(
                f"{self!r} cannot encode {type(event).__name__}; expected "
                f"{self.event_type.__name__}"
            )
        loop, plan = self._loop, self._native
        if loop is not None and plan is not None:
            try:
                if self._mapper.flat:
                    # Fields read straight off the event: no dict per event.
                    return loop.write_attributes(event, plan, self._header)
                return loop.write(self._mapper.to_record(event), plan, self._header)
            except Exception:  # a value the loop does not take: fastavro encodes it or says why
                log.debug("%r: the compiled writer refused a record; fastavro writes it", self)
        record = self._mapper.to_record(event)
        out = BytesIO()
        out.write(self._header)
        try:
            schemaless_writer(out, self.schema.parsed, record)
        except Exception as exc:  # fastavro raises TypeError, ValueError, OverflowError, ...
            raise EncodeError(self._explain(record, exc)) from exc
        return out.getvalue()

    def encode_many(self, events: Iterable[E]) -> list[bytes]:
        """`encode` for each event, in order."""
        encode = self.encode
        return [encode(event) for event in events]

    def decode(self, data: bytes) -> E:
        """The event in `data`; DecodeError says why when the bytes are not one."""
        if type(data) is not bytes:
            data = _as_bytes(data)
        plan = self._plans.get(data[2:HEADER_SIZE])
        if plan is None or data[:2] != MARKER:
            plan = self._plan_for(fingerprint_of(data))
        if plan[1] is None and self._native is not None and self._loop is not None:
            if self._target is not None:
                try:
                    return cast(
                        E, self._loop.read_object(data, HEADER_SIZE, self._native, self._target)
                    )
                except KeyError:
                    pass  # an enum symbol the class lacks: the record's path below says which
                except Exception as exc:  # ValueError, UnicodeDecodeError: the body is not valid
                    raise self._body_error(data, exc) from exc
            try:
                native_record = self._loop.read(data, HEADER_SIZE, self._native)
            except Exception as exc:  # ValueError, UnicodeDecodeError: the body is not valid
                raise self._body_error(data, exc) from exc
            return self._from_record(native_record)
        body = BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, plan[0], plan[1])
        except Exception as exc:  # truncated or corrupt bodies surface as many fastavro types
            raise self._body_error(data, exc) from exc
        if body.tell() != len(data):
            raise DecodeError(
                DecodeReason.MALFORMED_BODY,
                f"{len(data) - body.tell()} unexpected bytes after a "
                f"{self.event_type.__name__} body",
            )
        return self._from_record(record)

    def decode_many(self, items: Iterable[bytes]) -> list[E]:
        """`decode` for each item, in order; the first bad item raises."""
        decode = self.decode
        return [decode(item) for item in items]

    def _plan_for(self, fingerprint: bytes) -> tuple[Any, Any]:
        writer = self._registry.get(fingerprint)
        if writer is None:
            raise DecodeError(
                DecodeReason.UNKNOWN_FINGERPRINT,
                f"writer schema fingerprint {fingerprint.hex()} is not in the registry; "
                f"cannot read it as {self.event_type.__name__}",
            )
        if writer.name != self.schema.name:
            raise DecodeError(
                DecodeReason.UNKNOWN_FINGERPRINT,
                f"writer schema fingerprint {fingerprint.hex()} is {writer.name}, "
                f"not {self.schema.name}",
            )
        plan = (writer.parsed, self.schema.parsed)
        self._plans[fingerprint] = plan
        return plan

    def _body_error(self, data: bytes, exc: Exception) -> DecodeError:
        name = self.event_type.__name__
        # A resolution error means a value the writer allows and this reader does not.
        if isinstance(exc, SchemaResolutionError):
            return DecodeError(DecodeReason.INVALID_FIELD, f"cannot read {name}: {exc}")
        # fastavro's EOFError says nothing: name what it means.
        detail = str(exc) or ("it ends early" if isinstance(exc, EOFError) else "no detail")
        return DecodeError(
            DecodeReason.MALFORMED_BODY,
            f"corrupt or truncated {name} body ({len(data) - HEADER_SIZE} bytes): "
            f"{type(exc).__name__}: {detail}",
        )

    def _explain(self, record: dict[str, Any], exc: Exception) -> str:
        # Only on failure: fastavro's validator names the field and value, at ~4x encode cost.
        name = self.event_type.__name__
        try:
            validate(record, self.schema.parsed, raise_errors=True)
        except ValidationError as invalid:
            return f"cannot encode {name}: " + "; ".join(map(str, invalid.errors))
        except Exception as choked:
            # The validator itself failed on this record: report the writer's own error below.
            log.debug("fastavro's validator failed on a %s: %r", name, choked)
        return f"cannot encode {name}: {type(exc).__name__}: {exc}"


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise DecodeError(DecodeReason.BAD_MARKER, f"expected encoded bytes, got {type(data).__name__}")


PREDICTION_CODEC: Final = EventCodec(PredictionEvent)
OUTCOME_CODEC: Final = EventCodec(OutcomeEvent)
FEEDBACK_CODEC: Final = EventCodec(FeedbackRecord)
CONTROL_CODEC: Final = EventCodec(ControlCommand)
REPLICA_STATUS_CODEC: Final = EventCodec(ReplicaStatus)
RETRAINING_CODEC: Final = EventCodec(RetrainingDecision)
DEAD_LETTER_CODEC: Final = EventCodec(DeadLetter)

_CODECS: Final[dict[type[Any], EventCodec[Any]]] = {
    codec.event_type: codec
    for codec in (
        PREDICTION_CODEC,
        OUTCOME_CODEC,
        FEEDBACK_CODEC,
        CONTROL_CODEC,
        REPLICA_STATUS_CODEC,
        RETRAINING_CODEC,
        DEAD_LETTER_CODEC,
    )
}


def codec_for(event_type: type[E]) -> EventCodec[E]:
    """The shared codec of one event type."""
    try:
        return cast(EventCodec[E], _CODECS[event_type])
    except KeyError:
        raise TypeError(f"{event_type.__name__} is not a safeloop event type") from None
