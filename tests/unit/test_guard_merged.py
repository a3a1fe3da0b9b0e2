"""The central guard judges the sum of every partition's window, its own and other instances'."""

from __future__ import annotations

from dataclasses import replace

from _fake_issuer import CANARY, FakeIssuer

from safeloop.schemas.events import CommandKind, PredictionEvent, Route
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.runner import CentralGuard, guard_command_id

NO_CANARY = replace(CANARY, canary_version=None, canary_basis_points=0)
# Epoch ms of the tests' control commands and events.
T0 = 1_790_000_000_000


def _events(
    version: str, route: Route, n: int, failing: int, at_ms: int = 1_000
) -> list[PredictionEvent]:
    def event(i: int) -> PredictionEvent:
        error = "boom" if i < failing else None
        return PredictionEvent(
            f"{version}-{i}", "churn", version, at_ms + i, {}, 0.5, 0.5, 5.0, route, "r", "k", 1,
            error,
        )  # fmt: skip

    return [event(i) for i in range(n)]


def test_a_breach_split_over_two_instances_is_seen_only_merged() -> None:
    policy = GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None, min_requests=100)
    mine, theirs = FakeIssuer(sequence=3), FakeIssuer(sequence=3)
    judge = CentralGuard(policy, mine)  # type: ignore[arg-type]
    other = CentralGuard(policy, theirs)  # type: ignore[arg-type]
    # 60 canary requests (20 failing) on partition 0, 60 (20 failing) on partition 1.
    judge.observe(_events("v2", Route.CANARY, 60, 20), [0] * 60)
    judge.observe(_events("v1", Route.PRODUCTION, 200, 0), [0] * 200)
    other.observe(_events("v2", Route.CANARY, 60, 20), [1] * 60)
    assert judge.check() == [], "60 requests alone are too few to judge"
    decisions = judge.check(other.summaries())
    assert len(decisions) == 1 and decisions[0].command is not None
    assert decisions[0].verdict.canary_requests == 120
    assert mine.sent[0].command_id == guard_command_id("churn", "v2", 0)
    # Rolled back: the canary's windows are forgotten, nothing is decided twice.
    assert judge.check(other.summaries()) == []
    # Its own partitions' windows win over what another instance published for them.
    stale = {0: dict(other.summaries()[1])}
    mine.config = CANARY
    assert judge.check(stale) == []


def test_windows_of_partitions_read_elsewhere_now_are_dropped() -> None:
    guard = CentralGuard(GuardPolicy(), FakeIssuer())  # type: ignore[arg-type]
    guard.observe(_events("v1", Route.PRODUCTION, 5, 0), [0, 1, 2, 3, 3])
    guard.retain(frozenset({1, 3}))
    assert sorted(guard.summaries()) == [1, 3]


def test_canary_events_read_before_its_command_are_judged_once_the_command_comes() -> None:
    # A control-leader failover can hold this process's view of the control topic behind the
    # replicas: their canary's events arrive first, and may be all the evidence there will be.
    policy = GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None, min_requests=100)
    issuer = FakeIssuer()
    issuer.operator(CommandKind.ROLLBACK, NO_CANARY, T0 - 3_600_000)
    guard = CentralGuard(policy, issuer)  # type: ignore[arg-type]
    # The replicas applied the canary command of T0 and served from T0 + 1 s.
    guard.observe(_events("v2", Route.CANARY, 120, 120, T0 + 1_000), [0] * 120)
    guard.observe(_events("v1", Route.PRODUCTION, 200, 0, T0 + 1_000), [0] * 200)
    assert guard.check() == []
    issuer.operator(CommandKind.SET_CANARY, CANARY, T0)
    decisions = guard.check()
    assert len(decisions) == 1 and decisions[0].verdict.canary_requests == 120
    assert guard.earlier_run_rows_dropped == 0


def test_a_restarted_guard_does_not_judge_a_recanaried_version_on_its_earlier_run() -> None:
    # Restarted after v2's rollback, the metrics service re-reads v2's failing canary requests
    # (it never saw v2 configured, so it keeps them in case its control view lags). An hour on,
    # the operator canaries v2 again: its first verdict counts the new run's requests only.
    policy = GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None, min_requests=100)
    issuer = FakeIssuer()
    issuer.operator(CommandKind.ROLLBACK, NO_CANARY, T0)
    guard = CentralGuard(policy, issuer)  # type: ignore[arg-type]
    guard.observe(_events("v2", Route.CANARY, 120, 120, T0 - 60_000), [0] * 120)
    guard.observe(_events("v1", Route.PRODUCTION, 200, 0, T0 - 60_000), [0] * 200)
    assert guard.check() == []
    issuer.operator(CommandKind.SET_CANARY, CANARY, T0 + 3_600_000)
    assert guard.check() == [], "the earlier run's failures must not roll the new run back"
    assert guard.earlier_run_rows_dropped == 120
    guard.observe(_events("v2", Route.CANARY, 120, 0, T0 + 3_601_000), [0] * 120)
    assert guard.check() == []
    assert guard.latest["churn"].canary_requests == 120
    # The new run failing is still caught.
    guard.observe(_events("v2", Route.CANARY, 120, 120, T0 + 3_602_000), [0] * 120)
    assert len(guard.check()) == 1


def test_late_events_of_a_rolled_back_canary_never_refill_its_window() -> None:
    policy = GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None, min_requests=100)
    issuer = FakeIssuer()
    guard = CentralGuard(policy, issuer)  # type: ignore[arg-type]
    guard.observe(_events("v2", Route.CANARY, 120, 120), [0] * 120)
    assert len(guard.check()) == 1
    # Requests routed before the rollback, published after it.
    guard.observe(_events("v2", Route.CANARY, 120, 120), [0] * 120)
    assert guard.check() == []
    issuer.config = CANARY
    assert guard.check() == [], "the retried canary starts with an empty window"


def test_held_canary_rows_are_kept_when_a_later_command_hides_when_its_run_began() -> None:
    policy = GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None, min_requests=100)
    issuer = FakeIssuer()
    issuer.operator(CommandKind.ROLLBACK, NO_CANARY, T0)
    guard = CentralGuard(policy, issuer)  # type: ignore[arg-type]
    guard.observe(_events("v2", Route.CANARY, 120, 120, T0 + 1_000), [0] * 120)
    assert guard.check() == []
    # The view catches up past the canary's command to a flag change an hour later.
    flagged = replace(CANARY, flags={"x": "1"})
    issuer.operator(CommandKind.SET_FLAG, flagged, T0 + 3_600_000)
    assert len(guard.check()) == 1
    assert guard.earlier_run_rows_dropped == 0
