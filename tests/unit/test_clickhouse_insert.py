"""insert_idempotent asks a client for a table's column types once, not before every insert."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.exceptions import InsertError
from safeloop.schemas.tables import STREAM_PROGRESS


class CountingClient:
    """Answers DESCRIBE (create_insert_context) with made-up types; records the inserts."""

    def __init__(self) -> None:
        self.describes = 0
        self.inserts: list[dict[str, Any]] = []
        self.fail_next = False

    def create_insert_context(self, table: str, column_names: list[str]) -> Any:
        self.describes += 1
        return SimpleNamespace(column_types=[f"type of {name}" for name in column_names])

    def insert(self, table: str, rows: Any, **kwargs: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise DatabaseError("Code: 16. No such column")
        self.inserts.append({"table": table, "rows": rows, **kwargs})


def _rows(offset: int) -> list[Any]:
    return [("group", "predictions", 0, offset)]


def test_the_column_types_are_asked_for_once_per_client_and_table() -> None:
    client = CountingClient()
    for offset in range(3):
        insert_idempotent(client, STREAM_PROGRESS, _rows(offset))  # type: ignore[arg-type]
    assert client.describes == 1
    assert len(client.inserts) == 3
    expected = [f"type of {name}" for name in STREAM_PROGRESS.columns]
    assert all(i["column_types"] == expected for i in client.inserts)
    # Another client (another server, another database) asks for itself.
    other = CountingClient()
    insert_idempotent(other, STREAM_PROGRESS, _rows(9))  # type: ignore[arg-type]
    assert other.describes == 1


def test_a_failed_insert_asks_for_the_types_again_on_the_next() -> None:
    client = CountingClient()
    insert_idempotent(client, STREAM_PROGRESS, _rows(0))  # type: ignore[arg-type]
    client.fail_next = True
    with pytest.raises(InsertError):
        insert_idempotent(client, STREAM_PROGRESS, _rows(1))  # type: ignore[arg-type]
    insert_idempotent(client, STREAM_PROGRESS, _rows(2))  # type: ignore[arg-type]
    assert client.describes == 2
