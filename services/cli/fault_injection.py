"""`safeloop inject MODEL VERSION --error-rate R --latency-ms L --for 5m`: a signed rehearsal.

The fault travels in the model's config (`ModelConfig.injection`) with its expiry time, so
replicas stop applying it by themselves; `--stop` ends it early.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import TYPE_CHECKING

from safeloop.infra import duration
from safeloop.schemas.events import CommandKind, FaultInjection, ModelConfig
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.control.exceptions import CommandError
from safeloop.services.control.validation import MAX_INJECTED_LATENCY_MS

if TYPE_CHECKING:
    from safeloop.services.control.publisher import ConfigChange

MAX_DURATION_S = 24 * 3600


def parse_duration_s(text: str) -> float:
    """`300`, `300s`, `5m`, `1.5h`, `500ms` -> seconds; a UsageError naming --for otherwise."""
    try:
        return duration.parse_duration_s(text)
    except ValueError as exc:
        raise UsageError(f"--for takes a duration like 30s, 5m or 1h: {exc}") from None


def add_inject_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", metavar="VERSION", nargs="?", help="the version to fail")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="share of its requests failed (0-1)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added to each of its requests"
    )
    parser.add_argument(
        "--for", dest="duration", default="5m", help="how long, e.g. 30s, 5m, 1h (default 5m)"
    )
    parser.add_argument("--stop", action="store_true", help="end the model's injection now")


def inject_change(args: argparse.Namespace) -> tuple[CommandKind, ConfigChange, dict[str, str]]:
    """The INJECT command's change: set (or with --stop clear) the model's injection."""
    if args.stop:

        def clear(config: ModelConfig) -> ModelConfig:
            if config.injection is None:
                raise CommandError(f"{args.model} has no injection to stop")
            return dataclasses.replace(config, injection=None)

        if not args.reason:
            args.reason = "fault injection stopped"
        return CommandKind.INJECT, clear, {"stop": "true"}
    if not args.version:
        raise UsageError("name the VERSION to inject into (or pass --stop)")
    if not 0.0 <= args.error_rate <= 1.0:
        raise UsageError(f"--error-rate must be between 0 and 1, got {args.error_rate:g}")
    if not 0.0 <= args.latency_ms <= MAX_INJECTED_LATENCY_MS:
        raise UsageError(f"--latency-ms must be between 0 and {MAX_INJECTED_LATENCY_MS:g}")
    if args.error_rate == 0.0 and args.latency_ms == 0.0:
        raise UsageError("give --error-rate and/or --latency-ms")
    duration_s = parse_duration_s(args.duration)
    if not 0 < duration_s <= MAX_DURATION_S:
        raise UsageError(f"--for must be more than 0 and at most {MAX_DURATION_S // 3600} h")
    until = time.time_ns() // 1_000_000 + round(duration_s * 1000)
    injection = FaultInjection(args.version, args.error_rate, args.latency_ms, until)
    if not args.reason:
        args.reason = (
            f"rehearsal: {args.version} fails {args.error_rate:.0%} of requests, "
            f"+{args.latency_ms:g} ms, for {args.duration}"
        )

    def inject(config: ModelConfig) -> ModelConfig:
        return dataclasses.replace(config, injection=injection)

    details = {
        "version": args.version,
        "error_rate": f"{args.error_rate:g}",
        "latency_ms": f"{args.latency_ms:g}",
        "until": str(until),
    }
    return CommandKind.INJECT, inject, details


def describe_injection(injection: FaultInjection, now_ms: int) -> str:
    """One phrase for `status`: what is injected into which version, and until when."""
    until = time.strftime("%H:%M:%S", time.gmtime(injection.until / 1000))
    parts = []
    if injection.error_rate:
        parts.append(f"{injection.error_rate:.0%} errors")
    if injection.latency_ms:
        parts.append(f"+{injection.latency_ms:g} ms")
    if injection.active(now_ms):
        state = f"until {until}Z ({(injection.until - now_ms) / 1000:.0f} s left)"
    else:
        state = f"expired {until}Z"
    return f"INJECTING {injection.version}: {', '.join(parts)} {state}"
