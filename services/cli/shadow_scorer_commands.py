"""`safeloop shadow-scorer`: the process that scores shadow versions off the replicas."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from safeloop.infra.cpu_priority import CPU_PRIORITY_CHOICES, CpuPriority, lower_cpu_priority
from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.control.exceptions import ControlError

logger = logging.getLogger(__name__)


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
    scorer.add_argument(
        "--group",
        help="consumer group: scorers of one group share the work; another group scores every "
        "request again (a trial scorer, a benchmark). Default: safeloop-shadow-scorer",
    )
    scorer.add_argument(
        "--cpu-priority",
        choices=CPU_PRIORITY_CHOICES,
        help="idle: Linux SCHED_IDLE, a core only when nothing else wants it (nice 19 where "
        "refused); low: nice 19; normal: as started. A shadow must never take a core from "
        "requests: under load its answers come later, never the users'. "
        "Default: SAFELOOP_SHADOW_CPU_PRIORITY, else idle",
    )
    scorer.set_defaults(func=_run, service=True)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    scorer_id = args.scorer_id or f"shadow-{socket.gethostname()}-{os.getpid()}"
    priority = settings.shadow_cpu_priority
    if args.cpu_priority is not None:
        priority = CpuPriority(args.cpu_priority)
    # Before numpy (BLAS threads) and any Kafka client start threads: they inherit it.
    applied = lower_cpu_priority(priority)
    logger.info("shadow scorer %s CPU priority %s: %s", scorer_id, priority.value, applied)
    from safeloop.services.shadow.wiring import GROUP, build_shadow_scorer

    try:
        process = build_shadow_scorer(settings, scorer_id, group=args.group or GROUP)
    except ControlError as exc:
        sys.stderr.write(f"safeloop: {exc}\n")
        return ExitCode.FAILURE
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    process.run(stop)
    return ExitCode.OK
