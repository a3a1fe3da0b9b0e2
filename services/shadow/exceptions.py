"""Errors raised by `services.shadow`."""

from __future__ import annotations

from safeloop import SafeloopError


class ShadowError(SafeloopError):
    """Root of every error raised by `services.shadow`."""


class ShadowPublishError(ShadowError):
    """Shadow answers could not be published; their source offsets stay uncommitted."""
