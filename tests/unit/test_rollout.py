"""The progressive canary state machine: every path from start to promote, rollback or pause."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.health import HealthSnapshot
from safeloop.services.metrics.performance import PerformanceSnapshot, Task, performance_snapshot
from safeloop.services.rollout.exceptions import PlanError, TransitionError
from safeloop.services.rollout.gate import GateEvidence, GateOutcome
from safeloop.services.rollout.intents import Pause, Promote, Rollback, SetCanary
from safeloop.services.rollout.machine import (
    Phase,
    RolloutState,
    Transition,
    abort,
    advance,
    pause,
    resume,
    rollback,
    start,
)
from safeloop.services.rollout.plan import DeadlineAction, FailAction, RolloutPlan
from safeloop.services.rollout.sequential import MeanSummary

PLAN = RolloutPlan(
    steps_percent=(5.0, 10.0, 25.0, 50.0, 100.0),
    bake_ms=1_000,
    min_sample_per_step=200,
    min_labelled_per_step=100,
    deadline_ms=10_000,
    error_rate_tolerance=0.01,
    accuracy_tolerance=0.02,
    guard=GuardPolicy(max_error_rate=0.2, max_p99_latency_ms=500.0, min_requests=50),
)


def health(requests: int, errors: int = 0, p99_ms: float = 100.0) -> HealthSnapshot:
    return HealthSnapshot(
        request_count=requests,
        error_count=errors,
        error_rate=errors / requests if requests else None,
        latency_p50_ms=p99_ms / 2 if requests else None,
        latency_p95_ms=p99_ms if requests else None,
        latency_p99_ms=p99_ms if requests else None,
        requests_per_s=None,
        window_start_ms=None,
        window_end_ms=None,
    )


def accuracy(correct: int, total: int) -> PerformanceSnapshot:
    return performance_snapshot(
        Task.CLASSIFICATION, [1.0] * total, [1.0] * correct + [0.0] * (total - correct)
    )


GOOD = GateEvidence(canary=health(1_000, 5), production=health(20_000, 100))
THIN = GateEvidence(canary=health(50), production=health(20_000, 100))
BAD = GateEvidence(canary=health(1_000, 80), production=health(20_000, 100))


def started(plan: RolloutPlan = PLAN) -> RolloutState:
    transition = start(plan, "fraud", "v1", "v2", now_ms=0)
    assert transition.intents == (SetCanary("fraud", "v2", 5.0, "rollout started"),)
    return transition.state


def test_healthy_canary_walks_every_step_and_is_promoted() -> None:
    state = started()
    now = 0
    percents: list[float] = []
    for _ in PLAN.steps_percent:
        waiting = advance(PLAN, state, GOOD, now + 500)
        assert waiting.intents == ()
        assert waiting.gate is not None and waiting.gate.outcome is GateOutcome.INCONCLUSIVE
        assert "bake" in waiting.gate.reason
        now += 1_000
        moved = advance(PLAN, waiting.state, GOOD, now)
        assert moved.gate is not None and moved.gate.outcome is GateOutcome.PASS
        (intent,) = moved.intents
        if isinstance(intent, SetCanary):
            percents.append(intent.percent)
        else:
            assert isinstance(intent, Promote)
            assert (intent.version, intent.previous_version) == ("v2", "v1")
        state = moved.state
    assert percents == [10.0, 25.0, 50.0, 100.0]
    assert state.phase is Phase.PROMOTED
    assert state.canary_percent(PLAN) == 100.0
    assert advance(PLAN, state, BAD, now + 1).intents == ()


def test_instant_rollback_after_promotion_targets_the_last_known_good() -> None:
    promoted = replace(started(), phase=Phase.PROMOTED)
    transition = rollback(promoted, "customer complaints", now_ms=99)
    assert transition.intents == (Rollback("fraud", "v1", "v2", "customer complaints", {}),)
    assert transition.state.phase is Phase.ROLLED_BACK
    assert transition.state.canary_percent(PLAN) == 0.0
    # Idempotent: a second rollback asks for nothing more.
    assert rollback(transition.state, "again", 100).intents == ()


def test_failed_gate_rolls_back_with_reason_and_numbers() -> None:
    state = advance(PLAN, started(), GOOD, 1_000).state  # at 10 %
    transition = advance(PLAN, state, BAD, 1_400)  # fails during the bake: no waiting
    assert transition.gate is not None and transition.gate.outcome is GateOutcome.FAIL
    (intent,) = transition.intents
    assert isinstance(intent, Rollback)
    assert (intent.to_version, intent.from_version) == ("v1", "v2")
    assert "gate at 10% failed" in intent.reason
    assert "error rate higher" in intent.reason
    assert float(intent.numbers["error_rate_difference_low"]) > 0.01
    assert intent.numbers["canary_requests"] == "1000"
    assert transition.state.phase is Phase.ROLLED_BACK


def test_failed_gate_pauses_by_policy_then_resumes() -> None:
    plan = replace(PLAN, on_fail=FailAction.PAUSE)
    transition = advance(plan, started(plan), BAD, 2_000)
    (intent,) = transition.intents
    assert isinstance(intent, Pause)
    assert intent.percent == 5.0
    assert transition.state.phase is Phase.PAUSED
    assert advance(plan, transition.state, GOOD, 3_000).intents == ()
    resumed = resume(plan, transition.state, now_ms=5_000)
    assert resumed.intents == (SetCanary("fraud", "v2", 5.0, "rollout resumed"),)
    assert resumed.state.phase is Phase.RUNNING
    assert resumed.state.step_started_ms == 5_000
    # The step is re-baked from the resume.
    assert advance(plan, resumed.state, GOOD, 5_500).intents == ()
    assert advance(plan, resumed.state, GOOD, 6_000).intents[0] == SetCanary(
        "fraud", "v2", 10.0, "gate at 5% passed: canary not worse than production: error rate"
    )


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (DeadlineAction.PAUSE, Pause),
        (DeadlineAction.ROLLBACK, Rollback),
        (DeadlineAction.PROCEED, SetCanary),
    ],
)
def test_inconclusive_waits_until_the_deadline_then_policy_decides(
    action: DeadlineAction, expected: type
) -> None:
    plan = replace(PLAN, on_deadline=action)
    state = started(plan)
    for now in (1_000, 5_000, 9_999):
        transition = advance(plan, state, THIN, now)
        assert transition.intents == ()
        assert transition.gate is not None
        assert transition.gate.outcome is GateOutcome.INCONCLUSIVE
        assert "50 of 200" in transition.gate.reason
        state = transition.state
        assert state.phase is Phase.RUNNING
    final = advance(plan, state, THIN, 10_000)
    (intent,) = final.intents
    assert isinstance(intent, expected)
    assert "inconclusive at its deadline" in intent.reason
    if action is DeadlineAction.PROCEED:
        assert final.state.step_index == 1


def test_thin_traffic_does_not_hide_a_hard_breach() -> None:
    evidence = GateEvidence(canary=health(60, 30), production=health(20_000, 100))
    transition = advance(PLAN, started(), evidence, 100)
    assert transition.gate is not None and transition.gate.outcome is GateOutcome.FAIL
    assert "error_rate 0.5 > 0.2" in transition.gate.reason


def test_latency_limit_fails_the_gate() -> None:
    evidence = GateEvidence(canary=health(1_000, 5, p99_ms=800.0), production=health(20_000, 100))
    transition = advance(PLAN, started(), evidence, 2_000)
    assert isinstance(transition.intents[0], Rollback)
    assert transition.intents[0].numbers["p99_latency_ms"] == "800.0"


def test_worse_within_tolerance_passes_and_beyond_fails() -> None:
    # Production 0.5 %; canary 1.0 %: worse, but the interval's low end is below 1 point.
    within = GateEvidence(canary=health(2_000, 20), production=health(20_000, 100))
    assert advance(PLAN, started(), within, 1_000).gate.outcome is GateOutcome.PASS  # type: ignore[union-attr]
    # Canary 4 %: the whole interval lies above the 1-point tolerance.
    beyond = GateEvidence(canary=health(2_000, 80), production=health(20_000, 100))
    assert advance(PLAN, started(), beyond, 1_000).gate.outcome is GateOutcome.FAIL  # type: ignore[union-attr]


def test_accuracy_drop_stops_the_canary_once_labels_arrive() -> None:
    unlabelled = GateEvidence(
        canary=health(1_000, 5),
        production=health(20_000, 100),
        canary_performance=accuracy(40, 50),
        production_performance=accuracy(900, 1_000),
    )
    passed = advance(PLAN, started(), unlabelled, 1_000)
    assert passed.gate is not None and passed.gate.outcome is GateOutcome.PASS
    assert "accuracy" not in passed.gate.reason  # 50 labels < 100: not compared
    # 75 % against 90 %: beyond what the always-valid sequence allows at 400 labels.
    labelled = replace(unlabelled, canary_performance=accuracy(300, 400))
    failed = advance(PLAN, started(), labelled, 1_000)
    assert failed.gate is not None and failed.gate.outcome is GateOutcome.FAIL
    assert "accuracy lower" in failed.gate.reason
    assert float(failed.gate.numbers["accuracy_drop_low"]) > 0.02
    same = replace(unlabelled, canary_performance=accuracy(360, 400))
    ok = advance(PLAN, started(), same, 1_000)
    assert ok.gate is not None and ok.gate.outcome is GateOutcome.PASS
    assert ok.gate.reason.endswith("error rate and accuracy")


def test_require_labels_waits_for_them() -> None:
    plan = replace(PLAN, require_labels=True)
    transition = advance(plan, started(plan), GOOD, 1_000)
    assert transition.gate is not None and transition.gate.outcome is GateOutcome.INCONCLUSIVE
    assert transition.gate.reason == "waiting for labels"


def test_last_step_without_production_traffic_passes_on_hard_limits() -> None:
    state = replace(started(), step_index=4)
    evidence = GateEvidence(canary=health(5_000, 10), production=health(0))
    transition = advance(PLAN, state, evidence, 1_000)
    assert isinstance(transition.intents[0], Promote)
    assert "hard limits only" in transition.intents[0].reason


def test_operator_pause_abort_and_invalid_transitions() -> None:
    state = started()
    paused = pause(PLAN, state, "looking into it", 10)
    assert paused.intents == (Pause("fraud", "v2", 5.0, "looking into it"),)
    with pytest.raises(TransitionError):
        pause(PLAN, paused.state, "again", 11)
    with pytest.raises(TransitionError):
        resume(PLAN, state, 11)
    aborted = abort(paused.state, "alice", 12)
    assert aborted.intents == (Rollback("fraud", "v1", "v2", "aborted by alice", {}),)
    with pytest.raises(TransitionError):
        start(PLAN, "fraud", "v1", "v1", 0)


def test_transition_defaults() -> None:
    state = started()
    assert Transition(state).intents == ()
    assert SetCanary("m", "v", 0.5, "").basis_points == 50
    assert SetCanary("m", "v", 100.0, "").basis_points == 10_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps_percent": ()},
        {"steps_percent": (10.0, 5.0, 100.0)},
        {"steps_percent": (5.0, 50.0)},
        {"steps_percent": (0.0, 100.0)},
        {"bake_ms": 5_000, "deadline_ms": 1_000},
        {"min_sample_per_step": 0},
        {"confidence": 1.0},
        {"error_rate_tolerance": -0.1},
    ],
)
def test_plan_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(PlanError):
        RolloutPlan(**kwargs)  # type: ignore[arg-type]


def test_a_canary_typically_much_slower_fails_its_gate_on_latency() -> None:
    rng = np.random.default_rng(2)
    fast = MeanSummary.of(np.log(20.0) + 0.5 * rng.standard_normal(1_000))
    slow = MeanSummary.of(np.log(40.0) + 0.5 * rng.standard_normal(1_000))
    slower = replace(GOOD, canary_log_latency=slow, production_log_latency=fast)
    failed = advance(PLAN, started(), slower, 1_000)
    assert failed.gate is not None and failed.gate.outcome is GateOutcome.FAIL
    assert "times slower than production" in failed.gate.reason
    alike = replace(GOOD, canary_log_latency=fast, production_log_latency=fast)
    assert advance(PLAN, started(), alike, 1_000).gate.outcome is GateOutcome.PASS  # type: ignore[union-attr]
    off = replace(PLAN, latency_ratio_tolerance=None)
    assert advance(off, started(off), slower, 1_000).gate.outcome is GateOutcome.PASS  # type: ignore[union-attr]


def multiclass_accuracy(correct: int, total: int) -> PerformanceSnapshot:
    # Three classes; the wrong answers call class 2 a 0.
    truth = [float(i % 3) for i in range(total)]
    predicted = [t if i < correct else (t + 1) % 3 for i, t in enumerate(truth)]
    return performance_snapshot(Task.MULTICLASS, predicted, truth)


def test_a_multiclass_canary_is_gated_on_its_accuracy_too() -> None:
    evidence = GateEvidence(
        canary=health(1_000, 5),
        production=health(20_000, 100),
        canary_performance=multiclass_accuracy(300, 400),
        production_performance=multiclass_accuracy(900, 1_000),
    )
    failed = advance(PLAN, started(), evidence, 1_000)
    assert failed.gate is not None and failed.gate.outcome is GateOutcome.FAIL
    assert float(failed.gate.numbers["canary_accuracy"]) == pytest.approx(0.75)
    same = replace(evidence, canary_performance=multiclass_accuracy(360, 400))
    ok = advance(PLAN, started(), same, 1_000)
    assert ok.gate is not None and ok.gate.outcome is GateOutcome.PASS
    assert ok.gate.reason.endswith("error rate and accuracy")
