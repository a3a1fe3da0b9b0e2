"""`judge`: one pure function, cheap enough for a replica to call on every request batch."""

from __future__ import annotations

import math

from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.verdict import Breach, GuardRule, GuardVerdict, VerdictKind
from safeloop.services.metrics.health import HealthSnapshot
from safeloop.services.metrics.performance import PerformanceSnapshot, relative_drop

# A value equal to its limit up to float rounding (0.8 -> 0.72 is a 0.10000000000000009 drop)
# is not a breach: limits are written in decimals and mean "at most this".
_ROUNDING = 1e-9


def _exceeds(value: float, limit: float) -> bool:
    return value > limit + _ROUNDING * abs(limit)


def client_error_excess(
    canary: HealthSnapshot, production: HealthSnapshot
) -> tuple[float, float] | None:
    """(canary 4xx rate - production's, its z-score); None when either side has no requests.

    The z-score is the one-sided two-proportion test's: the excess over its pooled standard
    error (0 when both sides are all-or-nothing alike, so there is no spread to measure).
    """
    n1, n2 = canary.request_count, production.request_count
    if n1 == 0 or n2 == 0:
        return None
    p1, p2 = canary.client_error_count / n1, production.client_error_count / n2
    excess = p1 - p2
    pooled = (canary.client_error_count + production.client_error_count) / (n1 + n2)
    standard_error = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if standard_error == 0.0:
        return excess, 0.0
    return excess, excess / standard_error


def judge(
    canary: HealthSnapshot,
    production: HealthSnapshot | None,
    policy: GuardPolicy,
    canary_performance: PerformanceSnapshot | None = None,
    production_performance: PerformanceSnapshot | None = None,
) -> GuardVerdict:
    """Judge a canary against the policy and, for relative rules, against production.

    Relative rules are skipped (not failed) when production lacks `min_requests` requests or
    either side lacks `min_labelled` labels; the canary alone must reach `min_requests`.
    Server errors count against `max_error_rate`; client errors (4xx) only against production's
    client-error rate (`max_client_error_excess`, significant at `client_error_min_z`).
    """
    labelled = 0 if canary_performance is None else canary_performance.labelled_count
    if canary.request_count < policy.min_requests:
        return GuardVerdict(VerdictKind.INSUFFICIENT_SAMPLE, canary.request_count, labelled)
    breaches: list[Breach] = []
    limit = policy.max_error_rate
    if limit is not None and canary.error_rate is not None and _exceeds(canary.error_rate, limit):
        breaches.append(Breach(GuardRule.ERROR_RATE, canary.error_rate, limit))
    limit = policy.max_client_error_excess
    if (
        limit is not None
        and production is not None
        and production.request_count >= policy.min_requests
        and (compared := client_error_excess(canary, production)) is not None
    ):
        excess, z = compared
        if _exceeds(excess, limit) and z >= policy.client_error_min_z:
            breaches.append(Breach(GuardRule.CLIENT_ERROR_EXCESS, excess, limit))
    p99 = canary.latency_p99_ms
    limit = policy.max_p99_latency_ms
    if limit is not None and p99 is not None and _exceeds(p99, limit):
        breaches.append(Breach(GuardRule.P99_LATENCY_MS, p99, limit))
    limit = policy.max_p99_latency_ratio
    if (
        limit is not None
        and p99 is not None
        and production is not None
        and production.request_count >= policy.min_requests
        and production.latency_p99_ms
    ):
        ratio = p99 / production.latency_p99_ms
        if _exceeds(ratio, limit):
            breaches.append(Breach(GuardRule.P99_LATENCY_RATIO, ratio, limit))
    performance_judged = False
    limit = policy.max_performance_drop
    if (
        limit is not None
        and canary_performance is not None
        and production_performance is not None
        and canary_performance.labelled_count >= policy.min_labelled
        and production_performance.labelled_count >= policy.min_labelled
    ):
        metric = policy.metric_for(canary_performance.task)
        drop = relative_drop(
            production_performance.metric(metric), canary_performance.metric(metric), metric
        )
        performance_judged = drop is not None
        if drop is not None and _exceeds(drop, limit):
            breaches.append(Breach(GuardRule.PERFORMANCE_DROP, drop, limit))
    kind = VerdictKind.BREACH if breaches else VerdictKind.HEALTHY
    return GuardVerdict(kind, canary.request_count, labelled, tuple(breaches), performance_judged)
