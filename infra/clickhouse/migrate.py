"""Applying schemas/clickhouse/NNN_name.sql in order, once each, recorded in schema_migrations."""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop import schemas
from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.cluster_ddl import (
    ClusterTarget,
    create_database,
    render_statement,
    table_names,
)
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


def for_cluster(migrations: list[Migration], target: ClusterTarget) -> list[Migration]:
    """`migrations` rendered for a replicated, sharded cluster (cluster_ddl.py); same names
    and checksums, so a file is applied once whichever form it took."""
    tables = table_names([s for m in migrations for s in m.statements])
    return [
        replace(
            migration,
            statements=tuple(
                out for s in migration.statements for out in render_statement(s, tables, target)
            ),
        )
        for migration in migrations
    ]


def cluster_ddl(database: str, cluster: str, directory: Path = SCHEMA_DIR) -> list[str]:
    """Every statement `migrate(..., cluster=cluster)` would run, in order (for review)."""
    target = ClusterTarget(cluster, _checked(database))
    statements = [create_database(target), *render_statement(_CREATE_TABLE, set(), target)]
    return statements + [
        s for m in for_cluster(load_migrations(directory), target) for s in m.statements
    ]


def migrate(
    settings: Settings,
    database: str | None = None,
    directory: Path = SCHEMA_DIR,
    cluster: str | None = None,
) -> MigrationReport:
    """Create the database and apply each migration not yet applied; safe to run again.

    A file changed since it was applied is applied again (its DDL is idempotent) with a warning.
    With `cluster`, the DDL runs ON CLUSTER in its replicated, sharded form (cluster_ddl.py).
    """
    name = _checked(database or settings.clickhouse_database)
    migrations = load_migrations(directory)
    create = f"CREATE DATABASE IF NOT EXISTS `{name}`"
    setup = [_CREATE_TABLE]
    if cluster is not None:
        target = ClusterTarget(cluster, name)
        migrations = for_cluster(migrations, target)
        create = create_database(target)
        setup = render_statement(_CREATE_TABLE, set(), target)
    with closing(clickhouse_client(settings, database="")) as admin:
        _run(admin, create, f"CREATE DATABASE {name}:")
    report = MigrationReport(database=name)
    with closing(clickhouse_client(settings, database=name)) as client:
        for statement in setup:
            _run(client, statement, f"CREATE TABLE {MIGRATIONS_TABLE}:")
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


def _checked(database: str) -> str:
    if not _IDENTIFIER.match(database):
        raise WarehouseError(f"invalid database name {database!r}")
    return database


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
