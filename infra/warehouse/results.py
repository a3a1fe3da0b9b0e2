"""What chDB hands back: statistics, result blocks pulled one by one, a running INSERT."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from safeloop.infra.warehouse import exceptions
from safeloop.infra.warehouse.exceptions import ServerError

log = logging.getLogger(__name__)


def translate(exc: Exception) -> ServerError:
    """A chDB failure as the ClickHouse error it carries."""
    if isinstance(exc, ServerError):
        return exc
    return exceptions.from_engine_message(str(exc))


@dataclass
class Stats:
    """What a statement did, in the terms of X-ClickHouse-Summary."""

    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    elapsed: float = 0.0

    def add_result(self, result: Any) -> None:
        self.written_rows += int(result.rows_written())
        self.written_bytes += int(result.bytes_written())
        self.read_rows += int(result.storage_rows_read())
        self.read_bytes += int(result.storage_bytes_read())
        self.result_rows += int(result.rows_read())
        self.result_bytes += int(result.bytes_read())
        self.elapsed += float(result.elapsed())

    def summary(self) -> dict[str, str]:
        return {
            "read_rows": str(self.read_rows),
            "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows),
            "written_bytes": str(self.written_bytes),
            "total_rows_to_read": str(self.read_rows),
            "result_rows": str(self.result_rows or self.written_rows),
            "result_bytes": str(self.result_bytes or self.written_bytes),
            "elapsed_ns": str(int(self.elapsed * 1e9)),
        }


class ResultStream:
    """Output blocks of a running query; `close()` cancels it if not drained."""

    def __init__(self, streaming: Any) -> None:
        self._streaming = streaming
        self.stats = Stats()
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        try:
            chunk = next(self._streaming)
        except StopIteration:
            self._done = True
            raise
        except Exception as exc:
            self._done = True
            raise translate(exc) from exc
        self.stats.add_result(chunk)
        data: bytes = chunk.bytes()
        return data

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._streaming.cancel()
        except Exception:
            log.debug("cancelling a chDB stream failed", exc_info=True)


class Inserter:
    """A running INSERT: `append` data, then `finish` (commit) or `cancel`."""

    def __init__(self, inserter: Any) -> None:
        self._inserter = inserter
        self._open = True

    def append(self, data: bytes) -> None:
        try:
            self._inserter.append(data)
        except Exception as exc:
            raise translate(exc) from exc

    def finish(self) -> Stats:
        self._open = False
        try:
            result = self._inserter.finish()
        except Exception as exc:
            raise translate(exc) from exc
        return Stats(
            written_rows=int(result.rows_written),
            written_bytes=int(result.bytes_written),
            elapsed=float(result.elapsed),
        )

    def cancel(self) -> None:
        if self._open:
            self._open = False
            try:
                self._inserter.cancel()
            except Exception:
                log.debug("cancelling a chDB insert failed", exc_info=True)
