"""Applying schemas/clickhouse/NNN_name.sql in order, once each, recorded in schema_migrations."""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop import schemas
from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.settings import Settings

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(schemas.__file__).resolve().parent / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^\d+_[A-Za-z0-9_]+\.sql$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY name
"""


@dataclass(frozen=True)
class Migration:
    """One DDL file: its name, content checksum and statements."""

    name: str
    checksum: str
    statements: tuple[str, ...]


@dataclass
class MigrationReport:
    """What `migrate` did to which database."""

    database: str
    applied: list[str] = field(default_factory=list)
    reapplied: list[str] = field(default_factory=list)  # changed since they were applied
    unchanged: list[str] = field(default_factory=list)


def split_statements(text: str) -> list[str]:
    """Statements separated by `;` at the end of a line; comment lines never end one."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        current.append(line)
        if line.lstrip().startswith("--") or not line.rstrip().endswith(";"):
            continue
        statements.append("\n".join(current).rstrip().rstrip(";"))
        current = []
    statements.append("\n".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(
        line.strip() and not line.lstrip().startswith("--") for line in statement.splitlines()
    )


def load_migrations(directory: Path = SCHEMA_DIR) -> list[Migration]:
    """The migration files of `directory`, in name order."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        if not _FILE_NAME.match(path.name):
            log.warning("skipping %s: migration files are named NNN_name.sql", path)
            continue
        raw = path.read_bytes()
        migrations.append(
            Migration(
                name=path.name,
                checksum=hashlib.sha256(raw).hexdigest(),
                statements=tuple(split_statements(raw.decode())),
            )
        )
    return migrations


def migrate(
    settings: Settings, database: str | None = None, directory: Path = SCHEMA_DIR
) -> MigrationReport:
    """Create the database and apply each migration not yet applied; safe to run again.

    A file changed since it was applied is applied again (its DDL is idempotent) with a warning.
    """
    name = database or settings.clickhouse_database
    if not _IDENTIFIER.match(name):
        raise WarehouseError(f"invalid database name {name!r}")
    migrations = load_migrations(directory)
    with closing(clickhouse_client(settings, database="")) as admin:
        _run(admin, f"CREATE DATABASE IF NOT EXISTS `{name}`", f"CREATE DATABASE {name}:")
    report = MigrationReport(database=name)
    with closing(clickhouse_client(settings, database=name)) as client:
        _run(client, _CREATE_TABLE, f"CREATE TABLE {MIGRATIONS_TABLE}:")
        done = _applied(client)
        for migration in migrations:
            previous = done.get(migration.name)
            if previous == migration.checksum:
                report.unchanged.append(migration.name)
                continue
            if previous is not None:
                log.warning(
                    "%s changed since it was applied to %s; applying it again",
                    migration.name,
                    name,
                )
            _apply(client, migration)
            (report.reapplied if previous is not None else report.applied).append(migration.name)
    log.info(
        "migrated %s: %d applied, %d re-applied, %d unchanged",
        name,
        len(report.applied),
        len(report.reapplied),
        len(report.unchanged),
    )
    return report


def _applied(client: Client) -> dict[str, str]:
    result = client.query(
        f"SELECT name, argMax(checksum, applied_at) FROM {MIGRATIONS_TABLE} GROUP BY name"  # noqa: S608
    )
    return {str(row[0]): str(row[1]) for row in result.result_rows}


def _apply(client: Client, migration: Migration) -> None:
    for number, statement in enumerate(migration.statements, start=1):
        _run(client, statement, f"{migration.name}, statement {number},")
    try:
        client.insert(
            MIGRATIONS_TABLE,
            [[migration.name, migration.checksum]],
            column_names=["name", "checksum"],
        )
    except ClickHouseError as exc:
        raise WarehouseError(f"recording {migration.name} failed: {exc}") from exc
    log.info("applied %s (%d statements)", migration.name, len(migration.statements))


def _run(client: Client, statement: str, what: str) -> None:
    try:
        client.command(statement)
    except ClickHouseError as exc:
        raise WarehouseError(f"migration failed at {what} {exc}") from exc
