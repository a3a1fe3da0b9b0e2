"""The replica-side guard: queueing on the request path, judging canaries on demand."""

from __future__ import annotations

import threading

from schemas.events import PredictionEvent, Route
from services.guard import GuardPolicy, GuardRule, VerdictKind
from services.guard.local import ReplicaGuard

POLICY = GuardPolicy(max_error_rate=0.1, min_requests=20)


def event(
    version: str, route: Route, error: bool = False, latency_ms: float = 5.0
) -> PredictionEvent:
    return PredictionEvent(
        prediction_id="p",
        model_name="fraud",
        model_version=version,
        timestamp=1_000,
        features={},
        prediction=None if error else 0.5,
        confidence=None,
        latency_ms=latency_ms,
        route=route,
        replica_id="r1",
        routing_key="k",
        routing_hash_version=1,
        error="boom" if error else None,
    )


def test_failing_canary_is_caught_once_the_sample_is_reached() -> None:
    guard = ReplicaGuard(POLICY, window_rows=100)
    for _ in range(50):
        guard.observe(event("v1", Route.PRODUCTION))
    for i in range(19):
        guard.observe(event("v2", Route.CANARY, error=i % 2 == 0))
    (early,) = guard.check()
    assert early.verdict.kind is VerdictKind.INSUFFICIENT_SAMPLE
    guard.observe(event("v2", Route.CANARY, error=True))
    (verdict,) = guard.check()
    assert (verdict.model_name, verdict.canary_version, verdict.production_version) == (
        "fraud",
        "v2",
        "v1",
    )
    assert verdict.verdict.kind is VerdictKind.BREACH
    assert verdict.verdict.breaches[0].rule is GuardRule.ERROR_RATE
    assert verdict.verdict.canary_requests == 20


def test_relative_latency_uses_the_production_window() -> None:
    guard = ReplicaGuard(POLICY)
    for _ in range(30):
        guard.observe(event("v1", Route.PRODUCTION, latency_ms=10.0))
        guard.observe(event("v2", Route.CANARY, latency_ms=30.0))
    (verdict,) = guard.check()
    assert verdict.verdict.breaches[0].rule is GuardRule.P99_LATENCY_RATIO


def test_shadows_are_ignored_and_no_canary_means_no_verdict() -> None:
    guard = ReplicaGuard(POLICY)
    guard.observe(event("v3", Route.SHADOW, error=True))
    guard.observe(event("v1", Route.PRODUCTION))
    assert guard.check() == []


def test_canary_without_production_is_judged_on_absolute_rules() -> None:
    guard = ReplicaGuard(POLICY)
    for _ in range(20):
        guard.observe(event("v2", Route.CANARY))
    (verdict,) = guard.check()
    assert verdict.production_version is None
    assert verdict.verdict.kind is VerdictKind.HEALTHY


def test_forget_starts_a_version_afresh_and_overflow_is_counted() -> None:
    guard = ReplicaGuard(POLICY, max_pending=25)
    for _ in range(30):
        guard.observe(event("v2", Route.CANARY, error=True))
    assert guard.dropped == 5
    assert guard.check()[0].verdict.kind is VerdictKind.BREACH
    guard.forget("fraud", "v2")
    assert guard.check() == []


def test_concurrent_observers_lose_nothing() -> None:
    guard = ReplicaGuard(POLICY, window_rows=100_000)
    stop = threading.Event()

    def observe() -> None:
        for _ in range(5_000):
            guard.observe(event("v2", Route.CANARY))

    def check() -> None:
        while not stop.is_set():
            guard.check()

    checker = threading.Thread(target=check)
    checker.start()
    workers = [threading.Thread(target=observe) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    checker.join()
    (verdict,) = guard.check()
    assert verdict.verdict.canary_requests == 20_000
