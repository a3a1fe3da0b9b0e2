"""Errors raised by the command line itself."""

from __future__ import annotations

from safeloop import SafeloopError


class CliError(SafeloopError):
    """Root of every error raised by `services.cli`."""


class UsageError(CliError):
    """Arguments that parse but make no sense (exit 2)."""
