"""Known Avro writer schemas, looked up by their CRC-64-AVRO fingerprint.

The current schemas are `avro/*.avsc`; every schema ever written to a topic stays in
`avro/history/` so old bytes stay readable. Decoding uses a copy with `logicalType` removed:
Parsing Canonical Form drops logical types anyway, so the fingerprint and the wire bytes are
unchanged, and timestamps stay `int` milliseconds instead of round-tripping through `datetime`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fingerprint_hex
from fastavro.schema import to_parsing_canonical_form

from safeloop.schemas.exceptions import SchemaError

AVRO_DIR = Path(__file__).parent / "avro"
HISTORY_DIR = AVRO_DIR / "history"

# A JSON schema as loaded from an .avsc file.
JsonSchema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """One schema version: its full name, fingerprint, source form and hot-path form."""

    name: str
    fingerprint: bytes
    source: JsonSchema
    # fastavro-parsed, logical types removed; what encode and decode hand to fastavro.
    parsed: JsonSchema


def fingerprint(schema: JsonSchema | str) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form."""
    # fastavro prints the Rabin fingerprint's bytes low byte first: the wire order already.
    return bytes.fromhex(_fingerprint_hex(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def load_avsc(path: Path) -> JsonSchema:
    """Read one .avsc file; it must hold a named record."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"cannot load Avro schema {path}: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"{path} is not an Avro record schema")
    return schema


def full_name(schema: JsonSchema) -> str:
    """The record's namespace-qualified name, e.g. `safeloop.v1.PredictionEvent`."""
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


class SchemaRegistry:
    """Writer schemas by fingerprint, plus the current (reader) schema per record name."""

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, WriterSchema] = {}
        self._current: dict[str, WriterSchema] = {}

    def register(self, schema: JsonSchema, *, current: bool = False) -> WriterSchema:
        """Make a writer schema known; `current=True` also makes it the reader schema."""
        try:
            entry = WriterSchema(
                name=full_name(schema),
                fingerprint=fingerprint(schema),
                source=schema,
                parsed=cast(JsonSchema, parse_schema(_without_logical_types(schema))),
            )
        except Exception as exc:  # fastavro raises several unrelated types for bad schemas
            raise SchemaError(f"invalid Avro schema {schema.get('name')!r}: {exc}") from exc
        self._by_fingerprint.setdefault(entry.fingerprint, entry)
        if current:
            self._current[entry.name] = entry
        return entry

    def get(self, fingerprint: bytes) -> WriterSchema | None:
        """The writer schema with this fingerprint, or None if it was never registered."""
        return self._by_fingerprint.get(fingerprint)

    def current(self, name: str) -> WriterSchema:
        """The schema this code writes and reads as, by full record name."""
        try:
            return self._current[name]
        except KeyError:
            raise SchemaError(f"no current Avro schema named {name!r}") from None

    def versions(self, name: str) -> list[WriterSchema]:
        """Every known version of one record, in registration order."""
        return [entry for entry in self._by_fingerprint.values() if entry.name == name]

    @classmethod
    def from_files(cls, current: Iterable[Path], history: Iterable[Path] = ()) -> SchemaRegistry:
        """Build a registry from .avsc files; the `current` ones become reader schemas."""
        registry = cls()
        for path in current:
            registry.register(load_avsc(path), current=True)
        for path in history:
            registry.register(load_avsc(path))
        return registry


@cache
def default_registry() -> SchemaRegistry:
    """The registry of the schemas shipped in `schemas/avro` (loaded once per process)."""
    return SchemaRegistry.from_files(
        sorted(AVRO_DIR.glob("*.avsc")), sorted(HISTORY_DIR.glob("*.avsc"))
    )
