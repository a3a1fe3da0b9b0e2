"""Which of some rows a table already holds, by the table's replay key (for replayed input)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.tables import Row, Table

# Look-up values per query: the array travels as a query parameter.
LOOKUP_CHUNK = 5_000


def stored_identities(
    client: Client, table: Table[Any], rows: Sequence[Row]
) -> set[tuple[object, ...]]:
    """The replay identities (`Table.replay_identity`) among `rows` that `table` already holds."""
    key = table.replay
    if key is None:
        raise ValueError(f"{table.name} has no replay key")
    values = sorted({table.lookup_value(row) for row in rows}, key=repr)
    if not values:
        return set()
    # Identifiers come from the table registry, values are parameters.
    select = ", ".join(
        f"toUnixTimestamp64Milli({column})" if column in key.millis else column
        for column in key.columns
    )
    sql = (
        f"SELECT DISTINCT {select} FROM {table.name} "  # noqa: S608 - registry identifiers
        f"WHERE {key.lookup} IN {{keys:Array({key.lookup_type})}}"
    )
    found: set[tuple[object, ...]] = set()
    for start in range(0, len(values), LOOKUP_CHUNK):
        chunk = values[start : start + LOOKUP_CHUNK]
        try:
            result = client.query(sql, parameters={"keys": chunk})
        except ClickHouseError as exc:
            raise WarehouseError(f"look-up of {len(chunk)} rows in {table.name}: {exc}") from exc
        found.update(tuple(row) for row in result.result_rows)
    return found
