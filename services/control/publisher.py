"""Operators' side of the control topic: read a model's current config, sign the next one."""

from __future__ import annotations

import getpass
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Producer

from safeloop.infra.exceptions import DeliveryError
from safeloop.infra.kafka.produce import produce_confirmed
from safeloop.schemas.codec import CONTROL_CODEC
from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.schemas.exceptions import DecodeError
from safeloop.services.control.broadcast import BroadcastReader, LeaderWait
from safeloop.services.control.exceptions import CommandError, ControlTopicError, SignatureError
from safeloop.services.control.keys import KeyRing
from safeloop.services.control.signing import sign, verify
from safeloop.services.control.validation import config_problem

logger = logging.getLogger(__name__)

READ_TIMEOUT_S = 15.0
DELIVERY_TIMEOUT_S = 15.0
# The key of the warm-up tombstone: no model has it (model names are [A-Za-z0-9_.-]), replicas
# and readers skip tombstones, and compaction removes it.
WARM_UP_KEY_PREFIX = "__warm-up__/"

ConfigChange = Callable[[ModelConfig], ModelConfig]


@dataclass(frozen=True)
class ControlTopicView:
    """The newest verified command per model, as every replica will have rebuilt it.

    `verified` is False when it was read without keys (`safeloop status` with no key
    configured): then `latest` is the newest decodable command, signatures unchecked.
    """

    latest: dict[str, ControlCommand]
    refused: int
    verified: bool = True

    def config_of(self, model_name: str) -> ModelConfig | None:
        command = self.latest.get(model_name)
        return None if command is None else command.config


def read_commands(
    reader: BroadcastReader, keys: KeyRing | None, on_wait: LeaderWait | None = None
) -> tuple[list[ControlCommand], int]:
    """Every command on the topic, in partition order, that decodes (and, with `keys`, verifies),
    and how many records were refused; closes the reader. `on_wait` hears of a leader awaited."""
    commands: list[ControlCommand] = []
    refused = 0
    try:
        reader.assign_from_beginning(on_wait=on_wait)
        for message in reader.read_to_end(READ_TIMEOUT_S):
            value = message.value()
            if value is None:
                continue
            try:
                command = CONTROL_CODEC.decode(value)
                if keys is not None:
                    verify(command, keys)
            except (DecodeError, SignatureError):
                refused += 1
                continue
            commands.append(command)
    finally:
        reader.close()
    return commands, refused


def read_control_topic(
    reader: BroadcastReader, keys: KeyRing | None, on_wait: LeaderWait | None = None
) -> ControlTopicView:
    """Read the whole control topic and keep, per model, the newest command that verifies
    (without `keys`: the newest that decodes, and the view says it is unverified)."""
    commands, refused = read_commands(reader, keys, on_wait)
    latest: dict[str, ControlCommand] = {}
    for command in commands:
        current = latest.get(command.model_name)
        if current is None or command.sequence > current.sequence:
            latest[command.model_name] = command
    return ControlTopicView(latest, refused, verified=keys is not None)


def default_issuer() -> str:
    return f"{_user()}@{socket.gethostname()}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class ControlPublisher:
    """Builds the next command of a model (sequence + 1, full config), signs and sends it."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        keys: KeyRing,
        *,
        issuer: str | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._keys = keys
        self.issuer = issuer or default_issuer()

    def next_command(
        self,
        view: ControlTopicView,
        model_name: str,
        kind: CommandKind,
        change: ConfigChange,
        *,
        reason: str,
        initial: ModelConfig | None = None,
        details: dict[str, str] | None = None,
        command_id: str | None = None,
    ) -> ControlCommand:
        """The signed command that applies `change` to the model's current config.

        `initial` is the config assumed when the topic holds no command for the model yet.
        """
        current = view.latest.get(model_name)
        base = current.config if current is not None else initial
        if base is None:
            raise CommandError(
                f"no command for {model_name!r} yet and no initial config: name the production "
                f"version (the model store's oldest version is used when it is reachable)"
            )
        config = change(base)
        problem = config_problem(config)
        if problem is not None:
            raise CommandError(f"{kind.value} for {model_name}: {problem}")
        command = ControlCommand(
            command_id=command_id or uuid.uuid4().hex,
            model_name=model_name,
            kind=kind,
            sequence=(current.sequence if current is not None else 0) + 1,
            issued_at=time.time_ns() // 1_000_000,
            issuer=self.issuer,
            reason=reason,
            config=config,
            key_id="",
            signature="",
            details=dict(details or {}),
        )
        return sign(command, self._keys.signing_key)

    def warm_up(self, timeout_s: float = DELIVERY_TIMEOUT_S) -> float:
        """Deliver one tombstone to the control topic and wait for its acknowledgement.

        Returns the seconds it took. After this, the producer holds its idempotence producer
        id and knows the topic's leaders, so the first real command (a guard's rollback) is
        sent at once instead of waiting out "Coordinator load in progress" on a fresh broker.
        ControlTopicError if the broker does not acknowledge it in time.
        """
        started = time.monotonic()
        record = ((WARM_UP_KEY_PREFIX + self.issuer).encode(), None)
        try:
            produce_confirmed(self._producer, self._topic, [record], timeout_s)
        except DeliveryError as exc:
            raise ControlTopicError(f"cannot deliver to {self._topic} yet: {exc.reason}") from exc
        return time.monotonic() - started

    def send(self, command: ControlCommand, timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
        """Produce and wait for the broker's acknowledgement; ControlTopicError otherwise."""
        record = (command.model_name.encode(), CONTROL_CODEC.encode(command))
        try:
            produce_confirmed(self._producer, self._topic, [record], timeout_s)
        except DeliveryError as exc:
            raise ControlTopicError(
                f"command {command.command_id} not published: {exc.reason}"
            ) from exc
        logger.info(
            "published %s for %s: sequence %s, command %s",
            command.kind,
            command.model_name,
            command.sequence,
            command.command_id,
        )
