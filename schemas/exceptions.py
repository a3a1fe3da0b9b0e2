"""Errors raised by the event contracts: one root, one class per direction."""

from __future__ import annotations

from enum import StrEnum

from safeloop import SafeloopError


class DecodeReason(StrEnum):
    """Why bytes could not become an event; stable values for dead letters and metrics."""

    BAD_MARKER = "bad_marker"
    UNKNOWN_FINGERPRINT = "unknown_fingerprint"
    MALFORMED_BODY = "malformed_body"
    INVALID_FIELD = "invalid_field"


class SchemaError(SafeloopError):
    """Root of every error about the event contracts."""


class DecodeError(SchemaError):
    """Bytes that are not a valid event of the expected type; `reason` says which way."""

    def __init__(self, reason: DecodeReason, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        # The offending field, when one field is to blame (validation, enum resolution).
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments break the default pickling of exceptions (process pools).
        return (_rebuild_decode_error, (self.reason, self.message, self.field))


class EncodeError(SchemaError):
    """An event that cannot be encoded under its schema (wrong type, out-of-range value)."""


def _rebuild_decode_error(reason: DecodeReason, message: str, field: str | None) -> DecodeError:
    return DecodeError(reason, message, field=field)
