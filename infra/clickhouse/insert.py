"""The one insert path: rows of a registered table, deduplicated by ClickHouse on retry."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.exceptions import InsertError
from safeloop.schemas.tables import Row, Table

log = logging.getLogger(__name__)


def insert_idempotent(
    client: Client, table: Table[Any], rows: Sequence[Row], token: str | None = None
) -> str:
    """Insert `rows` (in `table.columns` order) and return the deduplication token used.

    Without `token`, the token is a digest of the rows' identities, so sending the same rows
    again (a retry after a timeout, a replay after a crash) is dropped by ClickHouse
    (`insert_deduplicate`; MergeTree tables keep the last tokens, see the DDL's settings).
    """
    used = token if token is not None else table.dedup_token(rows)
    if not rows:
        return used
    try:
        client.insert(
            table.name,
            rows,
            column_names=list(table.columns),
            column_types=_column_types(client, table),
            settings={"insert_deduplicate": 1, "insert_deduplication_token": used},
        )
    except ClickHouseError as exc:
        # The table may have changed (a migration): the retry asks for its types again.
        _TYPES.get(client, {}).pop(table.name, None)
        raise InsertError(table.name, len(rows), used, exc) from exc
    log.debug("inserted %s rows into %s (token %s)", len(rows), table.name, used)
    return used


# Per client, the ClickHouse types of each table's insert columns: without them
# clickhouse-connect sends a DESCRIBE TABLE before every insert, doubling the requests.
_TYPES: weakref.WeakKeyDictionary[Client, dict[str, Sequence[ClickHouseType]]] = (
    weakref.WeakKeyDictionary()
)


def _column_types(client: Client, table: Table[Any]) -> Sequence[ClickHouseType]:
    known = _TYPES.setdefault(client, {})
    types = known.get(table.name)
    if types is None:
        context = client.create_insert_context(table.name, column_names=list(table.columns))
        types = known[table.name] = context.column_types
    return types
