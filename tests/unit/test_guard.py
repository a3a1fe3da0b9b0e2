"""Guard verdicts at and around every threshold's edge."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from safeloop.services.guard.exceptions import PolicyError
from safeloop.services.guard.judge import client_error_excess, judge
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.verdict import Breach, GuardRule, VerdictKind
from safeloop.services.metrics.health import HealthSnapshot
from safeloop.services.metrics.performance import (
    PerformanceMetric,
    PerformanceSnapshot,
    Task,
    performance_snapshot,
)

POLICY = GuardPolicy(
    max_error_rate=0.05,
    max_p99_latency_ms=500.0,
    max_p99_latency_ratio=2.0,
    max_performance_drop=0.1,
    min_requests=100,
    min_labelled=10,
)


def health(
    requests: int = 1_000, errors: int = 0, p99_ms: float | None = 100.0, client_errors: int = 0
) -> HealthSnapshot:
    return HealthSnapshot(
        request_count=requests,
        error_count=errors,
        error_rate=errors / requests if requests else None,
        latency_p50_ms=None if p99_ms is None else p99_ms / 2,
        latency_p95_ms=p99_ms,
        latency_p99_ms=p99_ms,
        requests_per_s=None,
        window_start_ms=None,
        window_end_ms=None,
        client_error_count=client_errors,
        client_error_rate=client_errors / requests if requests else None,
    )


def performance(correct: int, total: int) -> PerformanceSnapshot:
    return performance_snapshot(
        Task.CLASSIFICATION, [1.0] * total, [1.0] * correct + [0.0] * (total - correct)
    )


def test_healthy_canary() -> None:
    verdict = judge(health(), health(), POLICY)
    assert verdict.kind is VerdictKind.HEALTHY
    assert verdict.breaches == ()
    assert verdict.canary_requests == 1_000
    assert "within" in verdict.reason


@pytest.mark.parametrize(
    ("requests", "kind"), [(99, VerdictKind.INSUFFICIENT_SAMPLE), (100, VerdictKind.BREACH)]
)
def test_min_sample_edge(requests: int, kind: VerdictKind) -> None:
    verdict = judge(health(requests, errors=requests), health(), POLICY)
    assert verdict.kind is kind
    if kind is VerdictKind.INSUFFICIENT_SAMPLE:
        assert verdict.breaches == ()
        assert "99" in verdict.reason


@pytest.mark.parametrize(("errors", "kind"), [(50, VerdictKind.HEALTHY), (51, VerdictKind.BREACH)])
def test_error_rate_edge(errors: int, kind: VerdictKind) -> None:
    # 50 / 1000 is exactly the 0.05 limit: only strictly above breaches.
    verdict = judge(health(errors=errors), health(), POLICY)
    assert verdict.kind is kind
    if kind is VerdictKind.BREACH:
        assert verdict.breaches == (Breach(GuardRule.ERROR_RATE, 0.051, 0.05),)


@pytest.mark.parametrize(
    ("p99", "kind"), [(500.0, VerdictKind.HEALTHY), (500.001, VerdictKind.BREACH)]
)
def test_absolute_p99_edge(p99: float, kind: VerdictKind) -> None:
    verdict = judge(health(p99_ms=p99), health(p99_ms=400.0), POLICY)
    assert verdict.kind is kind


@pytest.mark.parametrize(
    ("p99", "kind"), [(200.0, VerdictKind.HEALTHY), (200.5, VerdictKind.BREACH)]
)
def test_relative_p99_edge(p99: float, kind: VerdictKind) -> None:
    verdict = judge(health(p99_ms=p99), health(p99_ms=100.0), POLICY)
    assert verdict.kind is kind
    if kind is VerdictKind.BREACH:
        assert verdict.breaches[0].rule is GuardRule.P99_LATENCY_RATIO
        assert verdict.breaches[0].observed == pytest.approx(2.005)


def test_relative_p99_skipped_without_enough_production_traffic() -> None:
    assert judge(health(p99_ms=300.0), health(99, p99_ms=100.0), POLICY).kind is VerdictKind.HEALTHY
    assert judge(health(p99_ms=300.0), None, POLICY).kind is VerdictKind.HEALTHY
    assert judge(health(p99_ms=300.0), health(p99_ms=0.0), POLICY).kind is VerdictKind.HEALTHY


@pytest.mark.parametrize(("correct", "kind"), [(72, VerdictKind.HEALTHY), (71, VerdictKind.BREACH)])
def test_performance_drop_edge(correct: int, kind: VerdictKind) -> None:
    # Production 80 % accurate; 72 % is exactly a 10 % relative drop.
    verdict = judge(health(), health(), POLICY, performance(correct, 100), performance(80, 100))
    assert verdict.kind is kind
    assert verdict.performance_judged
    assert verdict.canary_labelled == 100


def test_performance_not_judged_below_min_labelled() -> None:
    verdict = judge(health(), health(), POLICY, performance(1, 9), performance(80, 100))
    assert verdict.kind is VerdictKind.HEALTHY
    assert not verdict.performance_judged


def test_performance_rule_with_lower_is_better_metric() -> None:
    policy = replace(POLICY, performance_metric=PerformanceMetric.RMSE)
    canary = performance_snapshot(Task.REGRESSION, [0.0] * 20, [1.2] * 20)
    production = performance_snapshot(Task.REGRESSION, [0.0] * 20, [1.0] * 20)
    verdict = judge(health(), health(), policy, canary, production)
    assert verdict.kind is VerdictKind.BREACH
    assert verdict.breaches[0].observed == pytest.approx(0.2)


def test_every_breach_is_reported_with_numbers() -> None:
    verdict = judge(
        health(errors=100, p99_ms=900.0),
        health(p99_ms=100.0),
        POLICY,
        performance(50, 100),
        performance(80, 100),
    )
    assert verdict.kind is VerdictKind.BREACH
    assert [b.rule for b in verdict.breaches] == [
        GuardRule.ERROR_RATE,
        GuardRule.P99_LATENCY_MS,
        GuardRule.P99_LATENCY_RATIO,
        GuardRule.PERFORMANCE_DROP,
    ]
    numbers = verdict.numbers()
    assert numbers["verdict"] == "breach"
    assert float(numbers["error_rate"]) == pytest.approx(0.1)
    assert float(numbers["error_rate_limit"]) == 0.05
    assert numbers["canary_requests"] == "1000"
    assert verdict.reason.startswith("canary breached error_rate 0.1 > 0.05")


def test_none_thresholds_switch_rules_off() -> None:
    policy = GuardPolicy(
        max_error_rate=None,
        max_p99_latency_ms=None,
        max_p99_latency_ratio=None,
        max_performance_drop=None,
        min_requests=1,
    )
    verdict = judge(health(errors=1_000, p99_ms=10_000.0), health(), policy)
    assert verdict.kind is VerdictKind.HEALTHY


def test_empty_canary_window_is_insufficient_not_a_crash() -> None:
    assert judge(health(0, p99_ms=None), None, POLICY).kind is VerdictKind.INSUFFICIENT_SAMPLE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_error_rate": 1.5},
        {"max_p99_latency_ms": 0.0},
        {"max_p99_latency_ratio": -1.0},
        {"max_performance_drop": 0.0},
        {"min_requests": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(PolicyError):
        GuardPolicy(**kwargs)  # type: ignore[arg-type]


def test_client_errors_at_productions_rate_are_not_a_breach() -> None:
    # 30 % malformed requests from the callers: production sees them too, the canary is fine.
    verdict = judge(health(client_errors=300), health(5_000, client_errors=1_500), POLICY)
    assert verdict.kind is VerdictKind.HEALTHY


def test_client_errors_never_count_against_the_absolute_error_limit() -> None:
    # 20 % 4xx against production's 20 %: far above max_error_rate, yet no error_rate breach.
    verdict = judge(health(client_errors=200), health(client_errors=200), POLICY)
    assert verdict.kind is VerdictKind.HEALTHY


def test_a_canary_rejecting_what_production_answers_breaches() -> None:
    # The canary needs a feature the callers do not send: every request is a 422 there.
    verdict = judge(health(client_errors=1_000), health(client_errors=10), POLICY)
    assert verdict.kind is VerdictKind.BREACH
    (breach,) = verdict.breaches
    assert breach.rule is GuardRule.CLIENT_ERROR_EXCESS
    assert breach.observed == pytest.approx(0.99)


@pytest.mark.parametrize(
    ("canary_4xx", "kind"), [(150, VerdictKind.HEALTHY), (151, VerdictKind.BREACH)]
)
def test_client_error_excess_margin_edge(canary_4xx: int, kind: VerdictKind) -> None:
    # 15.0 % against 10 % is exactly the 0.05 margin: only strictly above breaches.
    verdict = judge(health(client_errors=canary_4xx), health(10_000, client_errors=1_000), POLICY)
    assert verdict.kind is kind


def test_an_excess_within_noise_is_not_a_breach() -> None:
    # 16 of 100 against 10 of 100: above the margin, but only ~1.3 standard errors.
    small = replace(POLICY, min_requests=100)
    verdict = judge(health(100, client_errors=16), health(100, client_errors=10), small)
    assert verdict.kind is VerdictKind.HEALTHY
    # The same rates over 10x the traffic are significant.
    verdict = judge(health(1_000, client_errors=160), health(1_000, client_errors=100), small)
    assert [b.rule for b in verdict.breaches] == [GuardRule.CLIENT_ERROR_EXCESS]


def test_client_error_rule_waits_for_productions_sample() -> None:
    verdict = judge(health(client_errors=1_000), health(99), POLICY)
    assert verdict.kind is VerdictKind.HEALTHY


def test_client_error_rule_can_be_switched_off() -> None:
    off = replace(POLICY, max_client_error_excess=None)
    assert judge(health(client_errors=1_000), health(), off).kind is VerdictKind.HEALTHY


def test_client_error_excess_of_identical_all_or_nothing_sides_is_zero() -> None:
    assert client_error_excess(health(client_errors=0), health(client_errors=0)) == (0.0, 0.0)
    assert client_error_excess(health(client_errors=1_000), health(client_errors=1_000)) == (
        0.0,
        0.0,
    )
    excess, z = client_error_excess(health(client_errors=1_000), health(client_errors=0)) or (0, 0)
    assert excess == 1.0 and z == pytest.approx(math.sqrt(2_000 / 4) * 2)


@pytest.mark.parametrize(
    "field", [{"max_client_error_excess": 1.5}, {"max_client_error_excess": -0.1}]
)
def test_client_error_margin_must_be_a_rate(field: dict[str, float]) -> None:
    with pytest.raises(PolicyError, match="max_client_error_excess"):
        GuardPolicy(**field)  # type: ignore[arg-type]


def test_a_multiclass_canary_is_judged_on_its_macro_f1_drop() -> None:
    # Production gets every class right; the canary calls every class 2 a 1: per-class F1 is
    # 1, 2/3 (precision 1/2, recall 1) and 0, so macro F1 = 5/9.
    truth = [0.0, 1.0, 2.0] * 40
    canary = performance_snapshot(Task.MULTICLASS, [0.0, 1.0, 1.0] * 40, truth)
    production = performance_snapshot(Task.MULTICLASS, truth, truth)
    assert POLICY.metric_for(Task.MULTICLASS) is PerformanceMetric.MACRO_F1
    verdict = judge(health(), health(), POLICY, canary, production)
    assert verdict.kind is VerdictKind.BREACH and verdict.performance_judged
    expected_macro = (1.0 + 2 / 3 + 0.0) / 3
    assert canary.metric(PerformanceMetric.MACRO_F1) == pytest.approx(expected_macro)
    assert verdict.breaches[0].observed == pytest.approx(1.0 - expected_macro)


def test_a_regression_canary_is_judged_on_its_mae_rise_by_default() -> None:
    canary = performance_snapshot(Task.REGRESSION, [0.0] * 120, [1.25] * 120)
    production = performance_snapshot(Task.REGRESSION, [0.0] * 120, [1.0] * 120)
    assert POLICY.metric_for(Task.REGRESSION) is PerformanceMetric.MAE
    verdict = judge(health(), health(), POLICY, canary, production)
    assert verdict.kind is VerdictKind.BREACH
    assert verdict.breaches[0].observed == pytest.approx(0.25)
    within = performance_snapshot(Task.REGRESSION, [0.0] * 120, [1.08] * 120)
    assert judge(health(), health(), POLICY, within, production).kind is VerdictKind.HEALTHY


def test_a_metric_of_another_task_is_refused_for_multiclass() -> None:
    with pytest.raises(PolicyError):
        GuardPolicy(multiclass_metric=PerformanceMetric.ROC_AUC)
