"""The rollout state machine: pure functions from (state, evidence, time) to (state, intents).

    RUNNING --gate PASS--> next step ... last step PASS --> PROMOTED
    RUNNING --gate PASS, plan needs approval--> AWAITING_APPROVAL
    AWAITING_APPROVAL --approve--> next step or PROMOTED; --reject--> ROLLED_BACK
    RUNNING --gate FAIL / deadline--> ROLLED_BACK or PAUSED (by plan)
    PAUSED  --resume--> RUNNING (the step's clock restarts)
    any but ROLLED_BACK --rollback/abort--> ROLLED_BACK, also after promotion

Nothing here reads a clock or sends anything: callers pass `now_ms` and act on the intents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from safeloop.services.rollout.exceptions import TransitionError
from safeloop.services.rollout.gate import (
    PROVISIONAL,
    GateEvidence,
    GateOutcome,
    GateResult,
    judge_gate,
)
from safeloop.services.rollout.intents import Intent, Pause, Promote, Rollback, SetCanary
from safeloop.services.rollout.plan import DeadlineAction, FailAction, RolloutPlan
from safeloop.services.rollout.sequential import ConfidenceSequence


class Phase(StrEnum):
    """Where a rollout stands."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class RolloutState:
    """Everything needed to continue, or undo, one model's rollout."""

    model_name: str
    candidate_version: str
    # Production before the rollout: the instant-rollback target, even after promotion.
    known_good_version: str
    phase: Phase
    step_index: int
    step_started_ms: int
    started_ms: int
    updated_ms: int
    last_gate: GateResult | None = None
    reason: str = ""
    # A step passed on the label-free estimate: the promotion is re-judged once labels land.
    provisional: bool = False

    def canary_percent(self, plan: RolloutPlan) -> float:
        """The candidate's current traffic share."""
        if self.phase is Phase.ROLLED_BACK:
            return 0.0
        if self.phase is Phase.PROMOTED:
            return 100.0
        return plan.steps_percent[self.step_index]


@dataclass(frozen=True, slots=True)
class Transition:
    """The new state and what must happen for it to be true (empty: nothing to do)."""

    state: RolloutState
    intents: tuple[Intent, ...] = ()
    gate: GateResult | None = None


def start(
    plan: RolloutPlan, model_name: str, production_version: str, candidate_version: str, now_ms: int
) -> Transition:
    """Begin at the first step."""
    if candidate_version == production_version:
        raise TransitionError(f"{model_name}: candidate {candidate_version} is already production")
    state = RolloutState(
        model_name=model_name,
        candidate_version=candidate_version,
        known_good_version=production_version,
        phase=Phase.RUNNING,
        step_index=0,
        step_started_ms=now_ms,
        started_ms=now_ms,
        updated_ms=now_ms,
        reason="rollout started",
    )
    percent = plan.steps_percent[0]
    return Transition(state, (SetCanary(model_name, candidate_version, percent, state.reason),))


def advance(
    plan: RolloutPlan, state: RolloutState, evidence: GateEvidence, now_ms: int
) -> Transition:
    """Judge the current step's gate and move on, fail, or keep waiting; no-op unless RUNNING."""
    if state.phase is not Phase.RUNNING:
        return Transition(state)
    elapsed_ms = now_ms - state.step_started_ms
    gate = judge_gate(plan, evidence, baked=elapsed_ms >= plan.bake_ms)
    step = plan.steps_percent[state.step_index]
    if gate.outcome is GateOutcome.FAIL:
        reason = f"gate at {step:g}% failed: {gate.reason}"
        return _on_failure(
            state, gate, now_ms, plan.on_fail is FailAction.ROLLBACK, reason, step=step
        )
    if gate.outcome is GateOutcome.INCONCLUSIVE:
        if elapsed_ms < plan.deadline_ms:
            return Transition(replace(state, updated_ms=now_ms, last_gate=gate), gate=gate)
        reason = f"gate at {step:g}% still inconclusive at its deadline: {gate.reason}"
        if plan.on_deadline is not DeadlineAction.PROCEED:
            roll_back = plan.on_deadline is DeadlineAction.ROLLBACK
            return _on_failure(state, gate, now_ms, roll_back, reason, step=step)
        gate = GateResult(gate.outcome, reason, gate.numbers)
    if plan.needs_approval(state.step_index):
        return _await_approval(plan, state, gate, now_ms)
    return _next_step(plan, state, gate, now_ms)


def approve(
    plan: RolloutPlan, state: RolloutState, operator: str, why: str, now_ms: int
) -> Transition:
    """A person lets a rollout waiting for approval take its next step (or promote)."""
    if state.phase is not Phase.AWAITING_APPROVAL or state.last_gate is None:
        raise TransitionError(
            f"{state.model_name}: nothing to approve, the rollout is {state.phase.value}"
        )
    gate = state.last_gate
    approved = GateResult(
        gate.outcome, f"approved by {operator}: {why}; {gate.reason}", gate.numbers
    )
    return _next_step(plan, replace(state, phase=Phase.RUNNING), approved, now_ms)


def reject(state: RolloutState, operator: str, why: str, now_ms: int) -> Transition:
    """A person refuses the next move: the same instant rollback, with who and why."""
    if state.phase is not Phase.AWAITING_APPROVAL:
        raise TransitionError(
            f"{state.model_name}: nothing to reject, the rollout is {state.phase.value}"
        )
    return rollback(state, f"rejected by {operator}: {why}", now_ms)


def rollback(
    state: RolloutState, reason: str, now_ms: int, numbers: Mapping[str, str] | None = None
) -> Transition:
    """Return to the known-good version at once, from any phase (after promotion too)."""
    if state.phase is Phase.ROLLED_BACK:
        return Transition(state)
    intent = Rollback(
        state.model_name, state.known_good_version, state.candidate_version, reason, numbers or {}
    )
    new_state = replace(state, phase=Phase.ROLLED_BACK, updated_ms=now_ms, reason=reason)
    return Transition(new_state, (intent,))


def abort(state: RolloutState, operator: str, now_ms: int) -> Transition:
    """An operator stops the rollout: the same instant rollback, with who asked."""
    return rollback(state, f"aborted by {operator}", now_ms)


def pause(plan: RolloutPlan, state: RolloutState, reason: str, now_ms: int) -> Transition:
    """Hold a running rollout at its current step."""
    if state.phase is not Phase.RUNNING:
        raise TransitionError(f"{state.model_name}: cannot pause a {state.phase.value} rollout")
    percent = state.canary_percent(plan)
    intent = Pause(state.model_name, state.candidate_version, percent, reason)
    new_state = replace(state, phase=Phase.PAUSED, updated_ms=now_ms, reason=reason)
    return Transition(new_state, (intent,))


def resume(plan: RolloutPlan, state: RolloutState, now_ms: int) -> Transition:
    """Continue a paused rollout; its step is re-baked and re-judged from now."""
    if state.phase is not Phase.PAUSED:
        raise TransitionError(f"{state.model_name}: cannot resume a {state.phase.value} rollout")
    reason = "rollout resumed"
    new_state = replace(
        state, phase=Phase.RUNNING, step_started_ms=now_ms, updated_ms=now_ms, reason=reason
    )
    percent = state.canary_percent(plan)
    # Re-assert the share so a replica that missed the pause converges on it.
    return Transition(
        new_state, (SetCanary(state.model_name, state.candidate_version, percent, reason),)
    )


def _on_failure(
    state: RolloutState,
    gate: GateResult,
    now_ms: int,
    roll_back: bool,
    reason: str,
    *,
    step: float,
) -> Transition:
    if roll_back:
        done = rollback(replace(state, last_gate=gate), reason, now_ms, gate.numbers)
        return Transition(done.state, done.intents, gate)
    intent = Pause(state.model_name, state.candidate_version, step, reason, gate.numbers)
    new_state = replace(state, phase=Phase.PAUSED, updated_ms=now_ms, last_gate=gate, reason=reason)
    return Transition(new_state, (intent,), gate)


def _await_approval(
    plan: RolloutPlan, state: RolloutState, gate: GateResult, now_ms: int
) -> Transition:
    step = plan.steps_percent[state.step_index]
    last = state.step_index == len(plan.steps_percent) - 1
    move = "promotion" if last else f"{plan.steps_percent[state.step_index + 1]:g}%"
    reason = f"gate at {step:g}% passed, {move} waits for approval: {gate.reason}"
    new_state = replace(
        state, phase=Phase.AWAITING_APPROVAL, updated_ms=now_ms, last_gate=gate, reason=reason
    )
    # Hold the share where it is; the command records that a person is needed, and why.
    hold = Pause(state.model_name, state.candidate_version, step, reason, gate.numbers)
    return Transition(new_state, (hold,), gate)


def recheck_provisional(
    plan: RolloutPlan,
    state: RolloutState,
    known_good: tuple[int, int],
    candidate: tuple[int, int],
    now_ms: int,
) -> Transition:
    """Judge a promotion made on estimates by the labels that landed since the rollout began.

    `known_good` and `candidate` are (correct, labelled) counts. The candidate is rolled back
    when its accuracy is lower beyond the tolerance; the promotion is confirmed when the labels
    show it is not, or after ten times the step's label sample without a failure.
    """
    if state.phase is not Phase.PROMOTED or not state.provisional:
        return Transition(state)
    (good_correct, good_count), (new_correct, new_count) = known_good, candidate
    if min(good_count, new_count) < plan.min_labelled_per_step:
        return Transition(state)
    sequence = ConfidenceSequence.for_plan(1.0 - plan.confidence, plan.min_labelled_per_step)
    low, high = sequence.proportion_difference(good_correct, good_count, new_correct, new_count)
    numbers = {
        "accuracy_drop_low": repr(low),
        "accuracy_drop_high": repr(high),
        "known_good_labelled": str(good_count),
        "candidate_labelled": str(new_count),
    }
    if low > plan.accuracy_tolerance:
        reason = (
            f"provisional promotion contradicted by labels: accuracy lower by {low:.4g} to "
            f"{high:.4g} (tolerance {plan.accuracy_tolerance:.4g})"
        )
        return rollback(replace(state, provisional=False), reason, now_ms, numbers)
    if high <= plan.accuracy_tolerance or min(good_count, new_count) >= 10 * (
        plan.min_labelled_per_step
    ):
        reason = f"provisional promotion confirmed by {new_count} labels (drop at most {high:.4g})"
        gate = GateResult(GateOutcome.PASS, reason, numbers)
        confirmed = replace(
            state, provisional=False, updated_ms=now_ms, last_gate=gate, reason=reason
        )
        return Transition(confirmed, gate=gate)
    return Transition(state)


def _next_step(plan: RolloutPlan, state: RolloutState, gate: GateResult, now_ms: int) -> Transition:
    if gate.numbers.get(PROVISIONAL) == "true":
        state = replace(state, provisional=True)
    step = plan.steps_percent[state.step_index]
    if state.step_index == len(plan.steps_percent) - 1:
        reason = f"all steps passed; last gate: {gate.reason}"
        new_state = replace(
            state, phase=Phase.PROMOTED, updated_ms=now_ms, last_gate=gate, reason=reason
        )
        promote = Promote(
            state.model_name, state.candidate_version, state.known_good_version, reason
        )
        return Transition(new_state, (promote,), gate)
    index = state.step_index + 1
    percent = plan.steps_percent[index]
    reason = f"gate at {step:g}% passed: {gate.reason}"
    new_state = replace(
        state,
        step_index=index,
        step_started_ms=now_ms,
        updated_ms=now_ms,
        last_gate=gate,
        reason=reason,
    )
    intent = SetCanary(state.model_name, state.candidate_version, percent, reason)
    return Transition(new_state, (intent,), gate)
