"""Errors raised by `services.guard`."""

from __future__ import annotations

from safeloop import SafeloopError


class GuardError(SafeloopError):
    """Root of every error raised by `services.guard`."""


class PolicyError(GuardError, ValueError):
    """A guard policy threshold is out of range."""
