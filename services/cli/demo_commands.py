"""`safeloop demo`: the whole loop locally, a scripted story, a summary, then the dashboard."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.demo.config import DEFAULT_DURATION_S, DEFAULT_RATE, DemoConfig
from safeloop.services.demo.exceptions import StackError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="start everything locally and tell the whole loop's story",
        description=(
            "Start Kafka, the ClickHouse endpoint, the stream processor, two serving replicas, "
            "the metrics service and the dashboard; drive generated traffic with delayed labels "
            "through a canary promotion, an automatic rollback and drift, then let the retraining "
            "loop close the circle by itself; print a summary and keep the dashboard open until "
            "Ctrl-C."
        ),
        epilog=(
            "exit codes: 0 every expected outcome happened, 1 an outcome is missing (named) or "
            "a service failed, 2 usage"
        ),
    )
    demo.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION_S, metavar="S",
        help=f"story length in seconds; bake times scale with it (default {DEFAULT_DURATION_S:g})",
    )  # fmt: skip
    demo.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, metavar="R",
        help=f"requests per second (default {DEFAULT_RATE:g})",
    )  # fmt: skip
    demo.add_argument(
        "--keep-open", action=argparse.BooleanOptionalAction, default=True,
        help="keep the dashboard open after the summary until Ctrl-C (default: yes)",
    )  # fmt: skip
    demo.add_argument(
        "--kafka-security", choices=("sasl_ssl", "plaintext"), default="sasl_ssl",
        help="the local broker's security: sasl_ssl (TLS, SCRAM users, ACLs; each process acts "
        "as its own role) or plaintext (local experiments only) (default: sasl_ssl)",
    )  # fmt: skip
    demo.add_argument(
        "--worse-candidate", action="store_true",
        help="the retraining loop trains its candidate on a corrupted label feed, with its "
        "offline checks (shadow agreement, estimated accuracy) off: the canary's guard must "
        "roll it back (default: a sound candidate, promoted)",
    )  # fmt: skip
    demo.add_argument(
        "--state-dir", type=Path, default=None,
        help="data and logs go under <dir>/demo (default: SAFELOOP_STATE_DIR)",
    )  # fmt: skip
    demo.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.demo.run import run_demo

    if args.duration < 20 or not 1 <= args.rate <= 500:
        sys.stderr.write("safeloop demo: --duration must be >= 20 s and --rate 1-500 req/s\n")
        return ExitCode.USAGE
    config = DemoConfig(
        duration_s=args.duration,
        rate=args.rate,
        keep_open=args.keep_open,
        state_dir=args.state_dir or settings.state_dir,
        kafka_security=args.kafka_security,
        worse_candidate=args.worse_candidate,
    )
    # Ctrl-C works even when started from a script that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        result = run_demo(config, settings, sys.stdout)
    except StackError as exc:
        sys.stderr.write(f"safeloop demo: {exc}\n")
        return ExitCode.FAILURE
    if result.missing:
        sys.stderr.write("safeloop demo: missing outcome(s): " + "; ".join(result.missing) + "\n")
        return ExitCode.FAILURE
    return ExitCode.OK


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
