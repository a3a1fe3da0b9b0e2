"""The control plane's audit trail, the `control_log` table: one row per command or decision.

Every signed command is audited the same way, whoever issues it: the metrics process publishes
it and writes its rows with `send_and_record`; the operator's CLI publishes, then `record`s on a
thread (services/cli/audit_job.py) while it waits for the replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from clickhouse_connect.driver import Client

from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.events import ControlCommand
from safeloop.schemas.tables import CONTROL_LOG, ControlLogEntry
from safeloop.services.control.publisher import ControlPublisher


class EntryType(StrEnum):
    """What produced a control_log row."""

    # A signed command on the control topic (operator CLI, guard rollback, rollout step).
    COMMAND = "command"
    # A rollout's state after a transition, in `details` (what `safeloop rollout status` reads).
    ROLLOUT = "rollout"
    # What a dry-run rollout's gate would have done, recorded instead of done.
    DRY_RUN = "dry_run"


def record(client: Client, command: ControlCommand, *entry_types: EntryType) -> None:
    """Insert one row per entry type; a retry of the same rows is deduplicated."""
    kinds = entry_types or (EntryType.COMMAND,)
    entries = [ControlLogEntry(command, kind.value) for kind in kinds]
    insert_idempotent(client, CONTROL_LOG, CONTROL_LOG.rows(entries))


# Why audit rows could not be written: ClickHouse refused the insert, or was not reachable.
AuditFailure = WarehouseError


def send_and_record(
    publisher: ControlPublisher,
    command: ControlCommand,
    connect: Callable[[], Client],
    *entry_types: EntryType,
) -> AuditFailure | None:
    """Publish `command`, then write its control_log rows (`connect` gives the client).

    A failed send raises (ControlTopicError) and records nothing. Once sent, the command has
    taken effect: Kafka is the source of truth and control_log only follows it, so a ClickHouse
    failure is returned, not raised (None once the rows are written), for the caller to warn
    about or to retry with `record`.
    """
    publisher.send(command)
    try:
        record(connect(), command, *entry_types)
    except WarehouseError as exc:
        return exc
    return None
