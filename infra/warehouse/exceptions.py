"""Embedded endpoint errors as ClickHouse's HTTP interface reports them: code, text, status."""

from __future__ import annotations

import re
from typing import Final

from safeloop.infra.exceptions import InfraError

# Error codes used by the endpoint itself (numbers as in ClickHouse's ErrorCodes.cpp).
SYNTAX_ERROR: Final = 62
UNKNOWN_COMPRESSION_METHOD: Final = 89
UNKNOWN_SETTING: Final = 115
READONLY: Final = 164
QUERY_IS_TOO_LARGE: Final = 229
CANNOT_DECOMPRESS: Final = 271
SESSION_NOT_FOUND: Final = 372
SESSION_IS_LOCKED: Final = 373
INVALID_SESSION_TIMEOUT: Final = 374
HTTP_LENGTH_REQUIRED: Final = 381
QUERY_WAS_CANCELLED: Final = 394
NOT_IMPLEMENTED: Final = 48
BAD_ARGUMENTS: Final = 36
AUTHENTICATION_FAILED: Final = 516
UNKNOWN_EXCEPTION: Final = 1002

_NAMES: Final = {
    SYNTAX_ERROR: "SYNTAX_ERROR",
    UNKNOWN_COMPRESSION_METHOD: "UNKNOWN_COMPRESSION_METHOD",
    UNKNOWN_SETTING: "UNKNOWN_SETTING",
    READONLY: "READONLY",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    SESSION_NOT_FOUND: "SESSION_NOT_FOUND",
    SESSION_IS_LOCKED: "SESSION_IS_LOCKED",
    INVALID_SESSION_TIMEOUT: "INVALID_SESSION_TIMEOUT",
    HTTP_LENGTH_REQUIRED: "HTTP_LENGTH_REQUIRED",
    QUERY_WAS_CANCELLED: "QUERY_WAS_CANCELLED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
}

# HTTP status per error code, as ClickHouse's exceptionCodeToHTTPStatus maps them; the rest is 500.
_UNAUTHORIZED = {194}
_FORBIDDEN = {192, 193, 497, 512, 516}
_BAD_REQUEST = {
    *(6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168, 223, 321, 376),
    *(427, 441, 675, 676),
}
_NOT_FOUND = {46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511}
_STATUS_BY_CODE: Final = {
    **dict.fromkeys(_UNAUTHORIZED, 401),
    **dict.fromkeys(_FORBIDDEN, 403),
    **dict.fromkeys(_BAD_REQUEST, 400),
    **dict.fromkeys(_NOT_FOUND, 404),
    229: 413,
    48: 501,
    209: 503,
    76: 503,
    439: 503,
    381: 411,
    159: 408,
    779: 415,
}

_CODE_RE = re.compile(r"Code:\s*(\d+)\.")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version [^)]*\))?\s*$")
_VERSION_RE = re.compile(r"\s*\(version [^)]*\)\s*$")


class ServerError(InfraError):
    """A query failed; carries the ClickHouse error code and the full `Code: N. DB::...` text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    @property
    def name(self) -> str:
        match = _NAME_RE.search(self.text)
        return match.group(1) if match else _NAMES.get(self.code, "")


class NativeLayoutError(InfraError):
    """A Native result whose layout the endpoint cannot walk (native.py); answered as
    NOT_IMPLEMENTED rather than sent in a form the client would misread."""


def server_error(code: int, message: str) -> ServerError:
    """Build an error raised by the endpoint itself, worded like ClickHouse's own."""
    name = _NAMES.get(code, "UNKNOWN_EXCEPTION")
    return ServerError(code, f"Code: {code}. DB::Exception: {message}. ({name})")


def from_engine_message(message: str) -> ServerError:
    """Parse an error text raised by chDB into its code and the `Code: N. ...` part."""
    start = message.find("Code: ")
    text = message[start:].strip() if start >= 0 else message.strip()
    match = _CODE_RE.match(text)
    if match is None:
        return server_error(UNKNOWN_EXCEPTION, text or "Unknown error in the embedded engine")
    return ServerError(int(match.group(1)), text)


def http_status(code: int) -> int:
    """The HTTP status the ClickHouse server answers with for an error code."""
    return _STATUS_BY_CODE.get(code, 500)


def error_body(error: ServerError, version: str) -> bytes:
    """The body of an error response: the exception text, version trailer, newline."""
    text = _VERSION_RE.sub("", error.text)
    return f"{text} (version {version})\n".encode()


def exception_block(error: ServerError, tag: str, version: str) -> bytes:
    """The marker block ClickHouse writes when a query fails after the response has started.

    Layout (server 25.11+), CRLF as `|`:
    `__exception__|<tag>|<message>\\n<length> <tag>|__exception__|`.
    """
    message = error_body(error, version)
    return (
        b"__exception__\r\n"
        + tag.encode()
        + b"\r\n"
        + message
        + f"{len(message)} {tag}\r\n__exception__\r\n".encode()
    )
