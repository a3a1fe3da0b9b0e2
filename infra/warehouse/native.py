"""Native output as a ClickHouse server writes it for the client's `client_protocol_version`.

chDB writes Native as for a client of revision 0: no block info, and top-level `DateTime('tz')`
columns named plain `DateTime` (their time zone lost). A server honours the revision the HTTP
client declares: from 1 every block starts with its block info, from 54337 DateTime keeps its
time zone, from 54454 each column says it has no custom serialization. `NativeRewriter` walks
the blocks (skipping each column's data by its type) and writes them that way, with the column
types the query really has.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from safeloop.infra.warehouse.exceptions import NativeLayoutError

WITH_BLOCK_INFO: Final = 1
WITH_TIME_ZONE: Final = 54337
WITH_CUSTOM_SERIALIZATION: Final = 54454
# The highest revision whose Native layout this module writes; higher requests get this one.
SERVER_REVISION: Final = WITH_CUSTOM_SERIALIZATION
# is_overflows = false, bucket_num = -1, end of block info.
_BLOCK_INFO: Final = b"\x01\x00\x02\xff\xff\xff\xff\x00"
_UINT64 = struct.Struct("<Q")

_FIXED: Final = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "Nothing": 1,
    "UInt16": 2, "Int16": 2, "Date": 2, "Enum16": 2, "BFloat16": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4, "Time": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Time64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16,
    "UInt256": 32, "Int256": 32,
    "Decimal32": 4, "Decimal64": 8, "Decimal128": 16, "Decimal256": 32,
}  # fmt: skip
_LOW_CARDINALITY_INDEX: Final = (1, 2, 4, 8)
_HAS_ADDITIONAL_KEYS: Final = 1 << 9
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class DataType:
    """A parsed ClickHouse type name: `Array(Nullable(String))` -> Array[Nullable[String]]."""

    name: str
    args: tuple[DataType, ...] = ()
    literal: str = ""


def parse_type(text: str) -> DataType:
    """The type tree of a ClickHouse type name."""
    parsed, end = _parse(text, 0)
    if text[end:].strip():
        raise NativeLayoutError(f"unexpected text after type: {text!r}")
    return parsed


def _parse(text: str, pos: int) -> tuple[DataType, int]:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos < len(text) and text[pos] in "'-0123456789":
        return _literal(text, pos)
    match = _NAME.match(text, pos)
    if match is None:
        raise NativeLayoutError(f"cannot read a type at {pos} in {text!r}")
    name, pos = match.group(1), match.end()
    # A named tuple element: `name Type`.
    follow = _NAME.match(text, pos)
    if follow is not None and text[pos : pos + 1] == " ":
        inner, pos = _parse(text, pos)
        return inner, pos
    if pos >= len(text) or text[pos] != "(":
        return DataType(name), pos
    args: list[DataType] = []
    pos += 1
    while True:
        arg, pos = _parse(text, pos)
        args.append(arg)
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos >= len(text):
            raise NativeLayoutError(f"unclosed type {text!r}")
        if text[pos] == ")":
            return DataType(name, tuple(args)), pos + 1
        if text[pos] != ",":
            raise NativeLayoutError(f"unexpected {text[pos]!r} in type {text!r}")
        pos += 1


def _literal(text: str, pos: int) -> tuple[DataType, int]:
    start = pos
    if text[pos] == "'":
        pos += 1
        while pos < len(text) and text[pos] != "'":
            pos += 2 if text[pos] == "\\" else 1
        pos += 1
    else:
        pos += 1
        while pos < len(text) and text[pos] not in ",)":
            pos += 1
    # An enum's `'name' = 1` runs up to the next comma or bracket.
    while pos < len(text) and text[pos] not in ",)":
        pos += 1
    return DataType("", (), text[start:pos].strip()), pos


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise NativeLayoutError("truncated Native block")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def uint64(self) -> int:
        self.need(8)
        (value,) = _UINT64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        size = self.varint()
        self.need(size)
        start = self.pos
        self.pos += size
        return self.data[start : self.pos]

    def skip(self, size: int) -> None:
        self.need(size)
        self.pos += size

    def need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise NativeLayoutError("truncated Native block")


def _skip_prefix(reader: _Reader, kind: DataType) -> None:
    """Bulk-state prefixes come before any data: LowCardinality's key version."""
    if kind.name == "LowCardinality":
        reader.uint64()
    else:
        for arg in kind.args:
            if arg.name:
                _skip_prefix(reader, arg)


_POINT: Final = DataType("Tuple", (DataType("Float64"), DataType("Float64")))
_RING: Final = DataType("Array", (_POINT,))
_POLYGON: Final = DataType("Array", (_RING,))
# Types written as another one's layout.
_ALIASES: Final = {
    "Point": _POINT,
    "Ring": _RING,
    "LineString": _RING,
    "Polygon": _POLYGON,
    "MultiLineString": _POLYGON,
    "MultiPolygon": DataType("Array", (_POLYGON,)),
}


def _skip_data(reader: _Reader, kind: DataType, rows: int) -> None:
    name = kind.name
    if name in _ALIASES:
        kind = _ALIASES[name]
        name = kind.name
    elif name == "SimpleAggregateFunction":
        kind = kind.args[-1]
        name = kind.name
    size = _FIXED.get(name) or (8 if name.startswith("Interval") else None)
    if size is not None:
        reader.skip(size * rows)
    elif name == "String":
        for _ in range(rows):
            reader.skip(reader.varint())
    elif name == "FixedString":
        reader.skip(int(kind.args[0].literal) * rows)
    elif name == "Decimal":
        precision = int(kind.args[0].literal)
        width = 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
        reader.skip(width * rows)
    elif name == "Nullable":
        reader.skip(rows)
        _skip_data(reader, kind.args[0], rows)
    elif name in {"Array", "Map"}:
        total = 0
        for _ in range(rows):
            total = reader.uint64()
        inner = kind.args[0] if name == "Array" else DataType("Tuple", kind.args)
        _skip_data(reader, inner, total)
    elif name == "Tuple":
        for element in kind.args:
            _skip_data(reader, element, rows)
    elif name == "LowCardinality":
        if rows == 0:
            return
        flags = reader.uint64()
        index_width = _LOW_CARDINALITY_INDEX[flags & 0xFF]
        if not flags & _HAS_ADDITIONAL_KEYS:
            raise NativeLayoutError("LowCardinality without its keys in the block")
        keys = reader.uint64()
        inner = kind.args[0]
        _skip_data(reader, inner.args[0] if inner.name == "Nullable" else inner, keys)
        reader.skip(index_width * reader.uint64())
    else:
        raise NativeLayoutError(f"the Native layout of {name} is not known here")


def _nested_low_cardinality(kind: DataType, top: bool = True) -> bool:
    if kind.name == "LowCardinality" and not top:
        return True
    return any(_nested_low_cardinality(arg, False) for arg in kind.args if arg.name)


class NativeRewriter:
    """Rewrites chDB's Native blocks for a client revision, with the query's true types."""

    def __init__(self, revision: int, types: Sequence[str]) -> None:
        self.revision = min(revision, SERVER_REVISION)
        self._types = list(types)
        self._parsed: dict[str, DataType] = {}

    def rewrite(self, data: bytes) -> bytes:
        """Every block in `data` (whole blocks only), as the client's revision wants them."""
        reader = _Reader(data)
        out: list[bytes] = []
        while reader.pos < len(data):
            out.append(self._block(reader))
        return b"".join(out)

    def _block(self, reader: _Reader) -> bytes:
        start = reader.pos
        columns = reader.varint()
        rows = reader.varint()
        out = [_BLOCK_INFO] if self.revision >= WITH_BLOCK_INFO else []
        out.append(reader.data[start : reader.pos])
        for index in range(columns):
            head = reader.pos
            reader.string()  # the name
            name_end = reader.pos
            written = reader.string().decode()
            kind = self._type(written)
            data_start = reader.pos
            _skip_prefix(reader, kind)
            _skip_data(reader, kind, rows)
            type_name = written
            true = self._types[index] if index < len(self._types) else written
            if self.revision >= WITH_TIME_ZONE and written == "DateTime" and true != written:
                type_name = true
            out.append(reader.data[head:name_end])
            encoded = type_name.encode()
            out.append(_varint(len(encoded)) + encoded)
            if self.revision >= WITH_CUSTOM_SERIALIZATION:
                out.append(b"\x00")
            out.append(reader.data[data_start : reader.pos])
        return b"".join(out)

    def _type(self, name: str) -> DataType:
        parsed = self._parsed.get(name)
        if parsed is None:
            parsed = self._parsed[name] = parse_type(name)
            if _nested_low_cardinality(parsed):
                raise NativeLayoutError(f"LowCardinality inside {name} is not walked here")
        return parsed


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
