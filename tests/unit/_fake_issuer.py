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
        # The newest command on the topic: the guard's own, or an operator's (`operator`).
        self.last: ControlCommand | None = None

    def config_of(self, model_name: str) -> ModelConfig:
        return self.config

    def latest(self, model_name: str) -> ControlCommand | None:
        return self.last

    def operator(self, kind: CommandKind, config: ModelConfig, issued_at: int) -> ControlCommand:
        """An operator's command read off the topic (not one the guard sent)."""
        self.config = config
        self.sequence += 1
        self.last = ControlCommand(
            f"op-{self.sequence}", "churn", kind, self.sequence, issued_at, "operator", "",
            config, "", "", {},
        )  # fmt: skip
        return self.last

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
        self.last = command
        return command
