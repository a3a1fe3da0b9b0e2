"""Approvals and dry runs: a rollout that waits for a person, and one that only says what it
would do, down to the control_log rows it leaves."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from test_rollout import GOOD, PLAN, started

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.audit import EntryType
from safeloop.services.metrics.performance import Task
from safeloop.services.rollout.controller import RolloutController
from safeloop.services.rollout.exceptions import TransitionError
from safeloop.services.rollout.intents import Pause, Promote, Rollback, SetCanary
from safeloop.services.rollout.machine import Phase, advance, approve, reject
from safeloop.services.rollout.persist import PLAN_KEY, STATE_KEY, plan_from_json, plan_to_json
from safeloop.services.rollout.plan import Approval


def test_every_step_plan_waits_for_approval_holding_the_share() -> None:
    plan = replace(PLAN, approval=Approval.EVERY_STEP)
    waiting = advance(plan, started(plan), GOOD, 1_000)
    assert waiting.state.phase is Phase.AWAITING_APPROVAL
    (hold,) = waiting.intents
    assert isinstance(hold, Pause) and hold.percent == 5.0
    assert "10% waits for approval" in waiting.state.reason
    # Further ticks do nothing until a person answers.
    assert advance(plan, waiting.state, GOOD, 5_000).intents == ()
    approved = approve(plan, waiting.state, "alice@ops", "dashboards look fine", 6_000)
    assert approved.state.phase is Phase.RUNNING and approved.state.step_index == 1
    assert approved.intents == (SetCanary("fraud", "v2", 10.0, approved.state.reason),)
    assert "approved by alice@ops: dashboards look fine" in approved.state.reason


def test_promotion_plan_walks_the_steps_and_waits_only_before_promoting() -> None:
    plan = replace(PLAN, approval=Approval.PROMOTION)
    state, now = started(plan), 0
    for _ in plan.steps_percent[:-1]:
        now += 1_000
        transition = advance(plan, state, GOOD, now)
        assert isinstance(transition.intents[0], SetCanary)
        state = transition.state
    waiting = advance(plan, state, GOOD, now + 1_000)
    assert waiting.state.phase is Phase.AWAITING_APPROVAL
    assert "promotion waits for approval" in waiting.state.reason
    promoted = approve(plan, waiting.state, "bob", "ok", now + 2_000)
    assert promoted.state.phase is Phase.PROMOTED
    assert isinstance(promoted.intents[0], Promote)


def test_reject_rolls_back_with_who_and_why_and_nothing_else_can_be_approved() -> None:
    plan = replace(PLAN, approval=Approval.EVERY_STEP)
    waiting = advance(plan, started(plan), GOOD, 1_000).state
    rejected = reject(waiting, "carol", "latency in EU too high", 2_000)
    assert rejected.state.phase is Phase.ROLLED_BACK
    (intent,) = rejected.intents
    assert isinstance(intent, Rollback) and intent.to_version == "v1"
    assert rejected.state.reason == "rejected by carol: latency in EU too high"
    with pytest.raises(TransitionError):
        approve(plan, rejected.state, "carol", "oops", 3_000)
    with pytest.raises(TransitionError):
        reject(started(plan), "carol", "not waiting", 3_000)


def test_plans_keep_approval_and_dry_run_and_old_plans_still_parse() -> None:
    plan = replace(PLAN, approval=Approval.PROMOTION, dry_run=True)
    assert plan_from_json(plan_to_json(plan)) == plan
    old = json.loads(plan_to_json(PLAN))
    del old["approval"], old["dry_run"]
    assert plan_from_json(json.dumps(old)) == PLAN


class RecordingIssuer:
    """The slice of CommandIssuer the controller uses: records sends and audit rows."""

    def __init__(self, latest: ControlCommand) -> None:
        self._latest = latest
        self.issued: list[Any] = []
        self.audited: list[tuple[ControlCommand, tuple[EntryType, ...]]] = []
        self.issuer = "safeloop-metrics"

    def latest(self, model_name: str) -> ControlCommand | None:
        return self._latest

    def issue(self, *args: Any, **kwargs: Any) -> ControlCommand:
        self.issued.append((args, kwargs))
        raise AssertionError("a dry run must not send commands")

    def audit(self, command: ControlCommand, entry_types: tuple[EntryType, ...]) -> None:
        self.audited.append((command, entry_types))


def test_dry_run_records_what_it_would_do_once_per_move_and_sends_nothing() -> None:
    plan = replace(PLAN, dry_run=True)
    state = started(plan)
    first = ControlCommand(
        command_id="c1",
        model_name="fraud",
        kind=CommandKind.SET_CANARY,
        sequence=1,
        issued_at=0,
        issuer="alice",
        reason="rollout: rollout started",
        config=ModelConfig(production_version="v1", canary_version="v2", canary_basis_points=500),
        key_id="k",
        signature="s",
        details={STATE_KEY: "", PLAN_KEY: ""},
    )
    issuer = RecordingIssuer(first)
    controller = RolloutController(issuer, lambda model, version: Task.CLASSIFICATION)  # type: ignore[arg-type]
    controller._adopt(plan, state)
    active = controller._active["fraud"]
    active.evidence.evidence = lambda: GOOD  # type: ignore[method-assign]
    assert controller.tick(1_000) == [] and controller.tick(1_500) == []
    assert issuer.issued == []
    ((row, entry_types),) = issuer.audited
    assert entry_types == (EntryType.DRY_RUN,)
    assert row.details["dry_run_phase"] == "running" and row.details["dry_run_step_percent"] == "10"
    assert row.reason.startswith("dry run, not done: gate at 5% passed")
    assert row.command_id != first.command_id  # its own row, not a replacement of the command
    # The rollout itself has not moved.
    assert controller.state_of("fraud") == state
    assert json.loads(row.details[STATE_KEY])["step_index"] == 0
    assert controller.dry_run_records == 1
