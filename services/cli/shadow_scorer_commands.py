"""`safeloop shadow-scorer`: the process that scores shadow versions off the replicas."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.control.exceptions import ControlError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scorer = subparsers.add_parser(
        "shadow-scorer",
        help="score shadow versions from `predictions`, off the replicas' request path",
        description="Consumes `predictions` (which carry the features), and for every answered "
        "request of a model whose config has a shadow on, scores the shadow version and "
        "publishes its answer (route shadow, the request's prediction_id). Run one or more "
        "(they share a consumer group); replicas never score shadows themselves.",
        epilog="exit codes: 0 stopped cleanly, 1 failure (no control key, Kafka unreachable)",
    )
    scorer.add_argument("--scorer-id", help="default: shadow-<host>-<pid>")
    scorer.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.shadow.wiring import build_shadow_scorer

    scorer_id = args.scorer_id or f"shadow-{socket.gethostname()}-{os.getpid()}"
    try:
        process = build_shadow_scorer(settings, scorer_id)
    except ControlError as exc:
        sys.stderr.write(f"safeloop: {exc}\n")
        return ExitCode.FAILURE
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    process.run(stop)
    return ExitCode.OK
