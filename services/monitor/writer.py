"""Batched, deduplicated ClickHouse inserts of `MetricRow`s into the three metric tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from clickhouse_connect.driver import Client

from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.schemas.tables import MetricRow, Table

logger = logging.getLogger(__name__)


class MetricWriter:
    """Inserts a snapshot's rows table by table; a retried snapshot is dropped by ClickHouse.

    The deduplication token is a digest of the rows themselves, so re-sending the same
    snapshot after a timeout is harmless; `rows_written` and `inserts` count what went in.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self.rows_written = 0
        self.inserts = 0

    def write(self, table: Table[MetricRow], rows: Sequence[MetricRow]) -> None:
        """Insert `rows` into `table` now; InsertError (a WarehouseError) on failure."""
        if not rows:
            return
        insert_idempotent(self._client, table, table.rows(rows))
        self.rows_written += len(rows)
        self.inserts += 1
        logger.debug("wrote %s rows to %s", len(rows), table.name)

    def write_all(self, batches: Mapping[Table[MetricRow], Sequence[MetricRow]]) -> int:
        """Write every table's rows; returns how many rows went in."""
        before = self.rows_written
        for table, rows in batches.items():
            self.write(table, rows)
        return self.rows_written - before
