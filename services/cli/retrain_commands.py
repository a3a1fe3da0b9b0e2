"""`safeloop retrain run|status|approve|reject`: the retraining loop and its approval gate."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.retraining.exceptions import RetrainingError

if TYPE_CHECKING:
    from safeloop.services.retraining.machine import RetrainRun, Transition


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retrain = subparsers.add_parser(
        "retrain", help="the retraining loop: decision -> candidate -> shadow -> canary"
    )
    actions = retrain.add_subparsers(dest="retrain_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="act on retraining decisions until Ctrl-C",
        description="Act on `should_retrain` decisions: export the recency-weighted labelled "
        "window, train with SAFELOOP_RETRAIN_TRAINER, register the candidate with its lineage, "
        "shadow it, and start the canary rollout (`metrics run` drives it) when its shadow "
        "agreement and estimated performance are acceptable.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--shadow-bake-s", type=float, default=60.0, help="least time in shadow")
    run.add_argument(
        "--shadow-deadline-s", type=float, default=900.0, help="reject without enough pairs by"
    )
    run.add_argument("--min-shadow-pairs", type=int, default=200, help="shadow answers needed")
    run.add_argument(
        "--min-agreement", type=float, default=0.7, help="least shadow agreement with production"
    )
    run.add_argument(
        "--performance-tolerance",
        type=float,
        default=0.01,
        help="how much worse than production the candidate may score on the newest labels",
    )
    run.add_argument(
        "--retry-after-s",
        type=float,
        default=3600.0,
        help="after a run ends without promotion, no new run for the same version this long",
    )
    run.add_argument(
        "--approval",
        action="store_true",
        help="hold an accepted candidate for `retrain approve` before its canary starts",
    )
    run.add_argument("--steps", default="5,10,25,50,100", help="canary percent per step")
    run.add_argument("--bake-s", type=float, default=60.0, help="canary bake time per step")
    run.add_argument("--min-sample", type=int, default=500, help="canary requests per step")
    run.add_argument("--min-labelled", type=int, default=200, help="labels per step and side")
    run.add_argument(
        "--require-labels",
        action="store_true",
        help="each canary step waits for --min-labelled labels and compares accuracy",
    )
    run.add_argument("--deadline-s", type=float, default=1800.0, help="a canary step's deadline")
    run.add_argument("--max-p99-latency-ratio", type=float, default=2.0, help="0 = rule off")
    run.add_argument(
        "--latency-ratio-tolerance",
        type=float,
        default=1.5,
        help="fail a canary step typically this many times slower (0 = not compared)",
    )
    run.add_argument("--tick-s", type=float, default=1.0, help="how often runs are moved on")
    run.set_defaults(func=_run, service=True)
    status = actions.add_parser("status", help="retraining runs as recorded, newest last")
    status.add_argument("model", metavar="MODEL", nargs="?", default="")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    yes = actions.add_parser("approve", help="let a candidate waiting for approval go to canary")
    yes.add_argument("model", metavar="MODEL")
    yes.add_argument("--reason", default="approved", help="why (recorded in retraining_steps)")
    yes.add_argument("--json", action="store_true")
    yes.set_defaults(func=_approve)
    no = actions.add_parser("reject", help="refuse a candidate in shadow or waiting: shadow off")
    no.add_argument("model", metavar="MODEL")
    no.add_argument("--reason", required=True, help="why (recorded in retraining_steps)")
    no.add_argument("--json", action="store_true")
    no.set_defaults(func=_reject)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.guard.policy import GuardPolicy
    from safeloop.services.retrain_loop.wiring import build_retrain_service
    from safeloop.services.retraining.loop_policy import LoopPolicy
    from safeloop.services.rollout.plan import RolloutPlan

    policy = LoopPolicy(
        shadow_bake_ms=int(args.shadow_bake_s * 1000),
        shadow_deadline_ms=int(args.shadow_deadline_s * 1000),
        min_shadow_pairs=args.min_shadow_pairs,
        min_agreement=args.min_agreement,
        performance_tolerance=args.performance_tolerance,
        approval=args.approval,
        retry_after_ms=int(args.retry_after_s * 1000),
    )
    plan = RolloutPlan(
        steps_percent=tuple(float(step) for step in args.steps.split(",")),
        bake_ms=int(args.bake_s * 1000),
        min_sample_per_step=args.min_sample,
        min_labelled_per_step=args.min_labelled,
        require_labels=args.require_labels,
        deadline_ms=int(args.deadline_s * 1000),
        latency_ratio_tolerance=args.latency_ratio_tolerance or None,
        guard=GuardPolicy(
            max_p99_latency_ratio=args.max_p99_latency_ratio
            if args.max_p99_latency_ratio > 0
            else None
        ),
    )
    service = build_retrain_service(settings, policy, plan, tick_ms=int(args.tick_s * 1000))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    service.run(stop)
    return ExitCode.OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.clickhouse.client import clickhouse_client
    from safeloop.services.retrain_loop.step_log import StepLog
    from safeloop.services.retraining.persist import run_to_json

    runs = StepLog(clickhouse_client(settings)).runs(args.model)
    if args.json:
        sys.stdout.write(json.dumps([json.loads(run_to_json(r)) for r in runs], indent=2) + "\n")
        return ExitCode.OK
    if not runs:
        sys.stdout.write("no retraining runs recorded\n")
    for run in runs:
        candidate = run.candidate_version or "-"
        sys.stdout.write(
            f"{run.model_name} {run.run_id}: {run.stage.value}, candidate {candidate} "
            f"(from {run.base_version})\n  {run.reason}\n"
        )
    return ExitCode.OK


RunChange = Callable[["RetrainRun", str, int], "Transition"]


def _approve(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.retraining.machine import approve

    return _change(args, settings, lambda run, actor, now: approve(run, actor, args.reason, now))


def _reject(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.retraining.machine import reject

    return _change(args, settings, lambda run, actor, now: reject(run, actor, args.reason, now))


def _change(args: argparse.Namespace, settings: Settings, change: RunChange) -> int:
    """Record a person's move on the model's newest run; `retrain run` acts on it."""
    from safeloop.infra.clickhouse.client import clickhouse_client
    from safeloop.services.control.publisher import default_issuer
    from safeloop.services.retrain_loop.step_log import StepLog
    from safeloop.services.retraining.persist import run_to_json

    log = StepLog(clickhouse_client(settings))
    try:
        run = log.latest(args.model)
        if run is None:
            return _fail(args, f"{args.model}: no retraining run recorded")
        moved = change(run, default_issuer(), time.time_ns() // 1_000_000).run
        log.record(moved)
        # The loop may have taken that step first (same step number): then ours was dropped.
        recorded = log.find(moved.run_id)
        if recorded is None or (recorded.stage, recorded.actor) != (moved.stage, moved.actor):
            now = "unknown" if recorded is None else recorded.stage.value
            return _fail(args, f"{args.model} {moved.run_id}: the loop moved first ({now})")
    except RetrainingError as exc:
        return _fail(args, str(exc))
    report: dict[str, Any] = json.loads(run_to_json(moved))
    text = f"{args.model} {moved.run_id}: {moved.stage.value}\n  {moved.reason}"
    sys.stdout.write((json.dumps(report, indent=2) if args.json else text) + "\n")
    return ExitCode.OK


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"error": message}) + "\n")
    else:
        sys.stderr.write(f"safeloop: {message}\n")
    return ExitCode.FAILURE
