"""The retraining loop as a state machine: pure functions from (run, observation, time) to
(run, effects). Nothing here reads a clock, a topic or a table; the process does, and acts.

    RECEIVED  --trained + registered--> REGISTERED --shadow on--> SHADOWING
    RECEIVED  --training failed--> FAILED
    SHADOWING --baked, agreement and estimated performance acceptable--> APPROVED
                  (with the approval gate: AWAITING_APPROVAL --approve--> APPROVED)
    SHADOWING --unacceptable, or too few pairs at the deadline--> REJECTED (shadow off)
    AWAITING_APPROVAL --reject--> REJECTED (shadow off)
    APPROVED  --canary started--> CANARY (shadow off, the rollout's first step)
    CANARY    --rollout promoted--> PROMOTED;  --rolled back--> ROLLED_BACK

Each transition is recorded (a `retraining_steps` row) after its effects are done, so a
restarted process resumes from the last recorded stage and repeats at most one idempotent step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from safeloop.schemas.events import RetrainingDecision
from safeloop.services.retraining.exceptions import RunTransitionError
from safeloop.services.retraining.loop_policy import LoopPolicy

# Who moves a run when no person does.
SERVICE_ACTOR = "safeloop-retrain"


class Stage(StrEnum):
    """Where one retraining run stands."""

    RECEIVED = "received"
    REGISTERED = "registered"
    SHADOWING = "shadowing"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({Stage.PROMOTED, Stage.ROLLED_BACK, Stage.REJECTED, Stage.FAILED})


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Candidate and production scored on the newest labelled rows, held out of training."""

    metric: str
    higher_is_better: bool
    candidate: float
    # None: production could not be scored (e.g. its version is not in the registry).
    production: float | None
    rows: int

    def shortfall(self) -> float | None:
        """How much worse the candidate is than production (negative: better)."""
        if self.production is None:
            return None
        gap = self.production - self.candidate
        return gap if self.higher_is_better else -gap


@dataclass(frozen=True, slots=True)
class RetrainRun:
    """Everything needed to continue one run; `step` counts its recorded transitions."""

    run_id: str
    model_name: str
    base_version: str
    stage: Stage
    step: int
    started_ms: int
    stage_started_ms: int
    updated_ms: int
    reason: str
    actor: str = SERVICE_ACTOR
    candidate_version: str = ""
    lineage: Mapping[str, str] = field(default_factory=dict)
    evaluation: Evaluation | None = None
    # The last shadow figures judged (strings, as they are shown and stored).
    figures: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StartShadow:
    model_name: str
    version: str


@dataclass(frozen=True, slots=True)
class StopShadow:
    model_name: str
    version: str


@dataclass(frozen=True, slots=True)
class StartCanary:
    model_name: str
    version: str
    reason: str


Effect = StartShadow | StopShadow | StartCanary


@dataclass(frozen=True, slots=True)
class Transition:
    """The new run and what must be done before it is recorded (unchanged run: nothing)."""

    run: RetrainRun
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class Trained:
    """The candidate is trained and registered with its lineage."""

    candidate_version: str
    lineage: Mapping[str, str]
    evaluation: Evaluation


@dataclass(frozen=True, slots=True)
class TrainingFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class ShadowEvidence:
    """The shadow scorer's newest figures for the candidate since its shadow began."""

    pair_count: int
    agreement_rate: float | None


class RolloutPhase(StrEnum):
    """The canary rollout's phase as the rollout controller recorded it (its `Phase` values)."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


def begin(decision: RetrainingDecision, now_ms: int) -> RetrainRun:
    """A new run for a `should_retrain` decision; its id is the decision's."""
    if not decision.should_retrain:
        raise RunTransitionError(f"decision {decision.decision_id} does not ask for retraining")
    return RetrainRun(
        run_id=decision.decision_id,
        model_name=decision.model_name,
        base_version=decision.model_version,
        stage=Stage.RECEIVED,
        step=0,
        started_ms=now_ms,
        stage_started_ms=now_ms,
        updated_ms=now_ms,
        reason=f"retraining asked ({decision.urgency.value}): {decision.reason}",
    )


def on_trained(run: RetrainRun, outcome: Trained | TrainingFailed, now_ms: int) -> Transition:
    """RECEIVED -> REGISTERED with the candidate's lineage, or -> FAILED."""
    _expect(run, Stage.RECEIVED)
    if isinstance(outcome, TrainingFailed):
        return Transition(_move(run, Stage.FAILED, now_ms, f"training failed: {outcome.reason}"))
    evaluation = outcome.evaluation
    moved = _move(
        run,
        Stage.REGISTERED,
        now_ms,
        f"candidate {outcome.candidate_version} registered; {_describe(evaluation)}",
    )
    return Transition(
        replace(
            moved,
            candidate_version=outcome.candidate_version,
            lineage=dict(outcome.lineage),
            evaluation=evaluation,
        )
    )


def start_shadow(run: RetrainRun, now_ms: int) -> Transition:
    """REGISTERED -> SHADOWING: the candidate answers every request beside production."""
    _expect(run, Stage.REGISTERED)
    moved = _move(run, Stage.SHADOWING, now_ms, f"{run.candidate_version} in shadow")
    return Transition(moved, (StartShadow(run.model_name, run.candidate_version),))


def judge_shadow(
    run: RetrainRun, policy: LoopPolicy, evidence: ShadowEvidence, now_ms: int
) -> Transition:
    """SHADOWING -> APPROVED / AWAITING_APPROVAL / REJECTED, or keep waiting (same run)."""
    _expect(run, Stage.SHADOWING)
    figures = {"shadow_pairs": str(evidence.pair_count)}
    if evidence.agreement_rate is not None:
        figures["shadow_agreement"] = f"{evidence.agreement_rate:.4f}"
    elapsed_ms = now_ms - run.stage_started_ms
    failures = _failures(run, policy, evidence)
    enough = evidence.pair_count >= policy.min_shadow_pairs
    if failures and enough:
        return _reject(run, now_ms, "; ".join(failures), figures)
    if elapsed_ms < policy.shadow_bake_ms or not enough:
        if elapsed_ms >= policy.shadow_deadline_ms:
            reason = (
                f"{evidence.pair_count} of {policy.min_shadow_pairs} shadow pairs "
                f"by the deadline ({policy.shadow_deadline_ms} ms)"
            )
            return _reject(run, now_ms, reason, figures)
        if figures == dict(run.figures):
            return Transition(run)
        return Transition(replace(run, figures=figures, updated_ms=now_ms))
    accepted = (
        f"shadow agreement {evidence.agreement_rate:.1%} over {evidence.pair_count} pairs; "
        f"{_describe(run.evaluation)}"
    )
    if policy.approval:
        waiting = _move(run, Stage.AWAITING_APPROVAL, now_ms, f"{accepted}; waiting for approval")
        return Transition(replace(waiting, figures=figures))
    return Transition(replace(_move(run, Stage.APPROVED, now_ms, accepted), figures=figures))


def approve(run: RetrainRun, actor: str, reason: str, now_ms: int) -> Transition:
    """AWAITING_APPROVAL -> APPROVED, by a person; the service then starts the canary."""
    _expect(run, Stage.AWAITING_APPROVAL)
    moved = _move(run, Stage.APPROVED, now_ms, f"approved by {actor}: {reason}", actor=actor)
    return Transition(moved)


def reject(run: RetrainRun, actor: str, reason: str, now_ms: int) -> Transition:
    """AWAITING_APPROVAL (or SHADOWING) -> REJECTED, by a person; the shadow is turned off."""
    if run.stage not in (Stage.AWAITING_APPROVAL, Stage.SHADOWING):
        raise RunTransitionError(f"run {run.run_id} is {run.stage.value}: nothing to reject")
    moved = _move(run, Stage.REJECTED, now_ms, f"rejected by {actor}: {reason}", actor=actor)
    return Transition(moved, (StopShadow(run.model_name, run.candidate_version),))


def start_canary(run: RetrainRun, now_ms: int) -> Transition:
    """APPROVED -> CANARY: shadow off, the progressive rollout's first step on."""
    _expect(run, Stage.APPROVED)
    moved = _move(run, Stage.CANARY, now_ms, f"canary rollout of {run.candidate_version} started")
    effects: tuple[Effect, ...] = (
        StopShadow(run.model_name, run.candidate_version),
        StartCanary(run.model_name, run.candidate_version, f"retraining run {run.run_id}"),
    )
    return Transition(moved, effects)


def on_rollout(run: RetrainRun, phase: RolloutPhase, reason: str, now_ms: int) -> Transition:
    """CANARY -> PROMOTED or ROLLED_BACK once the rollout ends; otherwise unchanged."""
    _expect(run, Stage.CANARY)
    if phase is RolloutPhase.PROMOTED:
        return Transition(_move(run, Stage.PROMOTED, now_ms, f"promoted: {reason}"))
    if phase is RolloutPhase.ROLLED_BACK:
        return Transition(_move(run, Stage.ROLLED_BACK, now_ms, f"rolled back: {reason}"))
    return Transition(run)


def _failures(run: RetrainRun, policy: LoopPolicy, evidence: ShadowEvidence) -> list[str]:
    failures = []
    if evidence.agreement_rate is not None and evidence.agreement_rate < policy.min_agreement:
        failures.append(
            f"shadow agreement {evidence.agreement_rate:.1%} below {policy.min_agreement:.1%}"
        )
    shortfall = None if run.evaluation is None else run.evaluation.shortfall()
    if shortfall is not None and shortfall > policy.performance_tolerance:
        assert run.evaluation is not None
        failures.append(
            f"estimated {run.evaluation.metric} worse than production's by {shortfall:.4g} "
            f"(tolerance {policy.performance_tolerance:.4g})"
        )
    return failures


def _reject(run: RetrainRun, now_ms: int, reason: str, figures: Mapping[str, str]) -> Transition:
    moved = _move(run, Stage.REJECTED, now_ms, f"not rolled out: {reason}")
    return Transition(
        replace(moved, figures=dict(figures)),
        (StopShadow(run.model_name, run.candidate_version),),
    )


def _describe(evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return "no estimate of its performance"
    text = f"estimated {evaluation.metric} {evaluation.candidate:.4g}"
    if evaluation.production is not None:
        text += f" (production {evaluation.production:.4g})"
    return f"{text} on the newest {evaluation.rows} labelled rows"


def _move(
    run: RetrainRun, stage: Stage, now_ms: int, reason: str, *, actor: str = SERVICE_ACTOR
) -> RetrainRun:
    return replace(
        run,
        stage=stage,
        step=run.step + 1,
        stage_started_ms=now_ms,
        updated_ms=now_ms,
        reason=reason,
        actor=actor,
    )


def _expect(run: RetrainRun, stage: Stage) -> None:
    if run.stage is not stage:
        raise RunTransitionError(f"run {run.run_id} is {run.stage.value}, not {stage.value}")
