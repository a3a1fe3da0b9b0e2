"""Errors raised by `services.retraining`."""

from __future__ import annotations


class RetrainingError(Exception):
    """Root of every error raised by `services.retraining`."""


class RetrainingPolicyError(RetrainingError, ValueError):
    """A retraining threshold is out of range."""


class ExportError(RetrainingError, ValueError):
    """The labelled window cannot be exported as asked."""
