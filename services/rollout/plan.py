"""How a rollout proceeds: steps, bake time, sample sizes, deadline and what failure means."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise

from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.multiple_comparisons import Correction
from safeloop.services.rollout.exceptions import PlanError


class FailAction(StrEnum):
    """What a failed gate does."""

    ROLLBACK = "rollback"
    PAUSE = "pause"


class Approval(StrEnum):
    """Which moves wait for a person: none, the promotion, or every step and the promotion."""

    NONE = "none"
    PROMOTION = "promotion"
    EVERY_STEP = "every_step"


class DeadlineAction(StrEnum):
    """What a step still inconclusive at its deadline does."""

    PROCEED = "proceed"
    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """A progressive canary; the evidence for each gate covers only its own step's traffic."""

    steps_percent: tuple[float, ...] = (5.0, 10.0, 25.0, 50.0, 100.0)
    # A step cannot pass before this long at its traffic share (it can fail sooner).
    bake_ms: int = 60_000
    # Canary requests a step needs before its gate can pass.
    min_sample_per_step: int = 500
    # Labelled canary (and production) rows before accuracy is compared.
    min_labelled_per_step: int = 200
    # How long a step may stay inconclusive, from its start, before `on_deadline` applies.
    deadline_ms: int = 1_800_000
    on_fail: FailAction = FailAction.ROLLBACK
    on_deadline: DeadlineAction = DeadlineAction.PAUSE
    # Two-sided confidence of the canary-vs-production intervals.
    confidence: float = 0.95
    # The canary fails only if it is worse than production by more than these, with confidence.
    error_rate_tolerance: float = 0.005
    accuracy_tolerance: float = 0.01
    # ... and when its typical (geometric-mean) latency exceeds production's by this factor.
    latency_ratio_tolerance: float | None = 1.5
    # When True a step waits for `min_labelled_per_step` labels instead of passing without them.
    require_labels: bool = False
    # With require_labels: a step short of labels may pass on the label-free estimate (CBPE,
    # from calibrated scores), marked provisional; the promotion is re-judged once labels land.
    provisional: bool = False
    # Hard limits (latency, absolute error rate) checked at every gate; None: intervals only.
    guard: GuardPolicy | None = field(default_factory=GuardPolicy)
    # Moves that wait for `safeloop rollout approve` after their gate passed.
    approval: Approval = Approval.NONE
    # Judge and record what each gate would do, without doing it (the first step is still set).
    dry_run: bool = False
    # Segments (a model's segment_keys) are compared one by one once each side has this many
    # requests (labels, for accuracy) in the segment; the family-wise false-alarm rate over
    # the segments is held at 1 - confidence by this correction.
    min_sample_per_segment: int = 200
    segment_correction: Correction = Correction.HOLM

    def needs_approval(self, step_index: int) -> bool:
        """Whether leaving step `step_index` (to the next step, or to promotion) waits for one."""
        if self.approval is Approval.EVERY_STEP:
            return True
        last = step_index == len(self.steps_percent) - 1
        return self.approval is Approval.PROMOTION and last

    def __post_init__(self) -> None:
        steps = self.steps_percent
        if not steps or any(b <= a for a, b in pairwise(steps)):
            raise PlanError(f"steps_percent must be strictly increasing, got {steps}")
        if steps[0] <= 0 or steps[-1] != 100.0:
            raise PlanError(f"steps_percent must start above 0 and end at 100, got {steps}")
        if self.latency_ratio_tolerance is not None and self.latency_ratio_tolerance < 1.0:
            raise PlanError("latency_ratio_tolerance must be at least 1 (or None: not compared)")
        if self.bake_ms < 0 or self.deadline_ms < self.bake_ms:
            raise PlanError("need 0 <= bake_ms <= deadline_ms")
        if (
            self.min_sample_per_step < 1
            or self.min_labelled_per_step < 1
            or self.min_sample_per_segment < 1
        ):
            raise PlanError("minimum samples must be at least 1")
        if not 0.0 < self.confidence < 1.0:
            raise PlanError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.error_rate_tolerance < 0 or self.accuracy_tolerance < 0:
            raise PlanError("tolerances cannot be negative")
