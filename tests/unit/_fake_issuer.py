"""A stand-in for the control issuer the central guard rolls a canary back through."""

from __future__ import annotations

from typing import Any

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig

CANARY = ModelConfig(production_version="v1", canary_version="v2", canary_basis_points=1_000)


class FakeIssuer:
    """Holds one model's config; `issue` applies the change and records the command, numbered
    on from `sequence` (the control topic's last before the test)."""

    def __init__(self, sequence: int = 0) -> None:
        self.config = CANARY
        self.sequence = sequence
        self.sent: list[ControlCommand] = []

    def config_of(self, model_name: str) -> ModelConfig:
        return self.config

    def latest(self, model_name: str) -> ControlCommand | None:
        return self.sent[-1] if self.sent else None

    def issue(
        self, model_name: str, kind: CommandKind, change: Any, **kwargs: Any
    ) -> ControlCommand:
        self.config = change(self.config)
        self.sequence += 1
        command = ControlCommand(
            kwargs["command_id"], model_name, kind, self.sequence, 0, "guard",
            kwargs["reason"], self.config, "", "", kwargs["details"],
        )  # fmt: skip
        self.sent.append(command)
        return command
