"""Joining per-block outputs into one valid stream, for formats where that is possible.

chDB encodes each block of a streamed result as a complete output in the requested format. For
header-less formats the blocks simply concatenate; for formats with a header (names, types) the
header of every block after the first is dropped. Other formats (JSON, Arrow, Parquet, Pretty...)
have a global prefix or suffix and are produced in one piece instead.
"""

from __future__ import annotations

from collections.abc import Callable

Framer = Callable[[bytes, bool], bytes]

_PLAIN = frozenset(
    {
        "native",
        "rowbinary",
        "tabseparated",
        "tsv",
        "tabseparatedraw",
        "tsvraw",
        "csv",
        "jsoneachrow",
        "jsonlines",
        "ndjson",
        "jsoncompacteachrow",
        "jsonstringseachrow",
        "jsoncompactstringseachrow",
        "lineasstring",
    }
)
_TEXT_HEADER_LINES = {
    "tabseparatedwithnames": 1,
    "tsvwithnames": 1,
    "csvwithnames": 1,
    "jsoncompacteachrowwithnames": 1,
    "tabseparatedwithnamesandtypes": 2,
    "tsvwithnamesandtypes": 2,
    "csvwithnamesandtypes": 2,
    "jsoncompacteachrowwithnamesandtypes": 2,
}
_BINARY_HEADER = {"rowbinarywithnames": False, "rowbinarywithnamesandtypes": True}


def framer_for(fmt: str) -> Framer | None:
    """How to join streamed blocks of `fmt`, or None if the format cannot be streamed."""
    key = fmt.lower()
    if key in _PLAIN:
        return _keep
    if key in _TEXT_HEADER_LINES:
        lines = _TEXT_HEADER_LINES[key]
        return lambda chunk, first: chunk if first else _drop_lines(chunk, lines)
    if key in _BINARY_HEADER:
        with_types = _BINARY_HEADER[key]
        return lambda chunk, first: chunk if first else chunk[_binary_header(chunk, with_types) :]
    return None


def has_header(fmt: str) -> bool:
    """True for formats whose output is not empty even without rows."""
    key = fmt.lower()
    return key in _TEXT_HEADER_LINES or key in _BINARY_HEADER


def _keep(chunk: bytes, first: bool) -> bytes:
    return chunk


def _drop_lines(chunk: bytes, lines: int) -> bytes:
    pos = 0
    for _ in range(lines):
        pos = chunk.find(b"\n", pos) + 1
        if pos == 0:
            return b""
    return chunk[pos:]


def _binary_header(chunk: bytes, with_types: bool) -> int:
    """Length of a RowBinaryWithNames[AndTypes] header: count, then length-prefixed strings."""
    count, pos = _leb128(chunk, 0)
    for _ in range(count * (2 if with_types else 1)):
        size, pos = _leb128(chunk, pos)
        pos += size
    return pos


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
