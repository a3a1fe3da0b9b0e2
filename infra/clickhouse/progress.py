"""The stream processor's exactly-once marks in `stream_progress` (see its DDL)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.tables import STREAM_PROGRESS, ProgressMark

# (source, partition): a source is an input topic, or a pseudo-source such as expiry sweeps.
SourceKey = tuple[str, int]


def read_marks(client: Client, group: str, partitions: Collection[int]) -> dict[SourceKey, int]:
    """The highest mark of every source of `partitions` that `group` wrote (none: absent)."""
    if not partitions:
        return {}
    try:
        result = client.query(
            "SELECT source, partition, max(mark) FROM stream_progress "
            "WHERE consumer_group = {group:String} AND partition IN {partitions:Array(Int32)} "
            "GROUP BY source, partition",
            parameters={"group": group, "partitions": sorted(partitions)},
        )
    except ClickHouseError as exc:
        raise WarehouseError(f"cannot read the stream progress of {group}: {exc}") from exc
    return {
        (str(source), int(partition)): int(mark) for source, partition, mark in result.result_rows
    }


def write_marks(client: Client, group: str, marks: Mapping[SourceKey, int]) -> None:
    """Record `marks` for `group` (readers take the maximum, so a lower one changes nothing)."""
    items = [
        ProgressMark(group, source, partition, mark)
        for (source, partition), mark in sorted(marks.items())
    ]
    insert_idempotent(client, STREAM_PROGRESS, STREAM_PROGRESS.rows(items))
