"""Just enough SQL lexing to route a request: where an INSERT's data starts, the output format."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

_SPACE = frozenset(b" \t\r\n\f\v")
_OPEN = frozenset(b"([{")
_CLOSE = frozenset(b")]}")
_QUOTES = frozenset(b"'\"`")

RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "WATCH"}
)
STREAMABLE_KEYWORDS = frozenset({"SELECT", "WITH"})
# Words that start the statement a WITH clause belongs to.
_STATEMENTS = frozenset({"SELECT", "INSERT"})
READ_ONLY_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "SET", "USE"}
)


class Kind(Enum):
    WORD = "word"
    QUOTED = "quoted"  # 'string', "identifier" or `identifier`
    PUNCT = "punct"


@dataclass(frozen=True)
class Token:
    kind: Kind
    start: int
    end: int
    depth: int  # bracket nesting level at the token

    def word(self, text: bytes) -> str:
        return text[self.start : self.end].decode("utf-8", "replace").upper()


class _IncompleteError(Exception):
    """The text ends inside a token: more bytes are needed to decide."""


@dataclass(frozen=True)
class InsertSplit:
    """An INSERT carrying data: the statement without its FORMAT clause, the format, the data."""

    statement: str
    format: str
    data_offset: int


class Verdict(Enum):
    NOT_INSERT = "not an INSERT with inline data"
    NEED_MORE = "need more text"


def _is_word_byte(byte: int) -> bool:
    return byte >= 0x80 or byte in {0x5F, 0x24} or chr(byte).isalnum()


def _skip_comment(text: bytes, pos: int) -> int | None:
    """End of a comment starting at `pos`, or None if no comment starts there."""
    if text.startswith(b"--", pos) or text.startswith(b"#", pos):
        end = text.find(b"\n", pos)
        if end < 0:
            raise _IncompleteError
        return end + 1
    if text.startswith(b"/*", pos):
        depth, i = 0, pos
        while i < len(text) - 1:
            if text.startswith(b"/*", i):
                depth, i = depth + 1, i + 2
            elif text.startswith(b"*/", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    return i
            else:
                i += 1
        raise _IncompleteError
    return None


def _quoted_end(text: bytes, pos: int) -> int:
    quote = text[pos]
    i = pos + 1
    while i < len(text):
        byte = text[i]
        if byte == 0x5C:  # backslash escape
            i += 2
            continue
        if byte == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise _IncompleteError


def tokens(text: bytes, complete: bool = True) -> Iterator[Token]:
    """Lex `text`; with complete=False a token touching the end raises `_IncompleteError`."""
    pos, depth, size = 0, 0, len(text)
    while pos < size:
        byte = text[pos]
        if byte in _SPACE:
            pos += 1
            continue
        comment_end = _skip_comment(text, pos)
        if comment_end is not None:
            pos = comment_end
            continue
        start = pos
        if byte in _QUOTES:
            pos = _quoted_end(text, pos)
            kind = Kind.QUOTED
        elif _is_word_byte(byte):
            while pos < size and _is_word_byte(text[pos]):
                pos += 1
            kind = Kind.WORD
        else:
            pos += 1
            kind = Kind.PUNCT
            if byte in _CLOSE:
                depth = max(depth - 1, 0)
        if pos >= size and not complete:
            raise _IncompleteError
        yield Token(kind, start, pos, depth)
        if byte in _OPEN:
            depth += 1


def split_insert(head: bytes, complete: bool) -> InsertSplit | Verdict:
    """Find where an INSERT's inline data starts (after `FORMAT name` or `VALUES`).

    `head` is the front of the query stream; `complete` says it is the whole of it.
    """
    try:
        return _split_insert(head, complete)
    except _IncompleteError:
        return Verdict.NOT_INSERT if complete else Verdict.NEED_MORE


def _split_insert(head: bytes, complete: bool) -> InsertSplit | Verdict:
    lexed = tokens(head, complete)
    first = next(lexed, None)
    if first is not None and first.kind is Kind.WORD and first.word(head) == "WITH":
        # `WITH … INSERT INTO t FORMAT f` + data: the INSERT is the first statement keyword
        # at depth 0 (a SELECT there first makes it a query).
        first = _statement_after_with(head, lexed)
    if first is None or first.kind is not Kind.WORD or first.word(head) != "INSERT":
        return Verdict.NOT_INSERT if first is not None or complete else Verdict.NEED_MORE
    for token in lexed:
        if token.kind is not Kind.WORD or token.depth:
            continue
        keyword = token.word(head)
        if keyword == "INFILE":
            return Verdict.NOT_INSERT
        if keyword == "VALUES":
            data = _skip_spaces(head, token.end)
            return InsertSplit(_text(head[: token.start]), "Values", data)
        if keyword == "FORMAT":
            name = next(lexed, None)
            if name is None:
                break
            start = _data_start(head, name.end, complete)
            if start is None:
                raise _IncompleteError
            return InsertSplit(_text(head[: token.start]), _name(head, name), start)
    return Verdict.NOT_INSERT if complete else Verdict.NEED_MORE


def _statement_after_with(head: bytes, lexed: Iterator[Token]) -> Token | None:
    for token in lexed:
        if token.kind is Kind.WORD and not token.depth and token.word(head) in _STATEMENTS:
            return token
    return None


def _data_start(head: bytes, pos: int, complete: bool) -> int | None:
    """ClickHouse's rule: data starts after the first newline, else after the whitespace."""
    i = pos
    while i < len(head) and head[i] in b" \t\r\f\v":
        i += 1
    if i < len(head) and head[i] == 0x0A:
        return i + 1
    if i >= len(head) and not complete:
        return None
    return i


def _skip_spaces(head: bytes, pos: int) -> int:
    while pos < len(head) and head[pos] in _SPACE:
        pos += 1
    return pos


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip()


def _name(text: bytes, token: Token) -> str:
    raw = text[token.start : token.end]
    if token.kind is Kind.QUOTED:
        raw = raw[1:-1]
    return raw.decode("utf-8", "replace")


def first_keyword(sql: bytes) -> str:
    """The statement's leading keyword, upper-cased ("" if none), skipping `(`."""
    try:
        lexed = tokens(sql)
        for token in lexed:
            if token.kind is Kind.WORD:
                word = token.word(sql)
                if word == "WITH":
                    # `WITH … INSERT …` is an INSERT; `WITH … SELECT …` stays a WITH query.
                    statement = _statement_after_with(sql, lexed)
                    if statement is not None and statement.word(sql) == "INSERT":
                        return "INSERT"
                return word
            if sql[token.start] != 0x28:  # "("
                return ""
    except _IncompleteError:
        return ""
    return ""


def output_format(sql: bytes) -> str | None:
    """The format named by a trailing `FORMAT name` clause, if any."""
    try:
        lexed = [t for t in tokens(sql) if t.depth == 0]
    except _IncompleteError:
        return None
    for i in range(len(lexed) - 2, -1, -1):
        token = lexed[i]
        if token.kind is not Kind.WORD or token.word(sql) != "FORMAT":
            continue
        name = lexed[i + 1]
        if name.kind is Kind.PUNCT or not _ends_statement(sql, lexed[i + 2 :]):
            continue
        return _name(sql, name)
    return None


def without_format(sql: bytes) -> bytes:
    """The statement without its trailing `FORMAT name` clause (and a final `;`)."""
    try:
        lexed = [t for t in tokens(sql) if t.depth == 0]
    except _IncompleteError:
        return sql
    if lexed and sql[lexed[-1].start : lexed[-1].end] == b";":
        sql, lexed = sql[: lexed[-1].start], lexed[:-1]
    for i in range(len(lexed) - 2, -1, -1):
        token = lexed[i]
        if token.kind is not Kind.WORD or token.word(sql) != "FORMAT":
            continue
        name = lexed[i + 1]
        if name.kind is Kind.PUNCT or not _ends_statement(sql, lexed[i + 2 :]):
            continue
        return sql[: token.start] + b" " + sql[name.end :]
    return sql


def _ends_statement(sql: bytes, rest: list[Token]) -> bool:
    if not rest:
        return True
    head = rest[0]
    if head.kind is Kind.WORD and head.word(sql) == "SETTINGS":
        return True
    return sql[head.start : head.end] == b";" and len(rest) == 1


def assigned_settings(sql: bytes) -> set[str]:
    """Names a `SET a = 1, b = 2` statement assigns."""
    try:
        lexed = list(tokens(sql))
    except _IncompleteError:
        return set()
    return {
        _name(sql, token).lower()
        for token, after in itertools.pairwise(lexed)
        if token.kind is not Kind.PUNCT and sql[after.start : after.end] == b"="
    }
