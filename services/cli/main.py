"""The `safeloop` command line: one entry point, one sub-command module per concept."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol

from safeloop.infra.exceptions import InfraError
from safeloop.infra.settings import Settings

# Each module exposes `register(subparsers)`; its sub-commands set `func(args, settings) -> int`.
COMMAND_MODULES: tuple[str, ...] = (
    "safeloop.services.cli.kafka_commands",
    "safeloop.services.cli.warehouse_commands",
    "safeloop.services.cli.process_commands",
    "safeloop.services.cli.control_commands",
    "safeloop.services.cli.serve_commands",
    "safeloop.services.cli.dashboard_commands",
    "safeloop.services.cli.metrics_commands",
    "safeloop.services.cli.demo_commands",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="safeloop",
        description="Feedback loops and safe deployment for ML models on Kafka and ClickHouse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module: CommandModule = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and return its exit code (0 ok, 1 failure, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = Settings.from_env()
    except InfraError as exc:
        sys.stderr.write(f"safeloop: {exc}\n")
        return EXIT_USAGE
    logging.basicConfig(
        level="DEBUG" if args.verbose else settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args, settings)
    except InfraError as exc:
        sys.stderr.write(f"safeloop: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
