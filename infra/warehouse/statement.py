"""Reading the statement off the front of a request: an INSERT with data, or a whole query."""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.infra.warehouse import exceptions, sql
from safeloop.infra.warehouse.body import QueryStream

HEAD_SIZE = 64 * 1024
MAX_QUERY_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class InsertPlan:
    """An INSERT whose data follows in the stream, in `format`."""

    statement: str
    format: str


@dataclass(frozen=True)
class QueryPlan:
    """Any other statement, read whole."""

    text: bytes
    keyword: str

    @property
    def has_result(self) -> bool:
        return self.keyword in sql.RESULT_KEYWORDS

    @property
    def streamable(self) -> bool:
        """chDB streams the output of SELECT queries only."""
        return self.keyword in sql.STREAMABLE_KEYWORDS

    @property
    def read_only(self) -> bool:
        return self.keyword in sql.READ_ONLY_KEYWORDS


def read_statement(stream: QueryStream, max_size: int = MAX_QUERY_SIZE) -> InsertPlan | QueryPlan:
    """Read just enough of `stream` to plan it; an INSERT's data is left in the stream."""
    head, complete = stream.read_upto(HEAD_SIZE)
    split = sql.split_insert(head, complete)
    while split is sql.Verdict.NEED_MORE and len(head) < max_size:
        more, complete = stream.read_upto(HEAD_SIZE)
        head += more
        split = sql.split_insert(head, complete)
    if isinstance(split, sql.InsertSplit):
        stream.unread(head[split.data_offset :])
        return InsertPlan(split.statement, split.format)
    text = head if complete else head + stream.read_all(max(max_size - len(head), 0))
    if not text.strip():
        raise exceptions.server_error(exceptions.SYNTAX_ERROR, "Empty query")
    return QueryPlan(text, sql.first_keyword(text))
