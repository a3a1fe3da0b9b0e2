"""Errors raised by `services.rollout`."""

from __future__ import annotations

from safeloop import SafeloopError


class RolloutError(SafeloopError):
    """Root of every error raised by `services.rollout`."""


class PlanError(RolloutError, ValueError):
    """A rollout plan is inconsistent (steps not increasing, deadline before bake, ...)."""


class TransitionError(RolloutError):
    """The requested transition is not possible from the rollout's current phase."""


class NoRolloutError(RolloutError):
    """The model has no rollout recorded in `control_log`: nothing for an operator to change."""
