"""Rollout state and plan as JSON strings, carried in control command `details`.

Every command a rollout sends holds its state after the transition, and the compacted control
topic keeps the newest command per model, so a restarted controller (or `rollout status`)
finds the rollout where it was.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.multiple_comparisons import Correction
from safeloop.services.metrics.performance import PerformanceMetric
from safeloop.services.rollout.exceptions import RolloutError
from safeloop.services.rollout.gate import GateOutcome, GateResult
from safeloop.services.rollout.machine import Phase, RolloutState
from safeloop.services.rollout.plan import Approval, DeadlineAction, FailAction, RolloutPlan

STATE_KEY = "rollout_state"
PLAN_KEY = "rollout_plan"


def state_to_json(state: RolloutState) -> str:
    fields = {
        name: getattr(state, name)
        for name in (
            "model_name",
            "candidate_version",
            "known_good_version",
            "step_index",
            "step_started_ms",
            "started_ms",
            "updated_ms",
            "reason",
            "provisional",
        )
    }
    fields["phase"] = state.phase.value
    gate = state.last_gate
    fields["last_gate"] = (
        None
        if gate is None
        else {"outcome": gate.outcome.value, "reason": gate.reason, "numbers": gate.numbers}
    )
    return json.dumps(fields, sort_keys=True)


def state_from_json(text: str) -> RolloutState:
    try:
        raw = _object(text)
        gate = raw.get("last_gate")
        return RolloutState(
            model_name=str(raw["model_name"]),
            candidate_version=str(raw["candidate_version"]),
            known_good_version=str(raw["known_good_version"]),
            phase=Phase(raw["phase"]),
            step_index=int(raw["step_index"]),
            step_started_ms=int(raw["step_started_ms"]),
            started_ms=int(raw["started_ms"]),
            updated_ms=int(raw["updated_ms"]),
            last_gate=None
            if gate is None
            else GateResult(GateOutcome(gate["outcome"]), str(gate["reason"]), gate["numbers"]),
            reason=str(raw.get("reason", "")),
            provisional=bool(raw.get("provisional", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RolloutError(f"malformed rollout state {text[:200]!r}: {exc!r}") from exc


def plan_to_json(plan: RolloutPlan) -> str:
    fields = dataclasses.asdict(plan)
    fields["steps_percent"] = list(plan.steps_percent)
    return json.dumps(fields, sort_keys=True)


def plan_from_json(text: str) -> RolloutPlan:
    try:
        raw = _object(text)
        guard = raw.pop("guard", None)
        raw["steps_percent"] = tuple(float(step) for step in raw["steps_percent"])
        raw["on_fail"] = FailAction(raw["on_fail"])
        raw["on_deadline"] = DeadlineAction(raw["on_deadline"])
        # Plans recorded before approvals and dry runs existed have neither.
        raw["approval"] = Approval(raw.get("approval", Approval.NONE.value))
        raw["dry_run"] = bool(raw.get("dry_run", False))
        # ... and plans recorded before segments had neither of these.
        raw["segment_correction"] = Correction(raw.get("segment_correction", Correction.HOLM.value))
        return RolloutPlan(**raw, guard=None if guard is None else _guard_from(guard))
    except (KeyError, TypeError, ValueError) as exc:
        raise RolloutError(f"malformed rollout plan {text[:200]!r}: {exc!r}") from exc


def _object(text: str) -> dict[str, Any]:
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _guard_from(raw: Mapping[str, Any]) -> GuardPolicy:
    fields = dict(raw)
    fields["performance_metric"] = PerformanceMetric(fields["performance_metric"])
    # Plans recorded before per-task metrics have neither (the defaults apply).
    for name in ("multiclass_metric", "regression_metric"):
        if fields.get(name) is not None:
            fields[name] = PerformanceMetric(fields[name])
    # ... and those before per-segment guarding no segment_correction.
    if "segment_correction" in fields:
        fields["segment_correction"] = Correction(fields["segment_correction"])
    return GuardPolicy(**fields)


def rollout_of(details: Mapping[str, str]) -> tuple[RolloutPlan, RolloutState] | None:
    """The plan and state a command carries, or None when it is not a rollout command."""
    if STATE_KEY not in details or PLAN_KEY not in details:
        return None
    return plan_from_json(details[PLAN_KEY]), state_from_json(details[STATE_KEY])
