"""Rollout intents -> (command kind, config change): what each transition asks replicas to do."""

from __future__ import annotations

import dataclasses

from safeloop.schemas.events import CommandKind, ModelConfig
from safeloop.services.control.exceptions import CommandError
from safeloop.services.control.publisher import ConfigChange
from safeloop.services.rollout.intents import Intent, Pause, Promote, Rollback, SetCanary


def command_for(intent: Intent) -> tuple[CommandKind, ConfigChange]:
    """The kind and config change that make `intent` true on every replica."""
    if isinstance(intent, SetCanary):

        def set_canary(config: ModelConfig) -> ModelConfig:
            if intent.version == config.production_version:
                raise CommandError(f"{intent.version} is already the production version")
            return dataclasses.replace(
                config,
                canary_version=intent.version,
                canary_basis_points=intent.basis_points,
                canary_enabled=True,
            )

        return CommandKind.SET_CANARY, set_canary
    if isinstance(intent, Promote):

        def promote(config: ModelConfig) -> ModelConfig:
            return dataclasses.replace(
                config,
                production_version=intent.version,
                canary_version=None,
                canary_basis_points=0,
            )

        return CommandKind.PROMOTE, promote
    if isinstance(intent, Rollback):

        def roll_back(config: ModelConfig) -> ModelConfig:
            return dataclasses.replace(
                config,
                production_version=intent.to_version,
                canary_version=None,
                canary_basis_points=0,
            )

        return CommandKind.ROLLBACK, roll_back
    if isinstance(intent, Pause):
        # Hold the share where it is; the command records the pause and its reason.
        return CommandKind.SET_CANARY, lambda config: config
    raise TypeError(f"unknown rollout intent {intent!r}")
