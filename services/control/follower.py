"""A live view of the control topic: the newest verified command per model, kept current."""

from __future__ import annotations

import logging
from collections.abc import Callable

from safeloop.schemas.codec import CONTROL_CODEC
from safeloop.schemas.events import ControlCommand
from safeloop.schemas.exceptions import DecodeError
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.control.exceptions import SignatureError
from safeloop.services.control.keys import KeyRing
from safeloop.services.control.publisher import ControlTopicView
from safeloop.services.control.signing import verify

logger = logging.getLogger(__name__)


class ControlFollower:
    """Reads the control topic from its beginning, then follows it; `view` is always usable.

    `note_sent` records a command this process just published, so the next command it builds
    takes sequence + 1 before the broker has echoed the first one back. If another publisher's
    command with the same sequence comes first on the topic, replicas apply that one and refuse
    ours; the view then follows the topic (and `lost_races` counts it), so the guard, seeing the
    canary still configured, judges and rolls back again with the next sequence.
    """

    def __init__(self, reader: BroadcastReader, keys: KeyRing) -> None:
        self._reader = reader
        self._keys = keys
        self._latest: dict[str, ControlCommand] = {}
        # model -> id of a command we sent that the topic has not echoed back yet
        self._unconfirmed: dict[str, str] = {}
        self.refused = 0
        self.lost_races = 0
        # Told of each command `poll` takes in (the champion alias follows them).
        self.listeners: list[Callable[[ControlCommand], None]] = []

    def start(self, timeout_s: float = 15.0) -> None:
        """Assign from the beginning and read up to the current end."""
        self._reader.assign_from_beginning()
        for message in self._reader.read_to_end(timeout_s):
            self._take(message.value())

    def poll(self, timeout_s: float = 0.0) -> list[ControlCommand]:
        """Take in new commands; returns those that changed a model's newest command."""
        changed = []
        for message in self._reader.poll(timeout_s):
            command = self._take(message.value())
            if command is not None:
                changed.append(command)
                for listener in self.listeners:
                    listener(command)
        return changed

    @property
    def view(self) -> ControlTopicView:
        return ControlTopicView(dict(self._latest), self.refused)

    def latest(self, model_name: str) -> ControlCommand | None:
        return self._latest.get(model_name)

    def models(self) -> list[str]:
        return sorted(self._latest)

    def note_sent(self, command: ControlCommand) -> None:
        self._adopt(command, sent=True)

    def close(self) -> None:
        self._reader.close()

    def _take(self, value: bytes | None) -> ControlCommand | None:
        if value is None:
            return None
        try:
            command = CONTROL_CODEC.decode(value)
            verify(command, self._keys)
        except (DecodeError, SignatureError) as exc:
            self.refused += 1
            logger.warning("ignoring control record: %s", exc)
            return None
        return command if self._adopt(command) else None

    def _adopt(self, command: ControlCommand, *, sent: bool = False) -> bool:
        name = command.model_name
        current = self._latest.get(name)
        pending = self._unconfirmed.get(name)
        if (
            not sent
            and current is not None
            and pending == current.command_id
            and command.sequence == current.sequence
        ):
            del self._unconfirmed[name]
            if command.command_id == current.command_id:
                return False  # our own command, echoed
            # Another publisher took the same sequence first: replicas applied theirs, not ours.
            logger.error(
                "command %s for %s lost sequence %s to %s from %s; replicas refuse ours",
                current.command_id,
                name,
                command.sequence,
                command.command_id,
                command.issuer,
            )
            self.lost_races += 1
            self._latest[name] = command
            return True
        if current is not None and command.sequence <= current.sequence:
            return False
        self._latest[name] = command
        if sent:
            self._unconfirmed[name] = command.command_id
        return True
