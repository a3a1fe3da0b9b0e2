"""The gate per segment: canary versus production inside each segment (country=BR, tenant=acme),
so a canary that is worse for one segment fails even when the whole population looks fine.

Each segment with at least `min_sample_per_segment` requests (labels, for accuracy) on both
sides is compared like the whole step is (services/rollout/gate.py): error rate, typical
latency and accuracy, each as an anytime-valid p-value from the same confidence sequences, so
looking every few seconds does not inflate false alarms. Across the segments of one comparison
Holm's correction (or Bonferroni's, by plan) holds the chance that any healthy segment fails at
1 - confidence (services/metrics/multiple_comparisons.py). The family is every segment seen in
the step so far, including those still short of the minimum sample (counted as p = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from safeloop.services.metrics._arrays import FloatArray, IntArray
from safeloop.services.metrics.multiple_comparisons import judge_family
from safeloop.services.metrics.segments import DenseCounts
from safeloop.services.rollout.plan import RolloutPlan
from safeloop.services.rollout.sequential import ConfidenceSequence

# Log-latencies vary by about one unit (as in gate.py's overall latency comparison).
_LOG_LATENCY_VARIANCE = 1.0


@dataclass(frozen=True, slots=True)
class SegmentSide:
    """One arm's figures per segment, aligned with `SegmentEvidence.labels`."""

    # Requests, server errors, and the count/mean/variance of log latency.
    health: DenseCounts
    # Feedback rows, right answers, and labelled rows (value_count of a 0/1 "correct" value).
    answers: DenseCounts | None = None


@dataclass(frozen=True, slots=True)
class SegmentEvidence:
    """Canary and production per segment; `labels[i]` names segment i (`key=value`)."""

    labels: tuple[str, ...]
    canary: SegmentSide
    production: SegmentSide


@dataclass(frozen=True, slots=True)
class _Family:
    """One comparison over segments: which were eligible, their p-values, what to say."""

    what: str
    eligible: np.ndarray
    p_values: FloatArray
    # What segment i's comparison found, in words (built only for the segments that fail).
    describe: Callable[[int], str]


def judge_segments(
    plan: RolloutPlan, evidence: SegmentEvidence, numbers: dict[str, str]
) -> list[str]:
    """Failures naming each segment where the canary is worse (corrected over segments)."""
    if not evidence.labels:
        return []
    alpha = 1.0 - plan.confidence
    minimum = plan.min_sample_per_segment
    canary, production = evidence.canary, evidence.production
    families = [_errors(plan, canary, production, alpha, minimum)]
    if plan.latency_ratio_tolerance is not None:
        families.append(_latency(plan, canary, production, alpha, minimum))
    if canary.answers is not None and production.answers is not None:
        families.append(_accuracy(plan, canary.answers, production.answers, alpha, minimum))
    failures: list[str] = []
    compared = 0
    failed: list[str] = []
    for family in families:
        eligible = int(np.count_nonzero(family.eligible))
        compared = max(compared, eligible)
        if eligible == 0:
            continue
        # Every segment seen this step counts in the family, eligible yet or not.
        m = len(evidence.labels)
        outcome = judge_family(family.p_values, family.eligible, alpha, plan.segment_correction)
        adjusted = outcome.adjusted
        for i in np.flatnonzero(outcome.rejected):
            label = evidence.labels[i]
            failed.append(label)
            numbers[f"{family.what}_adjusted_p[{label}]"] = repr(float(adjusted[i]))
            failures.append(
                f"segment {label}: {family.describe(int(i))} "
                f"({plan.segment_correction.value}-adjusted p {adjusted[i]:.3g} over {m} segments)"
            )
    numbers["segments_compared"] = str(compared)
    numbers["segment_correction"] = plan.segment_correction.value
    if failed:
        numbers["failed_segments"] = ",".join(dict.fromkeys(failed))
    return failures


def _errors(
    plan: RolloutPlan, canary: SegmentSide, production: SegmentSide, alpha: float, minimum: int
) -> _Family:
    c, p = canary.health, production.health
    eligible = (c.rows >= minimum) & (p.rows >= minimum)
    sequence = ConfidenceSequence.for_plan(alpha, minimum)
    p_values = sequence.proportion_p_values(
        c.flagged, c.rows, p.flagged, p.rows, plan.error_rate_tolerance
    )
    canary_rate, production_rate = _rates(c.flagged, c.rows), _rates(p.flagged, p.rows)

    def describe(i: int) -> str:
        return (
            f"canary error rate {canary_rate[i]:.4g} vs production {production_rate[i]:.4g} "
            f"(tolerance {plan.error_rate_tolerance:.4g})"
        )

    return _Family("error_rate", eligible, p_values, describe)


def _latency(
    plan: RolloutPlan, canary: SegmentSide, production: SegmentSide, alpha: float, minimum: int
) -> _Family:
    c, p = canary.health, production.health
    ratio = plan.latency_ratio_tolerance
    assert ratio is not None
    eligible = (c.value_count >= minimum) & (p.value_count >= minimum)
    sequence = ConfidenceSequence.for_plan(alpha, minimum, reference_variance=_LOG_LATENCY_VARIANCE)
    p_values = sequence.mean_p_values(
        (c.value_count, c.value_mean, c.value_variance),
        (p.value_count, p.value_mean, p.value_variance),
        math.log(ratio),
    )

    def describe(i: int) -> str:
        typical = math.exp(c.value_mean[i] - p.value_mean[i])
        return f"canary typically {typical:.3g} times slower than production (tolerance {ratio:g}x)"

    return _Family("latency_ratio", eligible, p_values, describe)


def _accuracy(
    plan: RolloutPlan, canary: DenseCounts, production: DenseCounts, alpha: float, minimum: int
) -> _Family:
    # value_count: labelled rows; flagged: right answers among them.
    eligible = (canary.value_count >= minimum) & (production.value_count >= minimum)
    sequence = ConfidenceSequence.for_plan(alpha, minimum)
    p_values = sequence.proportion_p_values(
        production.flagged,
        production.value_count,
        canary.flagged,
        canary.value_count,
        plan.accuracy_tolerance,
    )
    canary_accuracy = _rates(canary.flagged, canary.value_count)
    production_accuracy = _rates(production.flagged, production.value_count)

    def describe(i: int) -> str:
        return (
            f"canary accuracy {canary_accuracy[i]:.4g} vs production "
            f"{production_accuracy[i]:.4g} (tolerance {plan.accuracy_tolerance:.4g})"
        )

    return _Family("accuracy", eligible, p_values, describe)


def _rates(flagged: IntArray, rows: IntArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rows > 0, flagged / np.maximum(rows, 1), np.nan)
