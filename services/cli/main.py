"""The `safeloop` command line: one entry point, one sub-command module per concept."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol

from safeloop import SafeloopError
from safeloop.infra.process_logging import KAFKA_CLIENT_LOGGER, configure_logging
from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode, report_failure

# Each module exposes `register(subparsers)` for the sub-commands listed beside it (checked by
# tests/unit/test_cli_imports.py); those set `func(args, settings) -> int`. `safeloop COMMAND`
# imports and registers only COMMAND's module: an operator's command starts without parsing
# the other dozen modules and building their fifty parsers. `--help` registers them all.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "safeloop.services.cli.kafka_commands": ("kafka", "topics"),
    "safeloop.services.cli.warehouse_commands": ("warehouse", "migrate"),
    "safeloop.services.cli.process_commands": ("process",),
    "safeloop.services.cli.control_commands": (
        "rollback",
        "canary",
        "promote",
        "flag",
        "shadow",
        "inject",
        "status",
        "keygen",
    ),
    "safeloop.services.cli.serve_commands": ("serve", "model"),
    "safeloop.services.cli.shadow_scorer_commands": ("shadow-scorer",),
    "safeloop.services.cli.dashboard_commands": ("dashboard",),
    "safeloop.services.cli.metrics_commands": ("metrics", "rollout", "export"),
    "safeloop.services.cli.demo_commands": ("demo",),
    "safeloop.services.cli.outcomes_commands": ("outcomes",),
    "safeloop.services.cli.ingest_commands": ("ingest",),
    "safeloop.services.cli.plan_commands": ("plan",),
    "safeloop.services.cli.retrain_commands": ("retrain",),
}
MODULE_OF_COMMAND: dict[str, str] = {
    command: module for module, commands in COMMAND_MODULES.items() for command in commands
}


class CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every sub-command registered, or only those of `command`'s module."""
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
    owner = MODULE_OF_COMMAND.get(command or "")
    for name in COMMAND_MODULES if owner is None else (owner,):
        module: CommandModule = importlib.import_module(name)
        module.register(subparsers)
    return parser


def requested_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in `argv`: the first word that is not an option.

    The top-level options (-v, --debug, -h) take no value, so the first other word is it."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def deepest_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The sub-command parser `args` came through (`safeloop kafka start` -> start's)."""
    while True:
        chosen = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest:
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
        if chosen is None:
            return parser
        parser = chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and return its exit code (see `ExitCode`)."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(requested_command(words))
    args, extra = parser.parse_known_args(words)
    if extra:
        # Named by the sub-command that refused them, with its usage, not the top level's.
        deepest_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        build_parser().print_help()
        return ExitCode.USAGE
    try:
        settings = Settings.from_env()
    except SafeloopError as exc:
        return report_failure(exc, debug=args.debug)
    debug = args.debug or settings.log_level == "DEBUG"
    configure_logging("DEBUG" if args.verbose or debug else settings.log_level)
    if not (getattr(args, "service", False) or args.verbose or debug):
        # A one-off command reports a broker it cannot reach itself, with a hint; librdkafka's
        # per-connection lines before that are noise. Services keep them (their logs).
        logging.getLogger(KAFKA_CLIENT_LOGGER).setLevel(logging.CRITICAL)
    try:
        code: int = args.func(args, settings)
    except SafeloopError as exc:
        return report_failure(exc, debug=debug, settings=settings)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
