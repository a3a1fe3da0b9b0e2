"""Rollout intents as control commands, and the per-step evidence the gates judge."""

from __future__ import annotations

import dataclasses

import pytest

from safeloop.schemas.events import (
    CommandKind,
    FeedbackRecord,
    FeedbackStatus,
    ModelConfig,
    PredictionEvent,
    Route,
)
from safeloop.services.control.exceptions import CommandError
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.performance import Task
from safeloop.services.rollout.commands import command_for
from safeloop.services.rollout.evidence import StepEvidence
from safeloop.services.rollout.gate import GateOutcome
from safeloop.services.rollout.intents import Pause, Promote, Rollback, SetCanary
from safeloop.services.rollout.machine import (
    Phase,
    RolloutState,
    Transition,
    advance,
    rollback,
    start,
)
from safeloop.services.rollout.plan import RolloutPlan

# Everything a rollout command must leave as it found it.
CONFIG = ModelConfig(
    production_version="v1",
    canary_version=None,
    canary_basis_points=0,
    canary_enabled=False,
    shadow_version="v9",
    shadow_enabled=True,
    fallback_version="v0",
    flags={"threshold": "0.7"},
)

# -- intents -> commands -----------------------------------------------------------------------


def test_set_canary_routes_the_share_and_keeps_the_rest() -> None:
    kind, change = command_for(SetCanary("fraud", "v2", 5.0, "step 1"))
    assert kind is CommandKind.SET_CANARY
    config = change(CONFIG)
    assert (config.canary_version, config.canary_basis_points) == ("v2", 500)
    assert config.canary_enabled  # an operator's disable does not survive a new step
    assert (
        dataclasses.replace(
            config, canary_version=None, canary_basis_points=0, canary_enabled=False
        )
        == CONFIG
    )
    assert CONFIG.canary_version is None  # the input is not changed


@pytest.mark.parametrize(
    ("percent", "basis_points"),
    [(0.01, 1), (1.0, 100), (12.5, 1_250), (33.333, 3_333), (66.667, 6_667), (100.0, 10_000)],
)
def test_percent_becomes_basis_points(percent: float, basis_points: int) -> None:
    intent = SetCanary("fraud", "v2", percent, "r")
    assert intent.basis_points == basis_points
    _, change = command_for(intent)
    assert change(CONFIG).canary_basis_points == basis_points


def test_set_canary_refuses_the_production_version() -> None:
    _, change = command_for(SetCanary("fraud", "v1", 5.0, "r"))
    with pytest.raises(CommandError, match="v1 is already the production version"):
        change(CONFIG)


def test_promote_makes_the_candidate_production_and_ends_the_canary() -> None:
    kind, change = command_for(Promote("fraud", "v2", "v1", "all steps passed"))
    assert kind is CommandKind.PROMOTE
    running = dataclasses.replace(CONFIG, canary_version="v2", canary_basis_points=10_000)
    config = change(running)
    assert (config.production_version, config.canary_version, config.canary_basis_points) == (
        "v2",
        None,
        0,
    )
    assert (config.shadow_version, config.fallback_version, config.flags) == (
        "v9",
        "v0",
        {"threshold": "0.7"},
    )


@pytest.mark.parametrize("production", ["v1", "v2"], ids=["during", "after-promotion"])
def test_rollback_serves_the_known_good_version_alone(production: str) -> None:
    kind, change = command_for(Rollback("fraud", "v1", "v2", "gate failed", {"low": "0.1"}))
    assert kind is CommandKind.ROLLBACK
    current = dataclasses.replace(
        CONFIG, production_version=production, canary_version="v2", canary_basis_points=2_500
    )
    config = change(current)
    assert (config.production_version, config.canary_version, config.canary_basis_points) == (
        "v1",
        None,
        0,
    )
    assert config.flags == CONFIG.flags and config.shadow_version == "v9"


def test_pause_holds_the_config_as_it_is() -> None:
    kind, change = command_for(Pause("fraud", "v2", 25.0, "operator"))
    assert kind is CommandKind.SET_CANARY
    running = dataclasses.replace(CONFIG, canary_version="v2", canary_basis_points=2_500)
    assert change(running) == running


def test_unknown_intent_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown rollout intent"):
        command_for("promote everything")  # type: ignore[arg-type]


# -- the machine's transitions, applied as commands ---------------------------------------------

PLAN = RolloutPlan(
    steps_percent=(5.0, 25.0, 100.0),
    bake_ms=0,
    min_sample_per_step=50,
    deadline_ms=10_000,
    guard=GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None, min_requests=50),
)


def _apply(config: ModelConfig, transition: Transition) -> ModelConfig:
    for intent in transition.intents:
        _, change = command_for(intent)
        config = change(config)
    return config


def _served_share(config: ModelConfig, state: RolloutState) -> float:
    if config.production_version == state.candidate_version:
        return 100.0
    if config.canary_version != state.candidate_version:
        return 0.0
    return config.canary_basis_points / 100


def test_every_transition_leaves_replicas_serving_the_states_share() -> None:
    transition = start(PLAN, "fraud", "v1", "v2", now_ms=0)
    config = _apply(CONFIG, transition)
    state = transition.state
    assert _served_share(config, state) == state.canary_percent(PLAN) == 5.0
    now = 0
    while state.phase is Phase.RUNNING:
        now += 1_000
        evidence = StepEvidence(state, Task.CLASSIFICATION)
        evidence.add_predictions(
            [prediction(f"c{i}", "v2", Route.CANARY, now) for i in range(60)]
            + [prediction(f"p{i}", "v1", Route.PRODUCTION, now) for i in range(600)]
        )
        transition = advance(PLAN, state, evidence.evidence(), now)
        assert transition.gate is not None and transition.gate.outcome is GateOutcome.PASS
        config, state = _apply(config, transition), transition.state
        assert _served_share(config, state) == state.canary_percent(PLAN)
    assert state.phase is Phase.PROMOTED
    assert (config.production_version, config.canary_version) == ("v2", None)
    # The instant rollback after promotion goes back to the known-good version.
    transition = rollback(state, "regret", now + 1)
    config = _apply(config, transition)
    assert (config.production_version, config.canary_version) == ("v1", None)
    assert transition.state.canary_percent(PLAN) == 0.0 == _served_share(config, state)


def test_failing_step_evidence_rolls_the_canary_back() -> None:
    transition = start(PLAN, "fraud", "v1", "v2", now_ms=0)
    config = _apply(CONFIG, transition)
    evidence = StepEvidence(transition.state, Task.CLASSIFICATION)
    evidence.add_predictions(
        [prediction(f"c{i}", "v2", Route.CANARY, 10, error=i % 2 == 0) for i in range(60)]
        + [prediction(f"p{i}", "v1", Route.PRODUCTION, 10) for i in range(600)]
    )
    failed = advance(PLAN, transition.state, evidence.evidence(), 500)
    assert failed.state.phase is Phase.ROLLED_BACK
    (intent,) = failed.intents
    assert isinstance(intent, Rollback)
    assert intent.numbers["canary_requests"] == "60"
    config = _apply(config, failed)
    assert (config.production_version, config.canary_version) == ("v1", None)


# -- step evidence ------------------------------------------------------------------------------

STATE = RolloutState(
    model_name="fraud",
    candidate_version="v2",
    known_good_version="v1",
    phase=Phase.RUNNING,
    step_index=1,
    step_started_ms=1_000,
    started_ms=0,
    updated_ms=1_000,
)


def prediction(
    pid: str,
    version: str,
    route: Route,
    timestamp: int,
    *,
    error: bool = False,
    model: str = "fraud",
    latency_ms: float = 5.0,
) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=pid,
        model_name=model,
        model_version=version,
        timestamp=timestamp,
        features={},
        prediction=None if error else 0.9,
        confidence=None,
        latency_ms=latency_ms,
        route=route,
        replica_id="r1",
        routing_key=pid,
        routing_hash_version=1,
        error="boom" if error else None,
    )


def feedback(
    pid: str,
    version: str,
    route: Route,
    timestamp: int,
    *,
    score: float = 0.9,
    truth: float | None = 1.0,
    model: str = "fraud",
) -> FeedbackRecord:
    joined = truth is not None
    return FeedbackRecord(
        prediction_id=pid,
        model_name=model,
        model_version=version,
        route=route,
        replica_id="r1",
        features={},
        prediction=score,
        confidence=None,
        prediction_timestamp=timestamp,
        status=FeedbackStatus.JOINED if joined else FeedbackStatus.EXPIRED,
        ground_truth=truth,
        outcome_timestamp=timestamp + 500 if joined else None,
        label_delay_ms=500 if joined else None,
        outcome_source="test" if joined else None,
        emitted_at=timestamp + 600,
    )


def test_evidence_counts_only_this_steps_candidate_and_known_good_traffic() -> None:
    evidence = StepEvidence(STATE, Task.CLASSIFICATION)
    evidence.add_predictions(
        [
            prediction("c1", "v2", Route.CANARY, 1_000),
            prediction("c2", "v2", Route.CANARY, 1_500, error=True, latency_ms=40.0),
            prediction("c3", "v2", Route.CANARY, 2_000),
            prediction("p1", "v1", Route.PRODUCTION, 1_200),
            prediction("p2", "v1", Route.PRODUCTION, 3_000, error=True),
            # Not this step's evidence:
            prediction("old-c", "v2", Route.CANARY, 999, error=True),  # an earlier step
            prediction("old-p", "v1", Route.PRODUCTION, 10),
            prediction("other", "v2", Route.CANARY, 1_500, model="churn", error=True),
            prediction("shadow", "v2", Route.SHADOW, 1_500, error=True),
            prediction("v3", "v3", Route.CANARY, 1_500, error=True),  # another candidate
            prediction("v2-prod", "v2", Route.PRODUCTION, 1_500, error=True),
            prediction("v1-canary", "v1", Route.CANARY, 1_500, error=True),
        ]
    )
    figures = evidence.evidence()
    assert (figures.canary.request_count, figures.canary.error_count) == (3, 1)
    assert (figures.production.request_count, figures.production.error_count) == (2, 1)
    assert figures.canary.latency_p99_ms is not None and figures.canary.latency_p99_ms > 5.0
    assert figures.canary_performance is None and figures.production_performance is None


def test_evidence_accumulates_over_batches_and_keeps_the_newest_rows() -> None:
    evidence = StepEvidence(STATE, Task.CLASSIFICATION, max_rows=10)
    for batch in range(3):
        evidence.add_predictions(
            [prediction(f"{batch}-{i}", "v2", Route.CANARY, 2_000) for i in range(6)]
        )
    evidence.add_predictions(
        [prediction(f"e{i}", "v2", Route.CANARY, 2_000, error=True) for i in range(4)]
    )
    canary = evidence.evidence().canary
    assert (canary.request_count, canary.error_count) == (10, 4)
    assert evidence.evidence().production.request_count == 0


def test_evidence_labels_are_this_steps_and_per_side() -> None:
    evidence = StepEvidence(STATE, Task.CLASSIFICATION)
    evidence.add_feedback(
        [
            feedback("c1", "v2", Route.CANARY, 1_100),  # right
            feedback("c2", "v2", Route.CANARY, 1_100, score=0.2),  # wrong
            feedback("c3", "v2", Route.CANARY, 1_100, truth=None),  # expired: no label
            feedback("c4", "v2", Route.CANARY, 1_100, score=0.1, truth=0.0),  # right
            feedback("p1", "v1", Route.PRODUCTION, 1_100),
            # Not this step's evidence:
            feedback("old", "v2", Route.CANARY, 900, score=0.1),
            feedback("other", "v2", Route.CANARY, 1_100, model="churn", score=0.1),
            feedback("shadow", "v2", Route.SHADOW, 1_100, score=0.1),
        ]
    )
    figures = evidence.evidence()
    canary, production = figures.canary_performance, figures.production_performance
    assert canary is not None and production is not None
    assert (canary.predicted_count, canary.labelled_count) == (4, 3)
    assert canary.classification is not None
    assert canary.classification.accuracy == pytest.approx(2 / 3)
    assert production.labelled_count == 1
    assert production.classification is not None and production.classification.accuracy == 1.0
    # Labels alone are not requests.
    assert figures.canary.request_count == 0


def test_evidence_is_bound_to_the_state_it_was_made_for() -> None:
    promoted_step = dataclasses.replace(STATE, step_started_ms=5_000, candidate_version="v3")
    evidence = StepEvidence(promoted_step, Task.REGRESSION)
    assert (evidence.model_name, evidence.candidate, evidence.production) == ("fraud", "v3", "v1")
    assert evidence.since_ms == 5_000
    evidence.add_predictions([prediction("c", "v2", Route.CANARY, 6_000)])
    evidence.add_feedback([feedback("c", "v3", Route.CANARY, 6_000, score=2.0, truth=3.0)])
    figures = evidence.evidence()
    assert figures.canary.request_count == 0
    assert figures.canary_performance is not None
    assert figures.canary_performance.task is Task.REGRESSION
    assert figures.canary_performance.regression is not None
    assert figures.canary_performance.classification is None
