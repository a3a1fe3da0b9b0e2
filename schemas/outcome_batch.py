"""OutcomeEvents encoded a batch at a time, byte for byte what `OUTCOME_CODEC.encode` writes.

An outcome is four fields (string, double, long, string), so its Avro body is written here
directly: about a tenth of fastavro's per-record cost, which is what lets a label file be
published at 100,000+ outcomes/s. The layout is checked against the current schema at import;
should the schema change, `encode_outcomes` falls back to the codec (tests compare the two).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from safeloop.schemas.codec import MARKER, OUTCOME_CODEC
from safeloop.schemas.exceptions import EncodeError

# (prediction_id, ground_truth, timestamp ms, source): an OutcomeEvent's fields, in order.
OutcomeTuple = tuple[str, float, int, str]

_EXPECTED_FIELDS: Final = (
    ("prediction_id", "string"),
    ("ground_truth", "double"),
    ("timestamp", "long"),
    ("source", "string"),
)
_HEADER: Final = MARKER + OUTCOME_CODEC.fingerprint
_DOUBLE = struct.Struct("<d").pack
_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1


def _layout_matches() -> bool:
    fields = OUTCOME_CODEC.schema.source.get("fields", [])
    found = []
    for item in fields:
        kind = item["type"]
        found.append((item["name"], kind["type"] if isinstance(kind, dict) else kind))
    return tuple(found) == _EXPECTED_FIELDS


HAND_ENCODED: Final = _layout_matches()
# The one-byte length prefix of strings shorter than 64 bytes.
_SMALL_LENGTHS: Final = tuple(bytes((n << 1,)) for n in range(64))
# The first two varint bytes of a zig-zagged long of 14 bits or more (continuation bits set).
_LOW_GROUPS: Final = tuple(
    bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(1 << 14)
)


def _varint(value: int) -> bytes:
    """Avro `long`: zig-zag, then 7 bits a byte, low first."""
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise EncodeError(f"cannot encode OutcomeEvent: {value} does not fit an Avro long")
    return _unsigned((value << 1) ^ (value >> 63))


def _unsigned(zigzag: int) -> bytes:
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _varint(len(data)) + data


def encode_outcomes(rows: Iterable[OutcomeTuple]) -> list[bytes]:
    """Each `(prediction_id, ground_truth, timestamp_ms, source)` as single-object bytes."""
    if not HAND_ENCODED:
        from safeloop.schemas.events import OutcomeEvent  # noqa: PLC0415 (fallback only)

        return [OUTCOME_CODEC.encode(OutcomeEvent(*row)) for row in rows]
    header, double, string, varint, small = _HEADER, _DOUBLE, _string, _varint, _SMALL_LENGTHS
    sources: dict[str, bytes] = {}
    # A file's timestamps share their high bits: cache the varint tail above the low 14 bits.
    tails: dict[int, bytes] = {}
    out: list[bytes] = []
    append = out.append
    join = b"".join
    for prediction_id, ground_truth, timestamp, source in rows:
        encoded_source = sources.get(source)
        if encoded_source is None:
            encoded_source = sources[source] = string(source)
        data = prediction_id.encode("utf-8")
        length = small[len(data)] if len(data) < 64 else varint(len(data))
        if 1 << 13 <= timestamp <= _LONG_MAX >> 1:
            zigzag = timestamp << 1
            tail = tails.get(zigzag >> 14)
            if tail is None:
                tail = tails[zigzag >> 14] = _unsigned(zigzag >> 14)
            stamp = _LOW_GROUPS[zigzag & 0x3FFF] + tail
        else:
            stamp = varint(timestamp)
        append(join((header, length, data, double(ground_truth), stamp, encoded_source)))
    return out
