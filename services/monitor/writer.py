"""Batched, deduplicated ClickHouse inserts of `MetricRow`s into the three metric tables."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from enum import StrEnum

from clickhouse_connect.driver import Client

from safeloop.services.metrics.rows import MetricRow

logger = logging.getLogger(__name__)


class MetricTable(StrEnum):
    """The long-layout tables of schemas/clickhouse/009-011."""

    HEALTH = "health_metrics"
    PERFORMANCE = "performance_metrics"
    DRIFT = "drift_metrics"


_COMMON = ("model_name", "model_version", "route", "window_start", "window_end", "metric")
_TAIL = ("value", "sample_count", "labels")
COLUMNS: dict[MetricTable, tuple[str, ...]] = {
    MetricTable.HEALTH: (*_COMMON, *_TAIL),
    MetricTable.PERFORMANCE: (*_COMMON, *_TAIL),
    MetricTable.DRIFT: (*_COMMON, "feature", *_TAIL),
}


def metric_row_values(table: MetricTable, row: MetricRow) -> tuple[object, ...]:
    """One row's values in `COLUMNS[table]` order (DateTime64 columns take epoch ms)."""
    head = (
        row.model_name,
        row.model_version,
        row.route,
        row.window_start_ms,
        row.window_end_ms,
        row.metric,
    )
    tail = (row.value, row.sample_count, dict(row.labels))
    return (*head, row.feature, *tail) if table is MetricTable.DRIFT else (*head, *tail)


class MetricWriter:
    """Inserts a snapshot's rows table by table; a retried snapshot is dropped by ClickHouse.

    The deduplication token is a digest of the rows themselves, so re-sending the same
    snapshot after a timeout is harmless; `rows_written` and `inserts` count what went in.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self.rows_written = 0
        self.inserts = 0

    def write(self, table: MetricTable, rows: Sequence[MetricRow]) -> None:
        """Insert `rows` into `table` now; clickhouse-connect errors propagate to the caller."""
        if not rows:
            return
        values = [metric_row_values(table, row) for row in rows]
        self._client.insert(
            table.value,
            values,
            column_names=list(COLUMNS[table]),
            settings={"insert_deduplicate": 1, "insert_deduplication_token": _token(values)},
        )
        self.rows_written += len(values)
        self.inserts += 1
        logger.debug("wrote %s rows to %s", len(values), table.value)

    def write_all(self, batches: dict[MetricTable, list[MetricRow]]) -> int:
        """Write every table's rows; returns how many rows went in."""
        before = self.rows_written
        for table, rows in batches.items():
            self.write(table, rows)
        return self.rows_written - before


def _token(values: Sequence[tuple[object, ...]]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        digest.update(repr(value).encode())
    return digest.hexdigest()
