"""What a request produced: the result stream plus the facts that go into response headers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
}
_BINARY = ("native", "rowbinary", "arrow", "parquet", "orc", "avro", "protobuf", "msgpack")


def content_type(fmt: str | None) -> str:
    """The Content-Type ClickHouse sends for an output format."""
    key = (fmt or "").lower()
    if key in _CONTENT_TYPES:
        return _CONTENT_TYPES[key]
    if key.startswith(_BINARY):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


@dataclass
class Reply:
    """A successful answer; `body` may still raise `ServerError` part way through."""

    query_id: str
    timezone: str
    format: str | None = None  # None: the statement has no result set (DDL, INSERT, SET...)
    summary: dict[str, str] = field(default_factory=dict)
    body: Iterator[bytes] = field(default_factory=lambda: iter(()))
    resources: ExitStack = field(default_factory=ExitStack)

    def close(self) -> None:
        """Release the connection, session and stream behind the reply; never raises."""
        try:
            self.resources.close()
        except Exception:
            log.warning("releasing a finished query %s failed", self.query_id, exc_info=True)
