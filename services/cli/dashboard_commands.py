"""`safeloop dashboard`: serve the built-in web dashboard until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode

DEFAULT_PORT = 8050


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the web dashboard (read-only over ClickHouse) until Ctrl-C",
        description="Serve the dashboard page and its JSON API; it reads ClickHouse "
        "(CLICKHOUSE_URL or the embedded endpoint) with readonly=1 and refreshes by itself. "
        "With SAFELOOP_DASHBOARD_OPERATOR_TOKEN set, operators holding the token may approve "
        "or reject rollouts waiting for approval; the dashboard then publishes the signed "
        "command as `safeloop rollout approve|reject` does (operator Kafka role, control key).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (127.0.0.1); beyond loopback SAFELOOP_DASHBOARD_PASSWORD is "
        "required and every page asks for it (HTTP Basic, user SAFELOOP_DASHBOARD_USER)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    parser.set_defaults(func=_serve, service=True)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn
    from starlette.types import ASGIApp

    from safeloop.services.dashboard.access import BasicAuth, check_dashboard_bind
    from safeloop.services.dashboard.app import create_app
    from safeloop.services.dashboard.assets import plotly_js
    from safeloop.services.dashboard.decisions import writes_from
    from safeloop.services.dashboard.reader import Reader

    check_dashboard_bind(args.host, settings.dashboard_password)
    plotly_js()  # fail now, with the fix in the message, rather than on the first page load
    writes = writes_from(settings)
    app: ASGIApp = create_app(Reader(settings), writes)
    if settings.dashboard_password:
        app = BasicAuth(app, settings.dashboard_user, settings.dashboard_password)
    sys.stdout.write(
        f"dashboard on http://{args.host}:{args.port}/ reading {settings.clickhouse_endpoint} "
        f"database {settings.clickhouse_database}; approvals "
        f"{'on (operator token set)' if writes else 'off (read-only)'} (Ctrl-C to stop)\n"
    )
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return ExitCode.OK
