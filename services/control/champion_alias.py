"""Keeps the model store's `champion` alias on each model's production version.

Every control command carries the whole serving config, so the champion is simply its
`production_version`: a promotion moves the alias forward, a rollback after promotion moves it
back. Each move is tagged with the command's sequence, kind, issuer and reason, so the
registry (MLflow's UI) tells the same story as `control_log`. Moves run on a thread of their
own: a slow registry never delays a rollback, and a failing one is retried.
"""

from __future__ import annotations

import logging
import threading

from safeloop import SafeloopError
from safeloop.schemas.events import ControlCommand
from safeloop.services.models.exceptions import ModelNotFoundError
from safeloop.services.models.store_protocol import CHAMPION_ALIAS, ModelStoreProtocol

logger = logging.getLogger(__name__)

RETRY_S = 2.0


def champion_tags(command: ControlCommand, previous: str | None) -> dict[str, str]:
    """What the move says about itself, named as in `control_log`."""
    return {
        "safeloop.control_sequence": str(command.sequence),
        "safeloop.control_kind": command.kind.value,
        "safeloop.control_issuer": command.issuer,
        "safeloop.control_reason": command.reason,
        "safeloop.command_id": command.command_id,
        "safeloop.previous_champion": previous or "",
    }


class ChampionAliasSync:
    """`on_command` queues (never blocks); `apply` moves the alias now (tests, start-up)."""

    def __init__(self, store: ModelStoreProtocol, retry_s: float = RETRY_S) -> None:
        self._store = store
        self._retry_s = retry_s
        # Only each model's newest command matters: the alias follows production.
        self._pending: dict[str, ControlCommand] = {}
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.moves = 0
        self.failures = 0

    def on_command(self, command: ControlCommand) -> None:
        with self._wake:
            queued = self._pending.get(command.model_name)
            if queued is None or command.sequence > queued.sequence:
                self._pending[command.model_name] = command
            self._wake.notify()

    def apply(self, command: ControlCommand) -> bool:
        """Point the alias at the command's production version; True if it moved."""
        name, version = command.model_name, command.config.production_version
        previous = self._store.alias_version(name, CHAMPION_ALIAS)
        if previous == version:
            return False
        self._store.set_alias(name, CHAMPION_ALIAS, version, champion_tags(command, previous))
        self.moves += 1
        logger.info(
            "champion of %s: %s -> %s (sequence %s, %s)",
            name,
            previous,
            version,
            command.sequence,
            command.kind.value,
        )
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="champion-alias", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def idle(self) -> bool:
        with self._wake:
            return not self._pending

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                while not self._pending and not self._stop.is_set():
                    self._wake.wait()
                if self._stop.is_set():
                    return
                name, command = next(iter(self._pending.items()))
                del self._pending[name]
            try:
                self.apply(command)
            except ModelNotFoundError as exc:
                # A version this store does not hold (another store's model): nothing to move.
                logger.warning("champion of %s not moved: %s", name, exc)
            except SafeloopError as exc:
                self.failures += 1
                logger.warning("champion of %s not moved yet, retrying: %s", name, exc)
                self._requeue(command)
                self._stop.wait(self._retry_s)

    def _requeue(self, command: ControlCommand) -> None:
        """Queue a failed move again unless a newer command replaced it meanwhile."""
        with self._wake:
            self._pending.setdefault(command.model_name, command)
