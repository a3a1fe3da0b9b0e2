"""The one insert path: rows of a registered table, deduplicated by ClickHouse on retry."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError
from clickhouse_connect.driver.insert import InsertContext

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
    inserting = _reusable(client, table)
    with inserting.lock:
        inserting.context.settings = {
            "insert_deduplicate": 1,
            "insert_deduplication_token": used,
        }
        try:
            client.insert(data=rows, context=inserting.context)
        except ClickHouseError as exc:
            # The table may have changed (a migration): the retry asks for its types again.
            _CONTEXTS.get(client, {}).pop(table.name, None)
            raise InsertError(table.name, len(rows), used, exc) from exc
    log.debug("inserted %s rows into %s (token %s)", len(rows), table.name, used)
    return used


@dataclass(frozen=True, slots=True)
class _ReusableInsert:
    context: InsertContext
    # One insert at a time per context (the sink's threads insert into different tables).
    lock: threading.Lock


# Per client, one insert context per table, reused (clickhouse-connect's documented use). A new
# context per insert asked for the table's types (DESCRIBE) every time, and it is cyclic garbage
# once used (it keeps a bound method of itself): the rows it holds then wait for the cyclic
# collector, which the stream worker runs rarely (infra/collector_schedule.py), and memory grew
# by 1.9 GB per million pending predictions in `bench.stream_join --only footprint`.
_CONTEXTS: weakref.WeakKeyDictionary[Client, dict[str, _ReusableInsert]] = (
    weakref.WeakKeyDictionary()
)
_CONTEXTS_LOCK = threading.Lock()


def _reusable(client: Client, table: Table[Any]) -> _ReusableInsert:
    with _CONTEXTS_LOCK:
        known = _CONTEXTS.setdefault(client, {})
        found = known.get(table.name)
    if found is None:
        context = client.create_insert_context(table.name, column_names=list(table.columns))
        with _CONTEXTS_LOCK:
            found = _CONTEXTS.setdefault(client, {}).setdefault(
                table.name, _ReusableInsert(context, threading.Lock())
            )
    return found
