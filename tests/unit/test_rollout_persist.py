"""Rollout plan and state as command `details` and back, and the audit trail's newest rollout."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.performance import PerformanceMetric
from safeloop.services.rollout.exceptions import RolloutError
from safeloop.services.rollout.gate import GateOutcome, GateResult
from safeloop.services.rollout.history import latest_rollout
from safeloop.services.rollout.machine import Phase, RolloutState, start
from safeloop.services.rollout.persist import (
    PLAN_KEY,
    STATE_KEY,
    plan_from_json,
    plan_to_json,
    rollout_of,
    state_from_json,
    state_to_json,
)
from safeloop.services.rollout.plan import DeadlineAction, FailAction, RolloutPlan

PLAN = RolloutPlan(
    steps_percent=(1.0, 12.5, 100.0),
    bake_ms=2_000,
    min_sample_per_step=300,
    min_labelled_per_step=40,
    deadline_ms=90_000,
    on_fail=FailAction.PAUSE,
    on_deadline=DeadlineAction.ROLLBACK,
    confidence=0.99,
    error_rate_tolerance=0.002,
    accuracy_tolerance=0.03,
    require_labels=True,
    guard=GuardPolicy(
        max_error_rate=0.1,
        max_p99_latency_ms=None,
        max_p99_latency_ratio=3.0,
        max_performance_drop=None,
        performance_metric=PerformanceMetric.ROC_AUC,
        min_requests=250,
        min_labelled=60,
    ),
)
GATE = GateResult(
    GateOutcome.FAIL, "canary error rate higher", {"canary_requests": "400", "low": "0.03"}
)
PAUSED = RolloutState(
    model_name="fraud",
    candidate_version="v2",
    known_good_version="v1",
    phase=Phase.PAUSED,
    step_index=1,
    step_started_ms=5_000,
    started_ms=1_000,
    updated_ms=7_500,
    last_gate=GATE,
    reason="gate at 12.5% failed: canary error rate higher",
)


# -- state --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        start(PLAN, "fraud", "v1", "v2", now_ms=1_000).state,
        PAUSED,
        replace(PAUSED, phase=Phase.ROLLED_BACK, last_gate=None, reason=""),
        replace(PAUSED, phase=Phase.PROMOTED, step_index=2, candidate_version="v10"),
    ],
    ids=["started", "paused-with-gate", "rolled-back", "promoted"],
)
def test_state_round_trips(state: RolloutState) -> None:
    text = state_to_json(state)
    back = state_from_json(text)
    assert back == state
    assert isinstance(back.phase, Phase)
    assert back.last_gate is None or isinstance(back.last_gate.outcome, GateOutcome)


def test_state_json_is_plain_stable_json() -> None:
    text = state_to_json(PAUSED)
    raw = json.loads(text)
    assert raw["phase"] == "paused"
    assert raw["last_gate"] == {
        "outcome": "fail",
        "reason": "canary error rate higher",
        "numbers": {"canary_requests": "400", "low": "0.03"},
    }
    assert raw["step_index"] == 1 and raw["updated_ms"] == 7_500
    assert list(raw) == sorted(raw)
    # Same state, same bytes: details of two commands can be compared as strings.
    assert state_to_json(replace(PAUSED)) == text


def test_state_without_a_reason_reads_as_empty() -> None:
    raw = json.loads(state_to_json(PAUSED))
    del raw["reason"]
    assert state_from_json(json.dumps(raw)).reason == ""


def _state_with(**changes: Any) -> str:
    raw = json.loads(state_to_json(PAUSED))
    raw.update(changes)
    return json.dumps(raw)


def _state_without(key: str) -> str:
    raw = json.loads(state_to_json(PAUSED))
    del raw[key]
    return json.dumps(raw)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        "null",
        '"paused"',
        "{}",
        _state_without("model_name"),
        _state_without("phase"),
        _state_with(phase="sleeping"),
        _state_with(step_index="second"),
        _state_with(updated_ms=None),
        _state_with(last_gate={"outcome": "maybe", "reason": "r", "numbers": {}}),
        _state_with(last_gate={"reason": "r", "numbers": {}}),
        _state_with(last_gate="fail"),
    ],
)
def test_malformed_state_is_a_rollout_error(text: str) -> None:
    with pytest.raises(RolloutError, match="malformed rollout state") as caught:
        state_from_json(text)
    assert caught.value.__cause__ is not None


def test_error_quotes_at_most_200_characters_of_the_input() -> None:
    text = "x" * 5_000
    with pytest.raises(RolloutError) as caught:
        state_from_json(text)
    assert "x" * 200 in str(caught.value)
    assert "x" * 201 not in str(caught.value)


# -- plan ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [RolloutPlan(), PLAN, replace(PLAN, guard=None), RolloutPlan(steps_percent=(100.0,))],
    ids=["defaults", "everything-set", "no-guard", "single-step"],
)
def test_plan_round_trips(plan: RolloutPlan) -> None:
    back = plan_from_json(plan_to_json(plan))
    assert back == plan
    assert isinstance(back.steps_percent, tuple)
    assert all(isinstance(step, float) for step in back.steps_percent)
    assert isinstance(back.on_fail, FailAction) and isinstance(back.on_deadline, DeadlineAction)
    if back.guard is not None:
        assert isinstance(back.guard.performance_metric, PerformanceMetric)


def test_plan_json_spells_enums_and_guard_out() -> None:
    raw = json.loads(plan_to_json(PLAN))
    assert raw["steps_percent"] == [1.0, 12.5, 100.0]
    assert (raw["on_fail"], raw["on_deadline"]) == ("pause", "rollback")
    assert raw["guard"]["performance_metric"] == "roc_auc"
    assert raw["guard"]["max_p99_latency_ms"] is None
    assert raw["guard"]["min_requests"] == 250
    assert json.loads(plan_to_json(replace(PLAN, guard=None)))["guard"] is None


def test_integer_steps_read_back_as_floats() -> None:
    raw = json.loads(plan_to_json(PLAN))
    raw["steps_percent"] = [1, 50, 100]
    assert plan_from_json(json.dumps(raw)).steps_percent == (1.0, 50.0, 100.0)


def _plan_with(**changes: Any) -> str:
    raw = json.loads(plan_to_json(PLAN))
    raw.update(changes)
    return json.dumps(raw)


def _plan_without(key: str) -> str:
    raw = json.loads(plan_to_json(PLAN))
    del raw[key]
    return json.dumps(raw)


def _guard_with(**changes: Any) -> str:
    raw = json.loads(plan_to_json(PLAN))
    raw["guard"].update(changes)
    return json.dumps(raw)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        "null",
        "3",
        "{}",
        _plan_without("steps_percent"),
        _plan_without("on_fail"),
        _plan_with(steps_percent="5,100"),
        _plan_with(steps_percent=[50.0, 10.0, 100.0]),  # the plan's own validation
        _plan_with(confidence=1.5),
        _plan_with(on_fail="explode"),
        _plan_with(on_deadline=None),
        _plan_with(surprise=True),
        _plan_with(guard="strict"),
        _guard_with(performance_metric="vibes"),
        _guard_with(max_error_rate=2.0),  # the policy's own validation
        _guard_with(unknown_rule=1.0),
    ],
)
def test_malformed_plan_is_a_rollout_error(text: str) -> None:
    with pytest.raises(RolloutError, match="malformed rollout plan") as caught:
        plan_from_json(text)
    assert caught.value.__cause__ is not None


# -- details ------------------------------------------------------------------------------------


def test_rollout_of_reads_both_keys_or_nothing() -> None:
    details = {STATE_KEY: state_to_json(PAUSED), PLAN_KEY: plan_to_json(PLAN), "other": "x"}
    assert rollout_of(details) == (PLAN, PAUSED)
    assert rollout_of({}) is None
    assert rollout_of({"canary_requests": "10"}) is None
    assert rollout_of({STATE_KEY: details[STATE_KEY]}) is None
    assert rollout_of({PLAN_KEY: details[PLAN_KEY]}) is None


def test_rollout_of_malformed_details_is_a_rollout_error() -> None:
    with pytest.raises(RolloutError, match="plan"):
        rollout_of({STATE_KEY: state_to_json(PAUSED), PLAN_KEY: "[1, 2]"})
    with pytest.raises(RolloutError, match="state"):
        rollout_of({STATE_KEY: "{}", PLAN_KEY: plan_to_json(PLAN)})


# -- history ------------------------------------------------------------------------------------


class _Result:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.result_rows = rows


class FakeClient:
    """Answers every query with `rows`; remembers what it was asked."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.queries: list[tuple[str, dict[str, Any]]] = []

    def query(self, sql: str, parameters: dict[str, Any]) -> _Result:
        self.queries.append((sql, parameters))
        return _Result(self.rows)


def test_latest_rollout_reads_the_newest_rollout_entry_of_the_model() -> None:
    details = {STATE_KEY: state_to_json(PAUSED), PLAN_KEY: plan_to_json(PLAN), "seq": "4"}
    client = FakeClient([(details,)])
    assert latest_rollout(client, "fraud") == (PLAN, PAUSED)  # type: ignore[arg-type]
    ((sql, parameters),) = client.queries
    assert parameters == {"model": "fraud"}
    assert "model_name = {model:String}" in sql
    assert "entry_type = 'rollout'" in sql
    assert "ORDER BY issued_at DESC, sequence DESC LIMIT 1" in sql


def test_latest_rollout_accepts_details_as_key_value_pairs() -> None:
    details = [(STATE_KEY, state_to_json(PAUSED)), (PLAN_KEY, plan_to_json(PLAN))]
    client = FakeClient([(details,)])
    assert latest_rollout(client, "fraud") == (PLAN, PAUSED)  # type: ignore[arg-type]


def test_latest_rollout_without_one_is_none() -> None:
    assert latest_rollout(FakeClient([]), "fraud") is None  # type: ignore[arg-type]
    no_rollout = FakeClient([({"reason": "manual"},)])
    assert latest_rollout(no_rollout, "fraud") is None  # type: ignore[arg-type]


def test_latest_rollout_with_a_corrupt_entry_is_a_rollout_error() -> None:
    corrupt = FakeClient([({STATE_KEY: "oops", PLAN_KEY: plan_to_json(PLAN)},)])
    with pytest.raises(RolloutError, match="malformed rollout state"):
        latest_rollout(corrupt, "fraud")  # type: ignore[arg-type]
