"""Errors raised by `services.retraining`."""

from __future__ import annotations

from safeloop import SafeloopError


class RetrainingError(SafeloopError):
    """Root of every error raised by `services.retraining`."""


class RetrainingPolicyError(RetrainingError, ValueError):
    """A retraining threshold is out of range."""


class ExportError(RetrainingError, ValueError):
    """The labelled window cannot be exported as asked."""


class DecisionPublishError(RetrainingError):
    """Decisions did not reach Kafka or ClickHouse; the message says which and why."""
