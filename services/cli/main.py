"""The `safeloop` command line: one entry point, one sub-command module per concept."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol

from safeloop import SafeloopError
from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode, report_failure

# Each module exposes `register(subparsers)`; its sub-commands set `func(args, settings) -> int`.
COMMAND_MODULES: tuple[str, ...] = (
    "safeloop.services.cli.kafka_commands",
    "safeloop.services.cli.warehouse_commands",
    "safeloop.services.cli.process_commands",
    "safeloop.services.cli.control_commands",
    "safeloop.services.cli.serve_commands",
    "safeloop.services.cli.shadow_scorer_commands",
    "safeloop.services.cli.dashboard_commands",
    "safeloop.services.cli.metrics_commands",
    "safeloop.services.cli.demo_commands",
    "safeloop.services.cli.outcomes_commands",
    "safeloop.services.cli.ingest_commands",
    "safeloop.services.cli.plan_commands",
    "safeloop.services.cli.retrain_commands",
)


class CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="safeloop",
        description="Feedback loops and safe deployment for ML models on Kafka and ClickHouse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log at DEBUG level and show the traceback of a failure (or SAFELOOP_LOG_LEVEL=DEBUG)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module: CommandModule = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and return its exit code (see `ExitCode`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.USAGE
    try:
        settings = Settings.from_env()
    except SafeloopError as exc:
        return report_failure(exc, debug=args.debug)
    debug = args.debug or settings.log_level == "DEBUG"
    logging.basicConfig(
        level="DEBUG" if args.verbose or debug else settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args, settings)
    except SafeloopError as exc:
        return report_failure(exc, debug=debug)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
