"""Errors raised by the demo."""

from __future__ import annotations

from safeloop import SafeloopError


class DemoError(SafeloopError):
    """Root of every error raised by `services.demo`."""


class StackError(DemoError):
    """A demo service did not start or exited on its own; the message names its log file."""
