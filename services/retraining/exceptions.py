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


class TrainerLoadError(RetrainingError, ValueError):
    """The configured training entry point cannot be imported or is not callable."""


class CandidateError(RetrainingError):
    """A candidate could not be trained, evaluated or registered; the message says why."""


class RunTransitionError(RetrainingError):
    """A move the run's stage does not allow (e.g. approving a run that is not waiting)."""
