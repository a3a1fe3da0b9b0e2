"""Errors raised by the publishing clients (prediction logger, outcome publisher, ingest)."""

from __future__ import annotations

from safeloop import SafeloopError


class PublishingError(SafeloopError):
    """Root of every error raised by `services.publishing`."""


class InputFileError(PublishingError):
    """A label file that cannot be read: unknown format, unreadable, or not what it claims."""


class CheckpointError(PublishingError):
    """A resume checkpoint that does not belong to the file being published."""


class LoggerClosedError(PublishingError):
    """`PredictionLogger.log` called after `close()`."""


class IngestBindError(PublishingError):
    """The HTTP ingest was asked to listen beyond loopback without a token to check."""


class InvalidRecordError(PublishingError):
    """One input record that is not a valid event; becomes a `Rejection` in the result."""

    def __init__(self, field: str, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.problem = problem
        self.detail = detail
