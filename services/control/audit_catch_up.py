"""Which commands on the control topic have no `control_log` row: what a new judge writes.

The topic is the source of truth and control_log follows it, so an issuer SIGKILLed between
publishing a command and auditing it leaves the command in force and unaudited. The control
topic is compacted per model: its newest command per model is what can be missing.
"""

from __future__ import annotations

from collections.abc import Sequence

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.events import ControlCommand
from safeloop.services.control.audit import EntryType

_AUDITED = (
    "SELECT DISTINCT command_id FROM control_log "
    "WHERE entry_type = {entry:String} AND command_id IN {ids:Array(String)}"
)


def unaudited(client: Client, commands: Sequence[ControlCommand]) -> list[ControlCommand]:
    """The commands without a 'command' row (WarehouseError if ClickHouse does not answer)."""
    if not commands:
        return []
    ids = [command.command_id for command in commands]
    try:
        rows = client.query(
            _AUDITED, parameters={"entry": EntryType.COMMAND.value, "ids": ids}
        ).result_rows
    except ClickHouseError as exc:
        raise WarehouseError(f"reading control_log for {len(ids)} commands failed: {exc}") from exc
    audited = {str(row[0]) for row in rows}
    return [command for command in commands if command.command_id not in audited]
