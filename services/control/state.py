"""Each model's applied config, changed only by verified commands applied in sequence order."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from safeloop.schemas.events import ControlCommand, ModelConfig
from safeloop.services.control.exceptions import SignatureError
from safeloop.services.control.keys import KeyRing
from safeloop.services.control.signing import verify
from safeloop.services.control.validation import config_problem

logger = logging.getLogger(__name__)

# How many command ids per model are remembered to recognise replays of old commands.
REMEMBERED_COMMAND_IDS = 10_000


class ApplyOutcome(StrEnum):
    APPLIED = "applied"
    # The very command already applied, read again (a restart, a re-read): a no-op.
    DUPLICATE = "duplicate"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: ApplyOutcome
    command_id: str
    model_name: str
    sequence: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AppliedConfig:
    """A model's config and the command that set it."""

    config: ModelConfig
    sequence: int
    command_id: str
    issued_at: int


ConfigListener = Callable[[str, AppliedConfig], None]
# Checks the content of a verified command against this replica (e.g. model versions it can
# load); returns why it cannot be applied, or None.
CommandCheck = Callable[[ControlCommand], str | None]


class ControlState:
    """Verifies, orders and applies commands; readers get an immutable snapshot per model."""

    def __init__(self, keys: KeyRing, check: CommandCheck | None = None) -> None:
        self._keys = keys
        self._check = check
        self._lock = threading.Lock()
        self._configs: dict[str, AppliedConfig] = {}
        self._seen_ids: dict[str, deque[str]] = {}
        self._listeners: list[ConfigListener] = []
        self.last_command_id: str | None = None
        self.refused_count = 0
        self.last_refusal: str | None = None

    def subscribe(self, listener: ConfigListener) -> None:
        """Call `listener(model_name, applied)` after every applied command (in apply order)."""
        self._listeners.append(listener)

    def applied(self, model_name: str) -> AppliedConfig | None:
        return self._configs.get(model_name)

    def config_versions(self) -> dict[str, int]:
        """Model name -> sequence of the last applied command (what replica-status reports)."""
        return {name: applied.sequence for name, applied in self._configs.items()}

    def apply(self, command: ControlCommand) -> ApplyResult:
        """Apply `command` unless it is unverifiable, replayed, out of order or invalid."""
        with self._lock:
            result = self._apply_locked(command)
        if result.outcome is ApplyOutcome.REFUSED:
            logger.warning(
                "refused control command %s for %s (sequence %s): %s",
                command.command_id,
                command.model_name,
                command.sequence,
                result.reason,
            )
        elif result.outcome is ApplyOutcome.APPLIED:
            logger.info(
                "applied %s for %s: sequence %s, command %s",
                command.kind,
                command.model_name,
                command.sequence,
                command.command_id,
            )
            applied = self._configs[command.model_name]
            for listener in self._listeners:
                listener(command.model_name, applied)
        return result

    def refuse(self, what: str, reason: str) -> None:
        """Count a record that never became a command (e.g. undecodable bytes)."""
        with self._lock:
            self._count_refusal(f"{what}: {reason}")
        logger.warning("refused control record %s: %s", what, reason)

    def _apply_locked(self, command: ControlCommand) -> ApplyResult:
        def refused(reason: str) -> ApplyResult:
            self._count_refusal(f"{command.command_id}: {reason}")
            return ApplyResult(
                ApplyOutcome.REFUSED,
                command.command_id,
                command.model_name,
                command.sequence,
                reason,
            )

        try:
            verify(command, self._keys)
        except SignatureError as exc:
            return refused(str(exc))
        current = self._configs.get(command.model_name)
        if (
            current is not None
            and current.command_id == command.command_id
            and current.sequence == command.sequence
        ):
            return ApplyResult(
                ApplyOutcome.DUPLICATE, command.command_id, command.model_name, command.sequence
            )
        seen = self._seen_ids.setdefault(command.model_name, deque(maxlen=REMEMBERED_COMMAND_IDS))
        if command.command_id in seen:
            return refused("replayed: command id already applied")
        if current is not None and command.sequence <= current.sequence:
            return refused(
                f"out of order: sequence {command.sequence} is not newer than {current.sequence}"
            )
        problem = config_problem(command.config)
        if problem is None and self._check is not None:
            problem = self._check(command)
        if problem is not None:
            return refused(f"invalid config: {problem}")
        seen.append(command.command_id)
        self._configs = {
            **self._configs,
            command.model_name: AppliedConfig(
                command.config, command.sequence, command.command_id, command.issued_at
            ),
        }
        self.last_command_id = command.command_id
        return ApplyResult(
            ApplyOutcome.APPLIED, command.command_id, command.model_name, command.sequence
        )

    def _count_refusal(self, description: str) -> None:
        self.refused_count += 1
        self.last_refusal = description
