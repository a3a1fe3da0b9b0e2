"""The one insert path: rows of a registered table, deduplicated by ClickHouse on retry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

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
            settings={"insert_deduplicate": 1, "insert_deduplication_token": used},
        )
    except ClickHouseError as exc:
        raise InsertError(table.name, len(rows), used, exc) from exc
    log.debug("inserted %s rows into %s (token %s)", len(rows), table.name, used)
    return used
