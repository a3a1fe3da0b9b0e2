"""Errors raised by `services.metrics`."""

from __future__ import annotations

from safeloop import SafeloopError


class MetricsError(SafeloopError):
    """Root of every error raised by `services.metrics`."""


class InvalidInputError(MetricsError, ValueError):
    """Arrays of different lengths, labels that are not 0/1, or a bad parameter."""


class BaselineError(MetricsError, ValueError):
    """A training baseline is malformed or cannot be built from the given sample."""
