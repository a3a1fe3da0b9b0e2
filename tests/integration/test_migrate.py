"""`migrate`: DDL files applied in order, once, recorded; a changed file is re-applied."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver import Client

from safeloop.infra.clickhouse import clickhouse_client
from safeloop.infra.clickhouse.migrate import (
    MIGRATIONS_TABLE,
    SCHEMA_DIR,
    load_migrations,
    migrate,
    split_statements,
)
from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings
from safeloop.infra.warehouse import WarehouseProcess

# --- pure parts ------------------------------------------------------------------------------


def test_split_statements_on_semicolons_at_line_end() -> None:
    text = """-- header comment; with a semicolon;
CREATE TABLE IF NOT EXISTS a
(
    x String DEFAULT 'a;b' -- trailing; comment
);

-- only a comment;
CREATE OR REPLACE VIEW v AS SELECT 1;
CREATE TABLE IF NOT EXISTS b (y UInt8) ENGINE = Memory
"""
    statements = split_statements(text)
    assert len(statements) == 3
    assert statements[0].startswith("-- header comment")
    assert statements[0].endswith(")")
    assert statements[1].endswith("CREATE OR REPLACE VIEW v AS SELECT 1")
    assert statements[2] == "CREATE TABLE IF NOT EXISTS b (y UInt8) ENGINE = Memory"


def test_migrations_load_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "010_later.sql").write_text("SELECT 2;\n")
    (tmp_path / "002_first.sql").write_text("SELECT 1;\n")
    (tmp_path / "notes.sql").write_text("ignored")
    names = [m.name for m in load_migrations(tmp_path)]
    assert names == ["002_first.sql", "010_later.sql"]


def test_project_schema_files_load() -> None:
    migrations = load_migrations(SCHEMA_DIR)
    assert all(m.statements for m in migrations)


# --- against the endpoint --------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    state = tmp_path_factory.mktemp("migrate-state")
    settings = dataclasses.replace(
        Settings.from_env({}), state_dir=state, warehouse_port=free_port()
    )
    process = WarehouseProcess(settings)
    process.start()
    yield settings
    process.stop()


def _write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)


def _tables(client: Client) -> set[str]:
    return {row[0] for row in client.query("SHOW TABLES").result_rows}


@pytest.mark.integration
def test_migrate_applies_once_and_reapplies_changes(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ddl = tmp_path / "sql"
    _write(
        ddl,
        "001_events.sql",
        "CREATE TABLE IF NOT EXISTS events (id UInt64) ENGINE = MergeTree ORDER BY id;\n",
    )
    _write(
        ddl,
        "002_views.sql",
        "-- a view over events;\n"
        "CREATE OR REPLACE VIEW event_count AS SELECT count() AS n FROM events;\n"
        "CREATE TABLE IF NOT EXISTS extra (x UInt8) ENGINE = Memory;\n",
    )
    first = migrate(settings, database="mig_a", directory=ddl)
    assert first.applied == ["001_events.sql", "002_views.sql"]
    client = clickhouse_client(settings, database="mig_a")
    try:
        assert {"events", "event_count", "extra", MIGRATIONS_TABLE} <= _tables(client)
        second = migrate(settings, database="mig_a", directory=ddl)
        assert (second.applied, second.reapplied) == ([], [])
        assert second.unchanged == ["001_events.sql", "002_views.sql"]

        _write(ddl, "002_views.sql", "CREATE OR REPLACE VIEW event_count AS SELECT 42 AS n;\n")
        _write(ddl, "003_more.sql", "CREATE TABLE IF NOT EXISTS more (y UInt8) ENGINE = Memory;\n")
        with caplog.at_level(logging.WARNING, logger="safeloop.infra.clickhouse.migrate"):
            third = migrate(settings, database="mig_a", directory=ddl)
        assert third.reapplied == ["002_views.sql"]
        assert third.applied == ["003_more.sql"]
        assert any("002_views.sql changed" in r.getMessage() for r in caplog.records)
        assert client.command("SELECT n FROM event_count") == 42
        recorded = client.query(f"SELECT count(DISTINCT name) FROM {MIGRATIONS_TABLE}").result_rows
        assert recorded == [(3,)]
    finally:
        client.close()


@pytest.mark.integration
def test_migrate_defaults_to_the_settings_database(settings: Settings, tmp_path: Path) -> None:
    ddl = tmp_path / "sql"
    _write(ddl, "001_t.sql", "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory;\n")
    named = dataclasses.replace(settings, clickhouse_database="mig_default")
    assert migrate(named, directory=ddl).database == "mig_default"
    client = clickhouse_client(named)
    try:
        assert "t" in _tables(client)
    finally:
        client.close()


@pytest.mark.integration
def test_failing_statement_names_the_file(settings: Settings, tmp_path: Path) -> None:
    ddl = tmp_path / "sql"
    _write(ddl, "001_ok.sql", "CREATE TABLE IF NOT EXISTS ok (a UInt8) ENGINE = Memory;\n")
    _write(
        ddl,
        "002_bad.sql",
        "CREATE TABLE IF NOT EXISTS ok2 (a UInt8) ENGINE = Memory;\nCREATE TABL oops;\n",
    )
    with pytest.raises(WarehouseError, match=r"002_bad\.sql, statement 2"):
        migrate(settings, database="mig_b", directory=ddl)
    # The good file was recorded; the failed one was not and is retried next time.
    _write(ddl, "002_bad.sql", "CREATE TABLE IF NOT EXISTS ok2 (a UInt8) ENGINE = Memory;\n")
    report = migrate(settings, database="mig_b", directory=ddl)
    assert (report.unchanged, report.applied) == (["001_ok.sql"], ["002_bad.sql"])


@pytest.mark.integration
def test_project_schema_migrates_twice(settings: Settings) -> None:
    first = migrate(settings, database="mig_project")
    assert first.applied == [m.name for m in load_migrations(SCHEMA_DIR)]
    again = migrate(settings, database="mig_project")
    assert again.applied == [] and again.reapplied == []


def test_invalid_database_name_refused(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="invalid database name"):
        migrate(Settings.from_env({}), database="bad-name; DROP", directory=tmp_path)
