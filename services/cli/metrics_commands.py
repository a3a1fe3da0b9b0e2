"""`safeloop metrics run`, `safeloop rollout start|status|abort|approve|reject`, `export ...`."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safeloop.infra.exceptions import ConsumerFencedError
from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.control.exceptions import ControlError
from safeloop.services.models.exceptions import ModelError
from safeloop.services.rollout.exceptions import RolloutError

if TYPE_CHECKING:
    from safeloop.services.guard.policy import GuardPolicy
    from safeloop.services.monitor.rollout_change import RolloutChanged
    from safeloop.services.rollout.machine import RolloutState, Transition
    from safeloop.services.rollout.plan import RolloutPlan

DAY_MS = 86_400_000
# The values of rollout.plan's FailAction and DeadlineAction (tests/unit/test_cli_imports.py
# checks them), spelled out so that building the parser does not import the numpy core.
FAIL_ACTIONS = ("rollback", "pause")
DEADLINE_ACTIONS = ("proceed", "pause", "rollback")
APPROVALS = ("none", "promotion", "every_step")
# guard.policy.TASK_METRICS of multi-class and regression models, spelled out likewise.
MULTICLASS_METRICS = (
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "accuracy",
    "log_loss",
    "brier_score",
)
REGRESSION_METRICS = ("mae", "rmse", "r2")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_metrics(subparsers)
    _register_rollout(subparsers)
    _register_export(subparsers)


def _ratio(value: float) -> float | None:
    return None if value <= 0 else value


def _guard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-error-rate", type=float, default=0.05, help="0 = rule off")
    parser.add_argument("--max-p99-latency-ms", type=float, default=1000.0, help="0 = rule off")
    parser.add_argument("--max-p99-latency-ratio", type=float, default=2.0, help="0 = rule off")
    parser.add_argument("--max-performance-drop", type=float, default=0.05, help="0 = rule off")
    parser.add_argument(
        "--multiclass-metric",
        choices=MULTICLASS_METRICS,
        default="macro_f1",
        help="what multi-class canaries are judged on (relative drop from production's)",
    )
    parser.add_argument(
        "--regression-metric",
        choices=REGRESSION_METRICS,
        default="mae",
        help="what regression canaries are judged on (relative rise of mae/rmse, drop of r2)",
    )
    parser.add_argument(
        "--max-client-error-excess",
        type=float,
        default=0.05,
        help="canary 4xx rate minus production's (default 0.05; 0 = rule off)",
    )
    parser.add_argument(
        "--min-requests", type=int, default=100, help="canary requests before the guard judges"
    )
    parser.add_argument(
        "--min-labelled", type=int, default=100, help="labels per side before performance counts"
    )
    parser.add_argument(
        "--guard-segment-alpha",
        type=float,
        default=0.05,
        help="family-wise false-alarm rate of the guard's per-segment verdicts",
    )
    parser.add_argument(
        "--guard-segment-correction",
        choices=("holm", "bonferroni"),
        default="holm",
        help="how the guard corrects over the segments it judges",
    )


def _guard_policy(args: argparse.Namespace) -> GuardPolicy:
    from safeloop.services.guard.policy import GuardPolicy
    from safeloop.services.metrics.multiple_comparisons import Correction
    from safeloop.services.metrics.performance import PerformanceMetric

    return GuardPolicy(
        multiclass_metric=PerformanceMetric(args.multiclass_metric),
        regression_metric=PerformanceMetric(args.regression_metric),
        max_error_rate=_ratio(args.max_error_rate),
        max_p99_latency_ms=_ratio(args.max_p99_latency_ms),
        max_p99_latency_ratio=_ratio(args.max_p99_latency_ratio),
        max_performance_drop=_ratio(args.max_performance_drop),
        max_client_error_excess=_ratio(args.max_client_error_excess),
        min_requests=args.min_requests,
        min_labelled=args.min_labelled,
        segment_alpha=args.guard_segment_alpha,
        segment_correction=Correction(args.guard_segment_correction),
    )


# -- metrics run ------------------------------------------------------------------------------


def _register_metrics(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    metrics = subparsers.add_parser("metrics", help="health, performance, drift, guard, rollouts")
    actions = metrics.add_subparsers(dest="metrics_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="run every metrics consumer, the rollback guard, rollouts and retraining decisions",
        description="Run every metrics consumer, the rollback guard, rollouts and retraining "
        "decisions until Ctrl-C. GET /readyz answers 200 once the service can act.",
        # Operators tune thresholds under pressure: --help shows every default.
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument(
        "--snapshot-interval-s", type=float, default=10.0, help="metric snapshots to ClickHouse"
    )
    run.add_argument("--health-window-rows", type=int, default=10_000, help="health window size")
    run.add_argument("--health-window-s", type=float, default=300.0, help="health window span")
    run.add_argument(
        "--performance-window-rows", type=int, default=10_000, help="performance window size"
    )
    run.add_argument(
        "--performance-window-s", type=float, default=3600.0, help="performance window span"
    )
    run.add_argument("--drift-window-rows", type=int, default=10_000, help="drift window size")
    run.add_argument(
        "--guard-window-rows", type=int, default=1_000, help="the guard's newest requests per side"
    )
    run.add_argument("--no-guard", action="store_true", help="compute metrics, never roll back")
    run.add_argument(
        "--no-rebuild",
        action="store_true",
        help="start with empty windows instead of re-reading the topics' recent past "
        "(the guard is blind until they refill)",
    )
    run.add_argument("--rollout-tick-s", type=float, default=1.0, help="rollout gate period")
    run.add_argument(
        "--retraining-interval-s", type=float, default=300.0, help="retraining decision period"
    )
    run.add_argument(
        "--http-host", default="127.0.0.1", help="address of GET /metrics and GET /healthz"
    )
    run.add_argument("--http-port", type=int, default=6067, help="0 = no HTTP endpoint")
    run.add_argument(
        "--segment-min-sample",
        type=int,
        default=100,
        help="rows a segment needs in its window before segment_metrics gets its figures "
        "and the guard judges it",
    )
    run.add_argument(
        "--instance-id",
        type=_instance_id,
        metavar="NAME",
        help="this instance's static member id in its consumer groups, kept across restarts "
        "(e.g. a StatefulSet pod's name): restarted within its session (10 s) it gets its "
        "partitions back at once. Two live instances must never share one: the older is "
        "fenced and exits 1. None: a new id per run",
    )
    _guard_arguments(run)
    run.set_defaults(func=_run_metrics, service=True)


# Kafka's rule for group.instance.id (and topic names).
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _instance_id(value: str) -> str:
    if _INSTANCE_ID.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"{value!r}: 1-249 characters of letters, digits, '.', '_' and '-'"
        )
    return value


def _run_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.monitor.endpoint import serve_service
    from safeloop.services.monitor.service import MetricsConfig
    from safeloop.services.monitor.wiring import build_metrics_service

    config = MetricsConfig(
        snapshot_interval_ms=int(args.snapshot_interval_s * 1000),
        health_window_rows=args.health_window_rows,
        health_window_span_ms=int(args.health_window_s * 1000),
        performance_window_rows=args.performance_window_rows,
        performance_window_span_ms=int(args.performance_window_s * 1000),
        drift_window_rows=args.drift_window_rows,
        guard_window_rows=args.guard_window_rows,
        guard_policy=_guard_policy(args),
        guard_enabled=not args.no_guard,
        rebuild_windows=not args.no_rebuild,
        rollout_tick_ms=int(args.rollout_tick_s * 1000),
        retraining_interval_ms=int(args.retraining_interval_s * 1000),
        segment_min_sample=args.segment_min_sample,
    )
    try:
        service = build_metrics_service(settings, config, instance_id=args.instance_id)
    except ControlError as exc:
        sys.stderr.write(f"safeloop: {exc}\n")
        return ExitCode.FAILURE
    endpoint = None
    if args.http_port:
        try:
            endpoint = serve_service(service, args.http_host, args.http_port)
        except OSError as exc:
            service.close()
            sys.stderr.write(
                f"safeloop: cannot serve on {args.http_host}:{args.http_port}: {exc}\n"
            )
            return ExitCode.FAILURE
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        service.run(stop)
    except ConsumerFencedError as exc:
        sys.stderr.write(f"safeloop: {exc}\n")
        return ExitCode.FAILURE
    finally:
        if endpoint is not None:
            endpoint.close()
    return ExitCode.OK


# -- rollout ----------------------------------------------------------------------------------


def _register_rollout(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = subparsers.add_parser("rollout", help="progressive canary: start, status, abort")
    actions = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    begin = actions.add_parser(
        "start",
        help="send the first step's share to the candidate; `metrics run` drives the rest",
    )
    begin.add_argument("model", metavar="MODEL")
    begin.add_argument("--candidate", help="version to roll out (default: the newest in store)")
    begin.add_argument("--steps", default="5,10,25,50,100", help="percent per step")
    begin.add_argument("--bake-s", type=float, default=60.0)
    begin.add_argument("--min-sample", type=int, default=500, help="canary requests per step")
    begin.add_argument("--min-labelled", type=int, default=200, help="labels per step and side")
    begin.add_argument("--require-labels", action="store_true")
    begin.add_argument(
        "--provisional",
        action="store_true",
        help="with --require-labels: pass a step on the label-free estimate; labels re-judge later",
    )
    begin.add_argument(
        "--error-rate-tolerance",
        type=float,
        default=0.005,
        help="fail a step whose canary error rate exceeds production's by more, with confidence",
    )
    begin.add_argument(
        "--min-segment-sample",
        type=int,
        default=200,
        help="requests (labels) per side before a segment is compared on its own",
    )
    begin.add_argument(
        "--segment-correction",
        choices=("holm", "bonferroni"),
        default="holm",
        help="multiple-comparison correction over segments",
    )
    begin.add_argument("--deadline-s", type=float, default=1800.0)
    begin.add_argument("--on-fail", choices=FAIL_ACTIONS, default="rollback")
    begin.add_argument("--on-deadline", choices=DEADLINE_ACTIONS, default="pause")
    begin.add_argument("--confidence", type=float, default=0.95)
    begin.add_argument("--max-p99-latency-ratio", type=float, default=2.0, help="0 = rule off")
    begin.add_argument(
        "--latency-ratio-tolerance",
        type=float,
        default=1.5,
        help="fail a step whose canary is typically this many times slower, with confidence "
        "(0 = not compared)",
    )
    begin.add_argument(
        "--approval",
        choices=APPROVALS,
        default="none",
        help="moves that wait for `rollout approve`: none, promotion or every_step",
    )
    begin.add_argument(
        "--dry-run",
        action="store_true",
        help="set the first step, then only judge and record what each gate would do",
    )
    begin.add_argument("--json", action="store_true")
    begin.set_defaults(func=_rollout_start)
    status = actions.add_parser("status", help="the model's rollout as last recorded")
    status.add_argument("model", metavar="MODEL")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_rollout_status)
    stop = actions.add_parser("abort", help="roll back to the known-good version now")
    stop.add_argument("model", metavar="MODEL")
    stop.add_argument("--json", action="store_true")
    stop.set_defaults(func=_rollout_abort)
    yes = actions.add_parser("approve", help="let a rollout waiting for approval move on")
    yes.add_argument("model", metavar="MODEL")
    yes.add_argument("--reason", default="approved", help="why (recorded in control_log)")
    yes.add_argument("--json", action="store_true")
    yes.set_defaults(func=_rollout_approve)
    no = actions.add_parser("reject", help="refuse a rollout's next move: roll back now")
    no.add_argument("model", metavar="MODEL")
    no.add_argument("--reason", required=True, help="why (recorded in control_log)")
    no.add_argument("--json", action="store_true")
    no.set_defaults(func=_rollout_reject)


def _plan(args: argparse.Namespace) -> RolloutPlan:
    from safeloop.services.guard.policy import GuardPolicy
    from safeloop.services.metrics.multiple_comparisons import Correction
    from safeloop.services.rollout.plan import Approval, DeadlineAction, FailAction, RolloutPlan

    steps = tuple(float(step) for step in args.steps.split(","))
    return RolloutPlan(
        steps_percent=steps,
        bake_ms=int(args.bake_s * 1000),
        min_sample_per_step=args.min_sample,
        min_labelled_per_step=args.min_labelled,
        deadline_ms=int(args.deadline_s * 1000),
        on_fail=FailAction(args.on_fail),
        on_deadline=DeadlineAction(args.on_deadline),
        confidence=args.confidence,
        require_labels=args.require_labels,
        provisional=args.provisional,
        latency_ratio_tolerance=args.latency_ratio_tolerance or None,
        guard=GuardPolicy(max_p99_latency_ratio=_ratio(args.max_p99_latency_ratio)),
        approval=Approval(args.approval),
        dry_run=args.dry_run,
        error_rate_tolerance=args.error_rate_tolerance,
        min_sample_per_segment=args.min_segment_sample,
        segment_correction=Correction(args.segment_correction),
    )


def _rollout_start(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.control.publisher import default_issuer
    from safeloop.services.models.open_store import open_model_store
    from safeloop.services.monitor.wiring import build_issuer, start_follower
    from safeloop.services.rollout.controller import publish_transition
    from safeloop.services.rollout.machine import start
    from safeloop.services.rollout.persist import state_to_json

    try:
        plan = _plan(args)
        store = open_model_store(settings)
        follower = start_follower(settings, label="cli")
        try:
            issuer = build_issuer(settings, follower, store, issuer=default_issuer())
            config = issuer.config_of(args.model)
            if config is None:
                return _fail(args, f"{args.model}: no command yet and not in the model store")
            candidate = args.candidate or store.versions(args.model)[-1]
            now_ms = time.time_ns() // 1_000_000
            transition = start(plan, args.model, config.production_version, candidate, now_ms)
            commands = publish_transition(issuer, plan, transition)
        finally:
            follower.close()
    except (ControlError, RolloutError, ModelError, ValueError) as exc:
        return _fail(args, str(exc))
    state = transition.state
    return _report(
        args,
        {"state": json.loads(state_to_json(state)), "sequence": commands[-1].sequence},
        f"{args.model}: rolling out {candidate} over {state.known_good_version}, "
        f"{plan.steps_percent[0]:g}% first (sequence {commands[-1].sequence})",
    )


def _rollout_status(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.clickhouse.client import clickhouse_client
    from safeloop.services.rollout.history import latest_rollout
    from safeloop.services.rollout.persist import state_to_json

    found = latest_rollout(clickhouse_client(settings), args.model)
    if found is None:
        return _fail(args, f"{args.model}: no rollout recorded")
    plan, state = found
    report = json.loads(state_to_json(state))
    report["steps_percent"] = list(plan.steps_percent)
    report["canary_percent"] = state.canary_percent(plan)
    text = (
        f"{args.model}: {state.phase.value}, {state.candidate_version} at "
        f"{state.canary_percent(plan):g}% (known good {state.known_good_version})\n"
        f"  {state.reason}"
    )
    return _report(args, report, text)


def _rollout_abort(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.control.publisher import default_issuer
    from safeloop.services.monitor.rollout_change import change_rollout
    from safeloop.services.rollout.machine import abort

    operator = default_issuer()

    def abort_now(plan: RolloutPlan, state: RolloutState, now_ms: int) -> Transition:
        return abort(state, operator, now_ms)

    return _change_rollout(
        args,
        lambda: change_rollout(
            settings, args.model, abort_now, issuer=operator, follower_label="cli"
        ),
    )


def _rollout_approve(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.control.publisher import default_issuer
    from safeloop.services.monitor.rollout_change import approve_rollout

    return _change_rollout(
        args, lambda: approve_rollout(settings, args.model, default_issuer(), args.reason)
    )


def _rollout_reject(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.control.publisher import default_issuer
    from safeloop.services.monitor.rollout_change import reject_rollout

    return _change_rollout(
        args, lambda: reject_rollout(settings, args.model, default_issuer(), args.reason)
    )


def _change_rollout(args: argparse.Namespace, apply: Callable[[], RolloutChanged]) -> int:
    """Apply an operator's transition (services/monitor/rollout_change) and report it."""
    from safeloop.services.rollout.persist import state_to_json

    try:
        changed = apply()
    except (ControlError, RolloutError) as exc:
        return _fail(args, str(exc))
    new_state = changed.state
    return _report(
        args,
        {"state": json.loads(state_to_json(new_state)), "sequence": changed.sequence},
        f"{args.model}: {new_state.phase.value}, {new_state.candidate_version} at "
        f"{new_state.canary_percent(changed.plan):g}% (sequence {changed.sequence})\n"
        f"  {new_state.reason}",
    )


# -- export -----------------------------------------------------------------------------------


def _register_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = subparsers.add_parser("export", help="labelling queue, weighted training window")
    actions = export.add_subparsers(dest="export_command", metavar="WHAT", required=True)
    queue = actions.add_parser("labelling-queue", help="unlabelled predictions worth a label")
    queue.add_argument("--model", default="")
    queue.add_argument("--limit", type=int, default=100)
    queue.add_argument("--scan", type=int, default=50_000, help="newest predictions considered")
    queue.add_argument("--out", type=Path, help="CSV file (default: stdout)")
    queue.set_defaults(func=_export_queue)
    window = actions.add_parser("training-window", help="labelled rows with recency weights")
    window.add_argument("model", metavar="MODEL")
    window.add_argument("--half-life-days", type=float, required=True)
    window.add_argument("--days", type=float, default=90.0, help="how far back to export")
    window.add_argument("--version", default="")
    window.add_argument("--normalise", action="store_true", help="weights average 1")
    window.add_argument("--out", type=Path, required=True)
    window.set_defaults(func=_export_window)


def _export_queue(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.clickhouse.client import clickhouse_client
    from safeloop.services.models.open_store import open_model_store
    from safeloop.services.monitor.exports import labelling_queue, write_queue_csv
    from safeloop.services.monitor.model_info import ModelInfoCache

    models = ModelInfoCache(open_model_store(settings))
    queue = labelling_queue(
        clickhouse_client(settings), models, args.limit, model_name=args.model, scan=args.scan
    )
    if args.out is None:
        write_queue_csv(sys.stdout, queue)
        return ExitCode.OK
    with args.out.open("w", newline="") as out:
        write_queue_csv(out, queue)
    sys.stderr.write(f"{len(queue)} predictions written to {args.out}\n")
    return ExitCode.OK


def _export_window(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.clickhouse.client import clickhouse_client
    from safeloop.services.monitor.exports import labelled_window, write_structured_csv
    from safeloop.services.retraining.export import weighted_export

    now_ms = time.time_ns() // 1_000_000
    since_ms = now_ms - int(args.days * DAY_MS)
    records = labelled_window(clickhouse_client(settings), args.model, since_ms, args.version)
    rows = weighted_export(records, now_ms, args.half_life_days * DAY_MS, normalise=args.normalise)
    write_structured_csv(args.out, rows)
    sys.stderr.write(f"{rows.shape[0]} labelled rows written to {args.out}\n")
    return ExitCode.OK


def _report(args: argparse.Namespace, report: dict[str, Any], text: str) -> int:
    sys.stdout.write((json.dumps(report, indent=2) if args.json else text) + "\n")
    return ExitCode.OK


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"error": message}) + "\n")
    else:
        sys.stderr.write(f"safeloop: {message}\n")
    return ExitCode.FAILURE
