"""Errors raised by `services.control`."""

from __future__ import annotations

from collections.abc import Sequence

from safeloop import SafeloopError


class ControlError(SafeloopError):
    """Root of every error raised by `services.control`."""


class SigningKeyError(ControlError):
    """No operator key is configured, or the key file/variable cannot be parsed."""


class SignatureError(ControlError):
    """A command is unsigned, names an unknown key, or its signature does not match."""


class CommandError(ControlError):
    """An operator asked for something the current config does not allow (says what and why)."""


class ControlTopicError(ControlError):
    """The control or replica-status topic could not be read or written."""


class WaitTimeoutError(ControlError):
    """Some live replicas did not apply a command in time; `laggards` names them."""

    def __init__(self, model_name: str, sequence: int, laggards: Sequence[str], timeout_s: float):
        super().__init__(
            f"after {timeout_s:g}s, {len(laggards)} replica(s) have not applied "
            f"{model_name} sequence {sequence}: {', '.join(laggards)}"
        )
        self.model_name = model_name
        self.sequence = sequence
        self.laggards = tuple(laggards)


class PreflightError(ControlError):
    """A canary, shadow or promotion was refused before any traffic: `problems` say why."""

    def __init__(self, model_name: str, problems: Sequence[str]):
        super().__init__(
            f"pre-flight refused the change to {model_name}: {'; '.join(problems)} "
            "(--force sends it anyway)"
        )
        self.model_name = model_name
        self.problems = tuple(problems)
