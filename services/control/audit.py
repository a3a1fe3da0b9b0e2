"""The control plane's audit trail, the `control_log` table: one row per command or decision.

Every signed command is audited the same way, whoever issues it (an operator's CLI, the
metrics process): `send_and_record` publishes it, then writes its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.events import ControlCommand
from safeloop.services.control.publisher import ControlPublisher

TABLE = "control_log"
COLUMNS = (
    "entry_type",
    "command_id",
    "model_name",
    "kind",
    "sequence",
    "issued_at",
    "issuer",
    "reason",
    "production_version",
    "canary_version",
    "canary_basis_points",
    "canary_enabled",
    "shadow_version",
    "shadow_enabled",
    "kill_switch",
    "fallback_version",
    "flags",
    "key_id",
    "signature",
    "details",
)


class EntryType(StrEnum):
    """What produced a control_log row."""

    # A signed command on the control topic (operator CLI, guard rollback, rollout step).
    COMMAND = "command"
    # A rollout's state after a transition, in `details` (what `safeloop rollout status` reads).
    ROLLOUT = "rollout"


def control_log_values(command: ControlCommand, entry_type: EntryType) -> tuple[object, ...]:
    """One row in `COLUMNS` order."""
    config = command.config
    return (
        entry_type.value,
        command.command_id,
        command.model_name,
        command.kind.value,
        command.sequence,
        command.issued_at,
        command.issuer,
        command.reason,
        config.production_version,
        config.canary_version,
        config.canary_basis_points,
        config.canary_enabled,
        config.shadow_version,
        config.shadow_enabled,
        config.kill_switch,
        config.fallback_version,
        dict(config.flags),
        command.key_id,
        command.signature,
        dict(command.details),
    )


def record(client: Client, command: ControlCommand, *entry_types: EntryType) -> None:
    """Insert one row per entry type; a retry of the same rows is deduplicated."""
    kinds = entry_types or (EntryType.COMMAND,)
    rows = [control_log_values(command, kind) for kind in kinds]
    token = f"{command.command_id}:{','.join(kind.value for kind in kinds)}"
    client.insert(
        TABLE,
        rows,
        column_names=list(COLUMNS),
        settings={"insert_deduplicate": 1, "insert_deduplication_token": token},
    )


# Why audit rows could not be written: ClickHouse refused the insert, or was not reachable.
AuditFailure = ClickHouseError | WarehouseError


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
    except (ClickHouseError, WarehouseError) as exc:
        return exc
    return None
