"""`safeloop process`: run the stream worker(s) that pair predictions with outcomes."""

from __future__ import annotations

import argparse
import sys

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.cli.worker_fleet import WorkerFleet


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "process",
        help="run the stream processor (join predictions and outcomes into ClickHouse)",
        description=(
            "Run the faust stream workers. Join windows come from SAFELOOP_JOIN_WINDOW_MS "
            "(default 30 days) and SAFELOOP_JOIN_WINDOWS (model=ms,...); an outcome that came "
            "before its prediction waits SAFELOOP_EARLY_OUTCOME_WAIT_MS (default 1 h). Refuses "
            "to start unless predictions, outcomes and join-repartition have "
            "SAFELOOP_PARTITIONS partitions."
        ),
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1); one that dies is started again, and all get "
        "SIGTERM if this process dies",
    )
    parser.add_argument(
        "--web-port", type=int, default=6066, help="first worker's /metrics port (default 6066)"
    )
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-max", type=int, default=10_000, help="events per batch")
    parser.add_argument(
        "--flush-interval-ms", type=int, default=250, help="ClickHouse flush interval"
    )
    parser.set_defaults(func=run_process, service=True)


def run_process(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        sys.stderr.write("safeloop: --workers must be at least 1\n")
        return ExitCode.USAGE
    if args.workers == 1 or args.worker_index is not None:
        return _run_one(args, settings, args.worker_index or 0)
    return _run_many(args)


def _run_one(args: argparse.Namespace, settings: Settings, index: int) -> int:
    # Imported here: faust is heavy and only this sub-command needs it.
    from safeloop.streams.worker import build_worker, worker_config

    config = worker_config(index, args.web_port, args.batch_max, args.flush_interval_ms)
    return build_worker(settings, config).run()


def _run_many(args: argparse.Namespace) -> int:
    def command_for(index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "safeloop.streams.worker",
            "--worker-index",
            str(index),
            "--web-port",
            str(args.web_port),
            "--batch-max",
            str(args.batch_max),
            "--flush-interval-ms",
            str(args.flush_interval_ms),
        ]

    return WorkerFleet(args.workers, command_for).run()
