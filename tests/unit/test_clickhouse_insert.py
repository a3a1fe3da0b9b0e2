"""insert_idempotent reuses one insert context per client and table: the column types are asked
for once, not before every insert, and no used context is left as cyclic garbage holding rows."""

from __future__ import annotations

import gc
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
        return SimpleNamespace(
            table=table, column_types=[f"type of {name}" for name in column_names], settings={}
        )

    def insert(self, *, data: Any, context: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise DatabaseError("Code: 16. No such column")
        self.inserts.append(
            {
                "table": context.table,
                "rows": data,
                "column_types": context.column_types,
                "settings": dict(context.settings),
            }
        )


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


def test_each_insert_carries_its_own_deduplication_token() -> None:
    client = CountingClient()
    first = insert_idempotent(client, STREAM_PROGRESS, _rows(0))  # type: ignore[arg-type]
    second = insert_idempotent(client, STREAM_PROGRESS, _rows(1), token="given")  # type: ignore[arg-type]
    assert first != second == "given"
    assert [i["settings"]["insert_deduplication_token"] for i in client.inserts] == [first, second]
    assert all(i["settings"]["insert_deduplicate"] == 1 for i in client.inserts)


def test_a_real_insert_context_reused_leaves_no_cyclic_garbage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """clickhouse-connect's InsertContext keeps a bound method of itself: a context per insert
    is cyclic garbage holding that insert's rows until a full collection."""
    from clickhouse_connect.datatypes.registry import get_from_name
    from clickhouse_connect.driver.insert import InsertContext

    types = [get_from_name(name) for name in ("String", "String", "Int32", "Int64")]

    class ContextClient:
        def __init__(self) -> None:
            self.contexts = 0

        def create_insert_context(self, table: str, column_names: list[str]) -> InsertContext:
            self.contexts += 1
            return InsertContext(table, column_names, types)

        def insert(self, *, data: Any, context: InsertContext) -> None:
            context.data = data  # what clickhouse-connect's insert does, then data_insert
            context.data = None

    client = ContextClient()
    insert_idempotent(client, STREAM_PROGRESS, _rows(0))  # type: ignore[arg-type]
    gc.collect()
    gc.disable()
    try:
        for offset in range(50):
            insert_idempotent(client, STREAM_PROGRESS, _rows(offset))  # type: ignore[arg-type]
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert client.contexts == 1
