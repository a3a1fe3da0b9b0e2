"""Avro bodies of flat records (the hot path's events), read and written by a mypyc-compiled loop.

fastavro walks a schema generically and spends ~15 us on a 186-byte PredictionEvent; compiled
by `make native`, this module's loop over a `FlatPlan` takes ~4 us. A plan covers records whose
fields are strings, longs, doubles, booleans, enums, maps and arrays of those, and
`["null", X]` unions; `plan_for` returns None for any other schema, which fastavro then handles.

Reading is strict: truncated or trailing bytes, out-of-range enum or union indexes, negative
lengths and varints past 64 bits raise ValueError (the codec turns it into a DecodeError). Writing
raises TypeError or ValueError on a value that does not fit; the codec then lets fastavro encode
it, so the bytes (or the error) are fastavro's. Uncompiled, the module is as slow as fastavro and
the codec does not use it (`compiled()`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Final

# Field kinds: a value's Avro type, or a ["null", type] union of it (OPTIONAL added).
STRING: Final = 1
LONG: Final = 2
DOUBLE: Final = 3
BOOLEAN: Final = 4
ENUM: Final = 5
MAP_OF_DOUBLE: Final = 6
MAP_OF_STRING: Final = 7
ARRAY_OF_DOUBLE: Final = 8
OPTIONAL: Final = 16

_PRIMITIVES: Final = {
    "string": STRING,
    "long": LONG,
    "int": LONG,
    "double": DOUBLE,
    "boolean": BOOLEAN,
}
_MAPS: Final = {"double": MAP_OF_DOUBLE, "string": MAP_OF_STRING}
_DOUBLE: Final = struct.Struct("<d")
_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1


class FlatPlan:
    """A flat record schema as lists: field names, kinds and each enum field's symbols."""

    def __init__(self, names: list[str], kinds: list[int], symbols: list[list[str]]) -> None:
        self.names = names
        self.kinds = kinds
        self.symbols = symbols
        self.symbol_index: list[dict[str, int]] = [
            {symbol: i for i, symbol in enumerate(field)} for field in symbols
        ]


class ObjectTarget:
    """What `read_object` builds: instances of `cls`, each field of the plan set through
    `slots[i]` (a slot's member descriptor, or None for a field the class does not keep), enum
    symbols turned into members by `enums[i]` (None: kept as read)."""

    def __init__(self, cls: type, slots: list[Any], enums: list[dict[str, Any] | None]) -> None:
        self.cls = cls
        self.slots = slots
        self.enums = enums


def compiled() -> bool:
    """Whether this module runs compiled, from a build no older than its source."""
    here = Path(__file__)
    if here.suffix == ".py":
        return False
    return build_is_current(here, here.with_name(__name__.rsplit(".", 1)[-1] + ".py"))


def build_is_current(built: Path, source: Path) -> bool:
    """Whether the library `built` is no older than the `source` it was built from."""
    try:
        return built.stat().st_mtime >= source.stat().st_mtime
    except OSError:
        return True  # installed without its source: the build is all there is


def plan_for(schema: Any) -> FlatPlan | None:
    """The plan of a parsed record schema, or None if a field's type is not covered."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    names: list[str] = []
    kinds: list[int] = []
    symbols: list[list[str]] = []
    for field in schema["fields"]:
        kind, field_symbols = _kind_of(field["type"])
        if kind == 0:
            return None
        names.append(str(field["name"]))
        kinds.append(kind)
        symbols.append(field_symbols)
    return FlatPlan(names, kinds, symbols)


def _kind_of(node: Any) -> tuple[int, list[str]]:
    if isinstance(node, list):
        if len(node) == 2 and node[0] == "null":
            kind, symbols = _kind_of(node[1])
            return (kind | OPTIONAL, symbols) if kind != 0 and kind < OPTIONAL else (0, [])
        return 0, []
    if isinstance(node, dict):
        kind_name = node.get("type")
        if kind_name == "enum":
            return ENUM, [str(symbol) for symbol in node["symbols"]]
        if kind_name == "map" and isinstance(node.get("values"), str):
            return _MAPS.get(node["values"], 0), []
        if kind_name == "array" and node.get("items") == "double":
            return ARRAY_OF_DOUBLE, []
        if isinstance(kind_name, str) and len(node) == 1:
            return _PRIMITIVES.get(kind_name, 0), []
        return 0, []
    if isinstance(node, str):
        return _PRIMITIVES.get(node, 0), []
    return 0, []


# -- reading ------------------------------------------------------------------------------------


def read(data: bytes, pos: int, plan: FlatPlan) -> dict[str, Any]:
    """The record whose body fills `data` from `pos` to its end."""
    record: dict[str, Any] = {}
    names = plan.names
    kinds = plan.kinds
    end = len(data)
    for i in range(len(names)):
        kind = kinds[i]
        if kind >= OPTIONAL:
            branch, pos = _read_long(data, pos)
            if branch == 0:
                record[names[i]] = None
                continue
            if branch != 1:
                raise ValueError(f"union index {branch} of {names[i]} is out of range")
            kind -= OPTIONAL
        value: Any
        if kind == STRING:
            value, pos = _read_string(data, pos)
        elif kind == LONG:
            value, pos = _read_long(data, pos)
        elif kind == DOUBLE:
            value, pos = _read_double(data, pos)
        elif kind == ENUM:
            index, pos = _read_long(data, pos)
            field_symbols = plan.symbols[i]
            if index < 0 or index >= len(field_symbols):
                raise ValueError(f"enum index {index} of {names[i]} is out of range")
            value = field_symbols[index]
        elif kind == MAP_OF_DOUBLE:
            value, pos = _read_map_of_double(data, pos)
        elif kind == MAP_OF_STRING:
            value, pos = _read_map_of_string(data, pos)
        elif kind == ARRAY_OF_DOUBLE:
            value, pos = _read_array_of_double(data, pos)
        else:  # BOOLEAN
            if pos >= end:
                raise ValueError("truncated boolean")
            flag = data[pos]
            if flag > 1:
                raise ValueError(f"boolean byte {flag} of {names[i]}")
            value = flag == 1
            pos += 1
        record[names[i]] = value
    if pos != end:
        raise ValueError(f"{end - pos} unexpected bytes after the record")
    return record


def read_object(data: bytes, pos: int, plan: FlatPlan, target: ObjectTarget) -> Any:
    """`read`, then a new instance of `target.cls` set slot by slot; KeyError for an enum
    symbol the class's enum does not have."""
    record = read(data, pos, plan)
    obj: Any = object.__new__(target.cls)
    for i, name in enumerate(plan.names):
        value = record[name]
        members = target.enums[i]
        if members is not None and value is not None:
            value = members[value]
        slot = target.slots[i]
        if slot is not None:
            slot.__set__(obj, value)
    return obj


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    end = len(data)
    if pos >= end:
        raise ValueError("truncated varint")
    byte = data[pos]
    pos += 1
    value = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise ValueError("varint past 64 bits")
        value |= (byte & 0x7F) << shift
        shift += 7
    return (value >> 1) ^ -(value & 1), pos


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _read_long(data, pos)
    stop = pos + size
    if size < 0 or stop > len(data):
        raise ValueError(f"string of {size} bytes at {pos} overruns the body")
    return data[pos:stop].decode("utf-8"), stop


def _read_double(data: bytes, pos: int) -> tuple[float, int]:
    if pos + 8 > len(data):
        raise ValueError("truncated double")
    value: float = _DOUBLE.unpack_from(data, pos)[0]
    return value, pos + 8


def _block_count(data: bytes, pos: int) -> tuple[int, int]:
    """The next block's item count; a negative count is followed by the block's byte size."""
    count, pos = _read_long(data, pos)
    if count < 0:
        count = -count
        _, pos = _read_long(data, pos)
    return count, pos


# One reader (and writer) per item type rather than one taking a reader function: mypyc
# compiles each loop with its item type known, which a function argument would box.
def _read_map_of_double(data: bytes, pos: int) -> tuple[dict[str, float], int]:
    items: dict[str, float] = {}
    count, pos = _block_count(data, pos)
    while count != 0:
        for _ in range(count):
            key, pos = _read_string(data, pos)
            items[key], pos = _read_double(data, pos)
        count, pos = _block_count(data, pos)
    return items, pos


def _read_map_of_string(data: bytes, pos: int) -> tuple[dict[str, str], int]:
    items: dict[str, str] = {}
    count, pos = _block_count(data, pos)
    while count != 0:
        for _ in range(count):
            key, pos = _read_string(data, pos)
            items[key], pos = _read_string(data, pos)
        count, pos = _block_count(data, pos)
    return items, pos


def _read_array_of_double(data: bytes, pos: int) -> tuple[list[float], int]:
    items: list[float] = []
    count, pos = _block_count(data, pos)
    while count != 0:
        for _ in range(count):
            value, pos = _read_double(data, pos)
            items.append(value)
        count, pos = _block_count(data, pos)
    return items, pos


# -- writing ------------------------------------------------------------------------------------


def write(record: dict[str, Any], plan: FlatPlan, header: bytes) -> bytes:
    """`header` and the body of `record` (a dict holding every field of the plan)."""
    out = bytearray(header)
    names = plan.names
    kinds = plan.kinds
    for i in range(len(names)):
        kind = kinds[i]
        value = record[names[i]]
        if kind >= OPTIONAL:
            if value is None:
                out.append(0)
                continue
            out.append(2)  # branch 1, zigzag-encoded
            kind -= OPTIONAL
        if kind == STRING:
            _write_string(out, value)
        elif kind == LONG:
            _write_long(out, value)
        elif kind == DOUBLE:
            _write_double(out, value)
        elif kind == ENUM:
            _write_long(out, plan.symbol_index[i][value])
        elif kind == MAP_OF_DOUBLE:
            _write_map_of_double(out, value)
        elif kind == MAP_OF_STRING:
            _write_map_of_string(out, value)
        elif kind == ARRAY_OF_DOUBLE:
            _write_array_of_double(out, value)
        else:  # BOOLEAN
            out.append(1 if _as_bool(value) else 0)
    return bytes(out)


def write_attributes(obj: object, plan: FlatPlan, header: bytes) -> bytes:
    """`write` of the plan's fields read as attributes of `obj` (a flat dataclass)."""
    return write({name: getattr(obj, name) for name in plan.names}, plan, header)


def _as_bool(value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a bool, got {type(value).__name__}")
    return value


def _write_long(out: bytearray, value: int) -> None:
    if value < _LONG_MIN or value > _LONG_MAX:
        raise ValueError(f"{value} does not fit a long")
    encoded = (value << 1) ^ (value >> 63)
    while encoded > 0x7F:
        out.append((encoded & 0x7F) | 0x80)
        encoded >>= 7
    out.append(encoded)


def _write_string(out: bytearray, value: str) -> None:
    encoded = value.encode("utf-8")
    _write_long(out, len(encoded))
    out += encoded


def _write_double(out: bytearray, value: float) -> None:
    out += _DOUBLE.pack(value)


def _write_map_of_double(out: bytearray, items: dict[str, float]) -> None:
    if items:
        _write_long(out, len(items))
        for key, value in items.items():
            _write_string(out, key)
            _write_double(out, value)
    out.append(0)


def _write_map_of_string(out: bytearray, items: dict[str, str]) -> None:
    if items:
        _write_long(out, len(items))
        for key, value in items.items():
            _write_string(out, key)
            _write_string(out, value)
    out.append(0)


def _write_array_of_double(out: bytearray, items: list[float]) -> None:
    if items:
        _write_long(out, len(items))
        for value in items:
            _write_double(out, value)
    out.append(0)
