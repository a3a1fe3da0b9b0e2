"""Concurrent publishers: learn that a command lost its sequence, and publish it again rebased.

Kafka is the arbiter. All commands of a model share one partition (key = model name), and every
replica applies them in partition order, refusing a sequence that is not above the one it holds.
So after a confirmed send, the publisher reads the model's commands in that order up to its own:
an earlier record with a sequence at least as high won, and replicas refuse ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from safeloop.schemas.events import ControlCommand
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.control.exceptions import ControlTopicError
from safeloop.services.control.keys import KeyRing
from safeloop.services.control.publisher import ControlTopicView, read_commands

logger = logging.getLogger(__name__)


def rival_of(history: Iterable[ControlCommand], ours: ControlCommand) -> ControlCommand | None:
    """The command replicas applied instead of `ours`, or None if `ours` takes effect.

    `history` is the model's verified commands in partition order; `ours` must be among them
    (ControlTopicError otherwise: it was acknowledged, so a reader that misses it is broken).
    """
    highest: ControlCommand | None = None
    for command in history:
        if command.model_name != ours.model_name:
            continue
        if command.command_id == ours.command_id:
            if highest is not None and highest.sequence >= ours.sequence:
                return highest
            return None
        if highest is None or command.sequence > highest.sequence:
            highest = command
    raise ControlTopicError(
        f"command {ours.command_id} was acknowledged but is not on the control topic"
    )


def read_history(reader: BroadcastReader, keys: KeyRing, model_name: str) -> list[ControlCommand]:
    """The model's verified commands on the control topic, in partition order (closes reader)."""
    commands, _ = read_commands(reader, keys)
    return [command for command in commands if command.model_name == model_name]


@dataclass(frozen=True, slots=True)
class Settled:
    """What a publish with retries came to: the last command sent and, if it lost, to what."""

    command: ControlCommand
    attempts: int
    lost_to: tuple[ControlCommand, ...]

    @property
    def in_force(self) -> bool:
        """Whether replicas apply `command` (False: its last attempt lost too)."""
        return len(self.lost_to) < self.attempts


def publish_settled(
    read_view: Callable[[], ControlTopicView],
    build: Callable[[ControlTopicView], ControlCommand],
    send: Callable[[ControlCommand], None],
    history_of: Callable[[ControlCommand], list[ControlCommand]],
    *,
    retries: int,
    on_lost: Callable[[ControlCommand, ControlCommand], None] | None = None,
) -> Settled:
    """Build the command on the current view, send it, and check it won its sequence.

    A lost command is rebuilt on the view that now holds the winner (commands carry the full
    desired config, so the change is applied again to the winner's config, never resent) up to
    `retries` times. `build` may raise (e.g. the change no longer applies): that ends the loop.
    """
    lost: list[ControlCommand] = []
    attempts = 0
    while True:
        attempts += 1
        command = build(read_view())
        send(command)
        rival = rival_of(history_of(command), command)
        if rival is None:
            return Settled(command, attempts, tuple(lost))
        lost.append(rival)
        logger.warning(
            "%s for %s lost sequence %s to command %s from %s (sequence %s)",
            command.kind,
            command.model_name,
            command.sequence,
            rival.command_id,
            rival.issuer,
            rival.sequence,
        )
        if on_lost is not None:
            on_lost(command, rival)
        if attempts > retries:
            return Settled(command, attempts, tuple(lost))
