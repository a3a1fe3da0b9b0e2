"""`safeloop warehouse start|stop|status` (the embedded endpoint) and `safeloop migrate`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from safeloop.infra.warehouse import WarehouseStatus


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    warehouse = subparsers.add_parser(
        "warehouse", help="run the embedded ClickHouse endpoint (chDB behind the HTTP interface)"
    )
    actions = warehouse.add_subparsers(dest="warehouse_command", metavar="ACTION", required=True)
    start = actions.add_parser(
        "start",
        help="start the endpoint in the background and wait until it answers",
        description="Start the endpoint as a daemon (pid and log files under the state "
        "directory) and print its URL; with --foreground, serve in this terminal until Ctrl-C.",
    )
    start.add_argument("--foreground", action="store_true", help="serve in this terminal")
    start.add_argument("--json", action="store_true", help="print the status as JSON")
    start.set_defaults(func=_start)
    stop = actions.add_parser("stop", help="stop the endpoint (SIGTERM, then wait)")
    stop.add_argument("--json", action="store_true", help="print the status as JSON")
    stop.set_defaults(func=_stop)
    status = actions.add_parser("status", help="is the endpoint running (exit code 1 if not)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_status)

    migrate_parser = subparsers.add_parser(
        "migrate", help="create the ClickHouse database and apply schemas/clickhouse/*.sql"
    )
    migrate_parser.add_argument("--database", help="database to migrate (CLICKHOUSE_DATABASE)")
    migrate_parser.add_argument(
        "--dir",
        type=Path,
        help="directory of NNN_name.sql files (default: the package's schemas/clickhouse)",
    )
    migrate_parser.add_argument(
        "--cluster",
        metavar="NAME",
        help="a replicated, sharded ClickHouse: tables as Replicated*MergeTree ON CLUSTER NAME "
        "plus Distributed tables under the same names (see README, ClickHouse beyond one server)",
    )
    migrate_parser.add_argument(
        "--print",
        action="store_true",
        help="print the DDL that would run (with --cluster: its cluster form) and apply nothing",
    )
    migrate_parser.set_defaults(func=_migrate)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _external(settings: Settings) -> bool:
    if settings.uses_embedded_clickhouse:
        return False
    _write(f"CLICKHOUSE_URL is set: safeloop uses {settings.clickhouse_url}, not the endpoint")
    return True


def _start(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.warehouse import ServerConfig, WarehouseProcess
    from safeloop.infra.warehouse.daemon import run

    if _external(settings):
        return ExitCode.OK
    if args.foreground:
        process = WarehouseProcess(settings)
        run(ServerConfig.from_settings(settings), process.pid_file, on_ready=_announce)
        return ExitCode.OK
    status = WarehouseProcess(settings).start()
    _report(status, args.json)
    return ExitCode.OK if status.running else ExitCode.FAILURE


def _announce(url: str) -> None:
    _write(f"warehouse endpoint serving {url} (Ctrl-C to stop)")


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.warehouse import WarehouseProcess

    process = WarehouseProcess(settings)
    stopped = process.stop()
    if not args.json:
        _write("warehouse endpoint stopped" if stopped else "warehouse endpoint was not running")
    else:
        _report(process.status(), True)
    return ExitCode.OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.warehouse import WarehouseProcess

    if not args.json and _external(settings):
        return ExitCode.OK
    status = WarehouseProcess(settings).status()
    _report(status, args.json)
    return ExitCode.OK if status.running else ExitCode.FAILURE


def _report(status: WarehouseStatus, as_json: bool) -> None:
    if as_json:
        _write(json.dumps(status.as_dict(), indent=2))
    elif status.running:
        _write(
            f"warehouse endpoint running at {status.url} (pid {status.pid}, "
            f"data in {status.data_dir}, log {status.log_file})"
        )
    else:
        stale = f" (removed stale pid file of pid {status.pid})" if status.stale_pid_file else ""
        _write(f"warehouse endpoint is not running{stale} (data in {status.data_dir})")


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.clickhouse.migrate import SCHEMA_DIR, cluster_ddl, load_migrations, migrate

    directory = args.dir or SCHEMA_DIR
    if args.print:
        database = args.database or settings.clickhouse_database
        if args.cluster:
            statements = cluster_ddl(database, args.cluster, directory)
        else:
            statements = [s for m in load_migrations(directory) for s in m.statements]
        sys.stdout.write("".join(f"{statement};\n\n" for statement in statements))
        return ExitCode.OK
    report = migrate(settings, database=args.database, directory=directory, cluster=args.cluster)
    _write(
        f"database {report.database}: {len(report.applied)} applied, "
        f"{len(report.reapplied)} re-applied (changed), {len(report.unchanged)} unchanged"
    )
    return ExitCode.OK
