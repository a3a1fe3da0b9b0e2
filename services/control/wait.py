"""What became of one published command on every live replica: in force, superseded, refused.

`--wait` used to end once every replica applied "this sequence or newer", which also holds when
a newer command (a guard's rollback) replaced the operator's before it was ever seen. Here each
replica's applied sequence is matched against the control topic's own history, so the answer
names the command that is in force and, when it is not the operator's, who issued it and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from safeloop.schemas.codec import CONTROL_CODEC
from safeloop.schemas.events import ControlCommand, ReplicaStatus
from safeloop.schemas.exceptions import DecodeError
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.control.exceptions import SignatureError
from safeloop.services.control.fleet import FleetSnapshot, FleetWatcher
from safeloop.services.control.keys import KeyRing
from safeloop.services.control.signing import verify

POLL_TIMEOUT_S = 0.05


class Outcome(StrEnum):
    """The operator's command on one replica."""

    IN_FORCE = "in_force"  # applied, and nothing newer replaced it
    SUPERSEDED = "superseded"  # a newer command (or a rival with the same sequence) won
    REFUSED = "refused"  # the replica refused it (its refusal text says why)
    PENDING = "pending"  # not applied yet


@dataclass(frozen=True, slots=True)
class CommandRef:
    """Enough of a command to say who issued it and why."""

    sequence: int
    command_id: str
    kind: str
    issuer: str
    reason: str

    @classmethod
    def of(cls, command: ControlCommand) -> CommandRef:
        return cls(
            command.sequence, command.command_id, command.kind.value, command.issuer, command.reason
        )


@dataclass(frozen=True, slots=True)
class ReplicaOutcome:
    replica_id: str
    outcome: Outcome
    applied_sequence: int
    superseded_by: CommandRef | None = None
    refusal: str | None = None


class ControlHistory:
    """Per model and sequence, the first verified command on the control topic: what replicas
    apply at that sequence (a rival with the same sequence coming later is refused by them)."""

    def __init__(self, keys: KeyRing | None) -> None:
        self._keys = keys
        self._by_sequence: dict[str, dict[int, ControlCommand]] = {}

    def take(self, command: ControlCommand) -> None:
        if self._keys is not None:
            try:
                verify(command, self._keys)
            except SignatureError:
                return  # replicas refuse it too
        self._by_sequence.setdefault(command.model_name, {}).setdefault(command.sequence, command)

    def take_record(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            command = CONTROL_CODEC.decode(value)
        except DecodeError:
            return
        self.take(command)

    def at(self, model_name: str, sequence: int) -> ControlCommand | None:
        return self._by_sequence.get(model_name, {}).get(sequence)

    def newest(self, model_name: str) -> ControlCommand | None:
        commands = self._by_sequence.get(model_name)
        return commands[max(commands)] if commands else None


def judge_replica(
    status: ReplicaStatus, command: ControlCommand, history: ControlHistory
) -> ReplicaOutcome:
    """Where `command` stands on the replica that reported `status`."""
    applied = status.config_versions.get(command.model_name, 0)
    if applied >= command.sequence:
        holder = history.at(command.model_name, applied)
        ours = holder is None or holder.command_id == command.command_id
        if applied == command.sequence and ours:
            return ReplicaOutcome(status.replica_id, Outcome.IN_FORCE, applied)
        by = CommandRef.of(holder) if holder is not None else None
        return ReplicaOutcome(status.replica_id, Outcome.SUPERSEDED, applied, superseded_by=by)
    refusal = _refusal_of(status, command)
    if refusal is not None:
        return ReplicaOutcome(status.replica_id, Outcome.REFUSED, applied, refusal=refusal)
    return ReplicaOutcome(status.replica_id, Outcome.PENDING, applied)


def _refusal_of(status: ReplicaStatus, command: ControlCommand) -> str | None:
    # A replica reports its last refusal as "<command_id>: <reason>" (ControlState).
    prefix = f"{command.command_id}: "
    if status.last_refusal is not None and status.last_refusal.startswith(prefix):
        return status.last_refusal[len(prefix) :]
    return None


def _settled(status: ReplicaStatus, newest: ControlCommand | None) -> bool:
    """The replica has caught up with the newest command known (or refused it)."""
    if newest is None:
        return True
    applied = status.config_versions.get(newest.model_name, 0)
    if applied > newest.sequence:
        # The replica applied a command this reader has not read yet: wait for it, so the
        # report can name what superseded ours.
        return False
    if applied == newest.sequence:
        return True
    return status.last_refusal is not None and status.last_refusal.startswith(
        f"{newest.command_id}: "
    )


@dataclass(frozen=True)
class WaitReport:
    """Every live replica's outcome when the wait ended; `timed_out` if some were pending."""

    command: ControlCommand
    replicas: list[ReplicaOutcome]
    timed_out: bool
    newest: CommandRef | None = None
    live: list[str] = field(default_factory=list)

    def with_outcome(self, outcome: Outcome) -> list[ReplicaOutcome]:
        return [replica for replica in self.replicas if replica.outcome is outcome]

    @property
    def laggards(self) -> list[str]:
        return [replica.replica_id for replica in self.with_outcome(Outcome.PENDING)]

    @property
    def verdict(self) -> str:
        """One word for the whole fleet: timeout, refused, superseded or in_force."""
        if self.timed_out:
            return "timeout"
        if self.with_outcome(Outcome.REFUSED):
            return Outcome.REFUSED.value
        if self.with_outcome(Outcome.SUPERSEDED):
            return Outcome.SUPERSEDED.value
        return Outcome.IN_FORCE.value


Progress = Callable[[ReplicaOutcome], None]


class CommandWait:
    """Follows `replica-status` and the control topic until every live replica has decided.

    A replica has decided once the command is in force, superseded or refused there. When the
    topic already holds a newer command, the wait also lets replicas reach it (within the same
    timeout), so the report says "superseded" rather than a moment-old "in force".
    """

    def __init__(
        self,
        fleet: FleetWatcher,
        control: BroadcastReader,
        keys: KeyRing | None,
        command: ControlCommand,
        *,
        progress: Progress | None = None,
    ) -> None:
        self._fleet = fleet
        self._control = control
        self._history = ControlHistory(keys)
        self._history.take(command)
        self._command = command
        self._progress = progress
        self._told: dict[str, Outcome] = {}

    def run(self, timeout_s: float) -> WaitReport:
        deadline = time.monotonic() + timeout_s
        self._control.assign_from_beginning()
        for message in self._control.read_to_end(timeout_s):
            self._history.take_record(message.value())
        snapshot = self._fleet.read_to_end(max(0.1, deadline - time.monotonic()))
        while True:
            outcomes, settled = self._judge(snapshot)
            pending = any(o.outcome is Outcome.PENDING for o in outcomes)
            if not pending and settled:
                return self._report(snapshot, outcomes, timed_out=False)
            if time.monotonic() >= deadline:
                return self._report(snapshot, outcomes, timed_out=pending)
            for message in self._control.poll(0):
                self._history.take_record(message.value())
            snapshot = self._fleet.update(POLL_TIMEOUT_S)

    def _judge(self, snapshot: FleetSnapshot) -> tuple[list[ReplicaOutcome], bool]:
        newest = self._history.newest(self._command.model_name)
        outcomes = []
        settled = True
        for status in snapshot.live():
            outcome = judge_replica(status, self._command, self._history)
            outcomes.append(outcome)
            if outcome.outcome is not Outcome.PENDING and not _settled(status, newest):
                settled = False
            told = self._told.get(status.replica_id)
            if outcome.outcome is not Outcome.PENDING and told is not outcome.outcome:
                self._told[status.replica_id] = outcome.outcome
                if self._progress is not None:
                    self._progress(outcome)
        return outcomes, settled

    def _report(
        self, snapshot: FleetSnapshot, outcomes: list[ReplicaOutcome], *, timed_out: bool
    ) -> WaitReport:
        newest = self._history.newest(self._command.model_name)
        return WaitReport(
            self._command,
            outcomes,
            timed_out,
            CommandRef.of(newest) if newest is not None else None,
            [status.replica_id for status in snapshot.live()],
        )
