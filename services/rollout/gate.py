"""One step's gate: canary versus production with confidence sequences, plus hard guard limits,
over the whole population and per segment (segment_gate.py).

The canary fails a comparison only when the whole confidence sequence for (canary - production)
lies beyond the tolerance, i.e. it is worse with the plan's confidence, not merely on point
values. A confidence sequence stays valid however often the gate re-evaluates the same step's
growing evidence, so checking every few seconds does not inflate false alarms
(services/rollout/sequential.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist

from safeloop.services.guard.judge import judge
from safeloop.services.guard.verdict import VerdictKind
from safeloop.services.metrics.estimation import PerformanceEstimate
from safeloop.services.metrics.health import HealthSnapshot
from safeloop.services.metrics.performance import PerformanceSnapshot
from safeloop.services.rollout.plan import RolloutPlan
from safeloop.services.rollout.segment_gate import SegmentEvidence, judge_segments
from safeloop.services.rollout.sequential import ConfidenceSequence, MeanSummary

# In a gate's numbers (and so the command's details): the step passed on an estimate.
PROVISIONAL = "provisional"


class GateOutcome(StrEnum):
    """PASS: go on. FAIL: canary worse. INCONCLUSIVE: not enough evidence (yet)."""

    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class GateEvidence:
    """Canary and production figures over the current step's time range only."""

    canary: HealthSnapshot
    production: HealthSnapshot
    canary_performance: PerformanceSnapshot | None = None
    production_performance: PerformanceSnapshot | None = None
    # Label-free estimates from the step's calibrated scores (classification only).
    canary_estimate: PerformanceEstimate | None = None
    production_estimate: PerformanceEstimate | None = None
    # Natural logs of each side's latencies this step (for the latency comparison).
    canary_log_latency: MeanSummary | None = None
    production_log_latency: MeanSummary | None = None
    # Both sides per segment (models with segment_keys); None: the whole population only.
    segments: SegmentEvidence | None = None


@dataclass(frozen=True, slots=True)
class GateResult:
    """A gate's outcome, why, and the figures behind it (strings, for command details)."""

    outcome: GateOutcome
    reason: str
    numbers: dict[str, str] = field(default_factory=dict)


def judge_gate(plan: RolloutPlan, evidence: GateEvidence, baked: bool) -> GateResult:
    """FAIL as soon as the evidence shows it; PASS only once baked with enough traffic."""
    canary, production = evidence.canary, evidence.production
    numbers = {
        "canary_requests": str(canary.request_count),
        "production_requests": str(production.request_count),
    }
    failures: list[str] = []
    if plan.guard is not None:
        verdict = judge(
            canary,
            production,
            plan.guard,
            evidence.canary_performance,
            evidence.production_performance,
        )
        if verdict.kind is VerdictKind.BREACH:
            numbers.update(verdict.numbers())
            failures.append(verdict.reason)
    enough_traffic = canary.request_count >= plan.min_sample_per_step
    compared = enough_traffic and production.request_count >= plan.min_sample_per_step
    if compared:
        failures.extend(_compare_errors(plan, canary, production, numbers))
        failures.extend(_compare_latency(plan, evidence, numbers))
    labels_compared = _compare_accuracy(plan, evidence, numbers, failures)
    if evidence.segments is not None:
        failures.extend(judge_segments(plan, evidence.segments, numbers))
    if failures:
        return GateResult(GateOutcome.FAIL, "; ".join(failures), numbers)
    if not baked:
        return GateResult(GateOutcome.INCONCLUSIVE, "bake time not yet elapsed", numbers)
    if not enough_traffic:
        return GateResult(
            GateOutcome.INCONCLUSIVE,
            f"{canary.request_count} of {plan.min_sample_per_step} canary requests",
            numbers,
        )
    if plan.require_labels and not labels_compared:
        if plan.provisional and _estimates_compared(plan, evidence, numbers, failures):
            if failures:
                return GateResult(GateOutcome.FAIL, "; ".join(failures), numbers)
            numbers[PROVISIONAL] = "true"
            return GateResult(
                GateOutcome.PASS,
                "provisional: canary's estimated accuracy not worse than production's "
                "(labels pending; re-judged when they land)",
                numbers,
            )
        return GateResult(GateOutcome.INCONCLUSIVE, "waiting for labels", numbers)
    checked = "error rate" if compared else "hard limits only (production sample too small)"
    if labels_compared:
        checked += " and accuracy"
    return GateResult(GateOutcome.PASS, f"canary not worse than production: {checked}", numbers)


def _estimates_compared(
    plan: RolloutPlan, evidence: GateEvidence, numbers: dict[str, str], failures: list[str]
) -> bool:
    """Compare expected accuracies (CBPE); append a failure if the canary's is lower."""
    canary, production = evidence.canary_estimate, evidence.production_estimate
    if canary is None or canary.count < plan.min_sample_per_step:
        return False
    if canary.expected_accuracy is None:
        return False
    numbers["canary_estimated_accuracy"] = repr(canary.expected_accuracy)
    if production is None or production.expected_accuracy is None:
        # The whole share is the canary's (the last step): nothing to compare it with; its
        # own sample is enough for a provisional pass, which the labels will re-judge.
        return True
    drop = production.expected_accuracy - canary.expected_accuracy
    spread = math.hypot(canary.accuracy_std or 0.0, production.accuracy_std or 0.0)
    low = drop - NormalDist().inv_cdf(plan.confidence) * spread
    numbers["estimated_accuracy_drop"] = repr(drop)
    numbers["estimated_accuracy_drop_low"] = repr(low)
    numbers["production_estimated_accuracy"] = repr(production.expected_accuracy)
    if low > plan.accuracy_tolerance:
        failures.append(
            f"canary's estimated accuracy lower than production's by at least {low:.4g} "
            f"(tolerance {plan.accuracy_tolerance:.4g})"
        )
    return True


def _compare_latency(
    plan: RolloutPlan, evidence: GateEvidence, numbers: dict[str, str]
) -> list[str]:
    canary, production = evidence.canary_log_latency, evidence.production_log_latency
    if plan.latency_ratio_tolerance is None or canary is None or production is None:
        return []
    # Log-latencies vary by about one unit: the reference that places the sequence's tightest
    # point at the step's sample, fixed before any data.
    sequence = ConfidenceSequence.for_plan(
        1.0 - plan.confidence, plan.min_sample_per_step, reference_variance=1.0
    )
    low, high = sequence.mean_difference(canary, production)
    numbers["latency_ratio_low"] = repr(math.exp(low))
    numbers["latency_ratio_high"] = repr(math.exp(high))
    if low > math.log(plan.latency_ratio_tolerance):
        return [
            f"canary typically {math.exp(low):.3g} to {math.exp(high):.3g} times slower than "
            f"production (tolerance {plan.latency_ratio_tolerance:g}x)"
        ]
    return []


def _compare_errors(
    plan: RolloutPlan, canary: HealthSnapshot, production: HealthSnapshot, numbers: dict[str, str]
) -> list[str]:
    sequence = ConfidenceSequence.for_plan(1.0 - plan.confidence, plan.min_sample_per_step)
    low, high = sequence.proportion_difference(
        canary.error_count, canary.request_count, production.error_count, production.request_count
    )
    numbers["error_rate_difference_low"] = repr(low)
    numbers["error_rate_difference_high"] = repr(high)
    numbers["canary_error_rate"] = repr(canary.error_rate)
    numbers["production_error_rate"] = repr(production.error_rate)
    if low > plan.error_rate_tolerance:
        return [
            f"canary error rate higher than production by {low:.4g} to {high:.4g} "
            f"(tolerance {plan.error_rate_tolerance:.4g})"
        ]
    return []


def _compare_accuracy(
    plan: RolloutPlan, evidence: GateEvidence, numbers: dict[str, str], failures: list[str]
) -> bool:
    """Append a failure if the canary's accuracy is lower; say whether labels allowed a look."""
    canary = evidence.canary_performance
    production = evidence.production_performance
    if canary is None or production is None:
        return False
    # Binary and multi-class figures alike: correct answers out of labelled ones.
    canary_metrics = canary.classification or canary.multiclass
    production_metrics = production.classification or production.multiclass
    if canary_metrics is None or production_metrics is None:
        return False
    if min(canary_metrics.count, production_metrics.count) < plan.min_labelled_per_step:
        return False
    sequence = ConfidenceSequence.for_plan(1.0 - plan.confidence, plan.min_labelled_per_step)
    low, high = sequence.proportion_difference(
        production_metrics.correct_count,
        production_metrics.count,
        canary_metrics.correct_count,
        canary_metrics.count,
    )
    numbers["accuracy_drop_low"] = repr(low)
    numbers["accuracy_drop_high"] = repr(high)
    numbers["canary_accuracy"] = repr(canary_metrics.accuracy)
    numbers["production_accuracy"] = repr(production_metrics.accuracy)
    if low > plan.accuracy_tolerance:
        failures.append(
            f"canary accuracy lower than production by {low:.4g} to {high:.4g} "
            f"(tolerance {plan.accuracy_tolerance:.4g})"
        )
    return True
