"""`safeloop inject`: arguments, the config change it signs, and how `status` shows it."""

from __future__ import annotations

import argparse
import time

import pytest

from safeloop.schemas.events import CommandKind, FaultInjection, ModelConfig
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.cli.fault_injection import (
    describe_injection,
    inject_change,
    parse_duration_s,
)
from safeloop.services.cli.main import build_parser
from safeloop.services.control.exceptions import CommandError
from safeloop.services.control.validation import config_problem


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["inject", "churn", *argv])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300.0), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


def test_a_bad_duration_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--for"):
        parse_duration_s("soon")


def test_inject_sets_the_versions_fault_with_its_expiry() -> None:
    before_ms = time.time_ns() // 1_000_000
    kind, change, details = inject_change(
        args("v2", "--error-rate", "0.2", "--latency-ms", "50", "--for", "5m")
    )
    config = change(ModelConfig("v1", "v2", 500))
    assert kind is CommandKind.INJECT
    injection = config.injection
    assert injection is not None
    assert (injection.version, injection.error_rate, injection.latency_ms) == ("v2", 0.2, 50.0)
    assert before_ms + 300_000 <= injection.until <= time.time_ns() // 1_000_000 + 300_000
    assert details["until"] == str(injection.until)
    assert (config.canary_version, config.canary_basis_points) == ("v2", 500)
    assert config_problem(config) is None


@pytest.mark.parametrize(
    "argv",
    [
        ("v2",),  # neither errors nor latency
        ("v2", "--error-rate", "1.5"),
        ("v2", "--latency-ms", "-1"),
        ("v2", "--error-rate", "0.1", "--for", "0s"),
        ("v2", "--error-rate", "0.1", "--for", "2d"),
        ("--error-rate", "0.1"),  # no version
    ],
)
def test_inject_refuses_nonsense(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError):
        inject_change(args(*argv))


def test_stop_clears_the_injection_and_needs_one() -> None:
    _, change, _ = inject_change(args("--stop"))
    injected = ModelConfig("v1", injection=FaultInjection("v1", 1.0, 0.0, 1))
    assert change(injected).injection is None
    with pytest.raises(CommandError, match="no injection"):
        change(ModelConfig("v1"))


def test_replicas_refuse_an_invalid_injection() -> None:
    bad = ModelConfig("v1", injection=FaultInjection("v1", 2.0, 0.0, 1))
    assert "error_rate" in (config_problem(bad) or "")
    slow = ModelConfig("v1", injection=FaultInjection("v1", 0.0, 120_000.0, 1))
    assert "latency_ms" in (config_problem(slow) or "")


def test_status_says_what_is_injected_and_whether_it_expired() -> None:
    injection = FaultInjection("v2", 0.25, 30.0, until=1_700_000_060_000)
    active = describe_injection(injection, now_ms=1_700_000_000_000)
    assert active.startswith("INJECTING v2: 25% errors, +30 ms until ")
    assert "60 s left" in active
    assert "expired" in describe_injection(injection, now_ms=1_700_000_060_000)
