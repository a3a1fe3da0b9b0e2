"""Request bodies: HTTP/1.1 transfer framing and content decoding, read as a stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from safeloop.infra.warehouse import exceptions
from safeloop.infra.warehouse.compression import Decoder

READ_SIZE = 1 << 20  # bytes per socket read: bounded memory however large a chunk is
_MAX_LINE = 4096


class ByteReader(Protocol):
    """A buffered binary input, such as a socket's `rfile`."""

    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


class RawBody(Protocol):
    """The bytes of a request body with transfer framing removed."""

    def read(self) -> bytes:
        """The next piece of the body; b"" once it is exhausted."""
        ...


class EmptyBody:
    def read(self) -> bytes:
        return b""


class LengthBody:
    """A body delimited by Content-Length."""

    def __init__(self, stream: ByteReader, length: int) -> None:
        self._stream = stream
        self._left = length

    def read(self) -> bytes:
        if self._left <= 0:
            return b""
        data = self._stream.read(min(self._left, READ_SIZE))
        if not data:
            raise _truncated()
        self._left -= len(data)
        return data


class ChunkedBody:
    """A body sent with `Transfer-Encoding: chunked`."""

    def __init__(self, stream: ByteReader) -> None:
        self._stream = stream
        self._left = 0  # bytes still to read from the current chunk
        self._done = False

    def read(self) -> bytes:
        if self._done:
            return b""
        if self._left == 0:
            size = self._next_size()
            if size == 0:
                self._skip_trailers()
                self._done = True
                return b""
            self._left = size
        data = self._stream.read(min(self._left, READ_SIZE))
        if not data:
            raise _truncated()
        self._left -= len(data)
        if self._left == 0:
            self._expect_crlf()
        return data

    def _next_size(self) -> int:
        line = self._stream.readline(_MAX_LINE)
        if not line:
            raise _truncated()
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise exceptions.server_error(
                exceptions.BAD_ARGUMENTS, f"Malformed chunk size line {line[:40]!r}"
            ) from exc

    def _expect_crlf(self) -> None:
        if self._stream.readline(_MAX_LINE).strip():
            raise exceptions.server_error(
                exceptions.BAD_ARGUMENTS, "Malformed chunked request body"
            )

    def _skip_trailers(self) -> None:
        while True:
            line = self._stream.readline(_MAX_LINE)
            if not line or not line.strip():
                return


def drain(body: RawBody) -> None:
    """Read what the client still sends, so the connection can carry the error response."""
    while body.read():
        pass


class QueryStream:
    """The query text followed by the request body, decoded: what ClickHouse parses as one.

    The `query` URL parameter comes first, then a newline, then the decoded body; an INSERT's
    data is whatever follows its statement.
    """

    def __init__(self, prefix: bytes, body: RawBody, decoder: Decoder) -> None:
        self._pending = prefix
        self._body = body
        self._decoder = decoder
        self._finished = False

    @property
    def raw(self) -> RawBody:
        return self._body

    def read(self) -> bytes:
        """The next decoded piece; b"" at the end."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while not self._finished:
            raw = self._body.read()
            if not raw:
                self._finished = True
                return self._decoder.finish()
            data = self._decoder.decode(raw)
            if data:
                return data
        return b""

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the stream (after peeking at the statement)."""
        self._pending = data + self._pending

    def read_upto(self, limit: int) -> tuple[bytes, bool]:
        """Up to `limit` bytes from the front (may overshoot by one piece); True if at the end."""
        parts: list[bytes] = []
        size = 0
        while size < limit:
            data = self.read()
            if not data:
                return b"".join(parts), True
            parts.append(data)
            size += len(data)
        return b"".join(parts), False

    def read_all(self, limit: int) -> bytes:
        """Everything left, refusing more than `limit` bytes."""
        data, at_end = self.read_upto(limit + 1)
        if not at_end or len(data) > limit:
            raise exceptions.server_error(
                exceptions.QUERY_IS_TOO_LARGE,
                f"The query is larger than the endpoint accepts ({limit} bytes); "
                "send data with an INSERT ... FORMAT statement instead",
            )
        return data

    def pieces(self) -> Iterator[bytes]:
        while data := self.read():
            yield data


def _truncated() -> exceptions.ServerError:
    return exceptions.server_error(
        exceptions.BAD_ARGUMENTS, "The request body ended before its announced length"
    )
