"""Publish signed control commands from the metrics process and audit them in `control_log`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from clickhouse_connect.driver import Client

from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.audit import AuditFailure, EntryType, record, send_and_record
from safeloop.services.control.audit_catch_up import unaudited
from safeloop.services.control.follower import ControlFollower
from safeloop.services.control.publisher import ConfigChange, ControlPublisher

logger = logging.getLogger(__name__)

InitialConfig = Callable[[str], ModelConfig | None]


class CommandIssuer:
    """Signs the next command of a model on the live view, sends it, then logs it.

    The command is on the control topic before the audit row is written: a ClickHouse outage
    delays the audit (rows are kept and retried), never the rollback.
    """

    def __init__(
        self,
        publisher: ControlPublisher,
        follower: ControlFollower,
        log_client: Client,
        initial_config: InitialConfig,
    ) -> None:
        self._publisher = publisher
        self._follower = follower
        self._log_client = log_client
        self._initial_config = initial_config
        self._unlogged: list[tuple[ControlCommand, tuple[EntryType, ...]]] = []
        self.issued = 0
        # Told of every sent command (alerts); a failing listener never undoes the command.
        self.listeners: list[Callable[[ControlCommand], None]] = []
        self.listener_failures = 0

    @property
    def issuer(self) -> str:
        return self._publisher.issuer

    def latest(self, model_name: str) -> ControlCommand | None:
        """The model's newest command on the control topic (ours included)."""
        return self._follower.latest(model_name)

    def warm_up(self) -> float:
        """Deliver one tombstone so the first command goes out at once (ControlError if not)."""
        return self._publisher.warm_up()

    def config_of(self, model_name: str) -> ModelConfig | None:
        """The model's current config, or what replicas serve before any command."""
        command = self._follower.latest(model_name)
        return command.config if command is not None else self._initial_config(model_name)

    def issue(
        self,
        model_name: str,
        kind: CommandKind,
        change: ConfigChange,
        *,
        reason: str,
        details: dict[str, str],
        entry_types: tuple[EntryType, ...] = (EntryType.COMMAND,),
        command_id: str | None = None,
    ) -> ControlCommand:
        """Build, sign, send (ControlError if the broker does not take it) and audit.

        A `command_id` derived from the decision makes issuing it twice idempotent."""
        initial = None
        if self._follower.latest(model_name) is None:
            initial = self._initial_config(model_name)
        command = self._publisher.next_command(
            self._follower.view,
            model_name,
            kind,
            change,
            reason=reason,
            initial=initial,
            details=details,
            command_id=command_id,
        )
        # Send, then audit with the same rows as the operator CLI's (control_log).
        failure = send_and_record(self._publisher, command, self._log_client_now, *entry_types)
        self._follower.note_sent(command)
        self.issued += 1
        self._tell_listeners(command)
        if failure is not None:
            self._keep(command, entry_types, failure)
        else:
            # ClickHouse answers: also write what an earlier outage left pending.
            self.retry_audit()
        return command

    def audit(self, command: ControlCommand, entry_types: tuple[EntryType, ...]) -> None:
        """Write control_log rows now, or keep them for `retry_audit`."""
        self._unlogged.append((command, entry_types))
        self.retry_audit()

    def catch_up_audit(self) -> int:
        """Audit the topic's newest commands that have no control_log row (a predecessor died
        between publishing and auditing); how many were queued. WarehouseError if unreadable."""
        pending = {command.command_id for command, _ in self._unlogged}
        newest = [c for c in self._follower.view.latest.values() if c.command_id not in pending]
        missing = unaudited(self._log_client, newest)
        for command in missing:
            logger.warning(
                "command %s for %s (from %s) had no control_log row; writing it",
                command.command_id,
                command.model_name,
                command.issuer,
            )
            self.audit(command, (EntryType.COMMAND,))
        return len(missing)

    def retry_audit(self) -> None:
        """Write audit rows that failed before; stops at the first failure."""
        while self._unlogged:
            command, entry_types = self._unlogged[0]
            try:
                record(self._log_client, command, *entry_types)
            except WarehouseError as exc:
                self._warn_kept(command, exc)
                return
            self._unlogged.pop(0)

    def _tell_listeners(self, command: ControlCommand) -> None:
        for listener in self.listeners:
            try:
                listener(command)
            except Exception:
                self.listener_failures += 1
                logger.exception("listener of command %s failed", command.command_id)

    def _log_client_now(self) -> Client:
        return self._log_client

    def _keep(
        self, command: ControlCommand, entry_types: tuple[EntryType, ...], exc: AuditFailure
    ) -> None:
        self._unlogged.append((command, entry_types))
        self._warn_kept(command, exc)

    def _warn_kept(self, command: ControlCommand, exc: AuditFailure) -> None:
        logger.warning(
            "control_log row for %s kept for retry (%s pending): %s",
            command.command_id,
            len(self._unlogged),
            exc,
        )

    @property
    def unlogged(self) -> int:
        return len(self._unlogged)
