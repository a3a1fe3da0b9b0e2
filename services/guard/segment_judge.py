"""The guard's rules inside each segment (country=DE, tenant=acme) of a canary whose whole
population is within every threshold.

A segment is judged once its canary side has `min_sample` requests (and production's too, for
the rules relative to production). Each rule becomes a one-sided anytime-valid test (the rollout
gates' confidence sequences, services/metrics/sequential.py, since the guard looks after every
batch) of "this segment is within the limit":

- error rate: the segment's server-error rate is at most `max_error_rate`;
- client errors: its 4xx rate exceeds production's (same segment) by at most the margin;
- p99 latency: at most 1 % of its requests are slower than `max_p99_latency_ms`;
- p99 ratio: at most 1 % are slower than `max_p99_latency_ratio` times production's p99 in
  the segment (production's p99 plugged in);
- performance (when labels per segment are given and the model is judged on accuracy): the
  canary's accuracy in the segment is at most `max_performance_drop` (relative) below
  production's there (production's accuracy plugged into the margin).

Holm's (or Bonferroni's) correction over every segment seen holds the chance that any segment
within its limits is called in breach at `segment_alpha` (services/metrics/multiple_comparisons.py).
A segment breaches a rule when its test rejects and its observed figure exceeds the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.verdict import Breach, GuardRule, SegmentBreach
from safeloop.services.metrics._arrays import BoolArray, FloatArray
from safeloop.services.metrics.health_summary import (
    HealthSummary,
    histogram_quantiles,
    slower_counts,
)
from safeloop.services.metrics.multiple_comparisons import judge_family
from safeloop.services.metrics.sequential import ConfidenceSequence

# p99 above a limit <=> more than 1 % of requests above it.
_TAIL = 0.01
_P99 = 0.99
_ROUNDING = 1e-9


# `key=value` -> (labelled rows, right answers) of one side.
Answers: TypeAlias = Mapping[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class SegmentJudgement:
    """What the segments showed: breaches (worst first), segments judged and seen."""

    breaches: tuple[SegmentBreach, ...]
    judged: int
    seen: int


@dataclass(frozen=True, slots=True)
class _Rule:
    """One rule over the segments: its p-values, observed figures and limit."""

    rule: GuardRule
    eligible: BoolArray
    p_values: FloatArray
    observed: FloatArray
    limit: float


def judge_segments(
    canary: Mapping[str, HealthSummary],
    production: Mapping[str, HealthSummary],
    policy: GuardPolicy,
    min_sample: int,
    answers: tuple[Answers, Answers] | None = None,
) -> SegmentJudgement:
    """The canary's breaches per segment against the policy, corrected over the segments;
    `answers` (canary's, production's) adds the accuracy rule."""
    seen = len(canary)
    # Only segments with the minimum sample are tested; the others count in the family (as
    # p = 1) without being summarised further, which keeps 1,000 thin segments cheap.
    labels = sorted(
        label for label, summary in canary.items() if summary.request_count >= min_sample
    )
    if not labels:
        return SegmentJudgement((), 0, seen)
    empty = HealthSummary.empty()
    sides = _Sides(
        [canary[label] for label in labels],
        [production.get(label, empty) for label in labels],
        min_sample,
    )
    sequence = ConfidenceSequence.for_plan(policy.segment_alpha, min_sample)
    rules = [rule for rule in _rules(sides, policy, sequence) if rule is not None]
    if answers is not None and policy.max_performance_drop is not None:
        rules.append(_accuracy(labels, answers, sequence, policy.max_performance_drop, min_sample))
    breaches: list[SegmentBreach] = []
    thin = seen - len(labels)
    for rule in rules:
        p_values = np.concatenate([rule.p_values, np.ones(thin)])
        eligible = np.concatenate([rule.eligible, np.zeros(thin, dtype=np.bool_)])
        outcome = judge_family(p_values, eligible, policy.segment_alpha, policy.segment_correction)
        for i in np.flatnonzero(outcome.rejected).tolist():
            observed = float(rule.observed[i])
            if observed > rule.limit + _ROUNDING * abs(rule.limit):
                breach = Breach(rule.rule, observed, rule.limit)
                breaches.append(SegmentBreach(labels[i], breach, float(outcome.adjusted[i])))
    breaches.sort(key=lambda found: found.adjusted_p)
    return SegmentJudgement(tuple(breaches), len(labels), seen)


class _Sides:
    """Canary and production figures per segment, as arrays aligned with the labels."""

    def __init__(
        self, canary: list[HealthSummary], production: list[HealthSummary], min_sample: int
    ) -> None:
        self.requests = _array([s.request_count for s in canary])
        self.errors = _array([s.error_count for s in canary])
        self.client_errors = _array([s.client_error_count for s in canary])
        self.production_requests = _array([s.request_count for s in production])
        self.production_client_errors = _array([s.client_error_count for s in production])
        self.canary_ready = self.requests >= min_sample
        self.both_ready = self.canary_ready & (self.production_requests >= min_sample)
        # (segments, bins): every segment's quantile and tail count in one reduction each.
        self.histograms = np.stack([s.latency for s in canary])
        self.timed = self.histograms.sum(axis=1).astype(np.float64)
        self.p99 = histogram_quantiles(self.histograms, _P99)
        self.production_p99 = histogram_quantiles(np.stack([s.latency for s in production]), _P99)

    def slower_than(self, limits: FloatArray) -> FloatArray:
        """Canary requests slower than each segment's limit (NaN limit: none)."""
        return slower_counts(self.histograms, limits).astype(np.float64)


def _rules(sides: _Sides, policy: GuardPolicy, sequence: ConfidenceSequence) -> list[_Rule | None]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [
            _optional(policy.max_error_rate, lambda limit: _error_rate(sides, sequence, limit)),
            _optional(
                policy.max_client_error_excess,
                lambda limit: _client_errors(sides, sequence, limit),
            ),
            _optional(policy.max_p99_latency_ms, lambda limit: _p99_ms(sides, sequence, limit)),
            _optional(
                policy.max_p99_latency_ratio, lambda limit: _p99_ratio(sides, sequence, limit)
            ),
        ]


def _optional(limit: float | None, build: Callable[[float], _Rule]) -> _Rule | None:
    return None if limit is None else build(limit)


def _error_rate(sides: _Sides, sequence: ConfidenceSequence, limit: float) -> _Rule:
    p_values = sequence.proportion_excess_p_values(sides.errors, sides.requests, limit)
    observed = sides.errors / np.maximum(sides.requests, 1)
    return _Rule(GuardRule.ERROR_RATE, sides.canary_ready, p_values, observed, limit)


def _client_errors(sides: _Sides, sequence: ConfidenceSequence, limit: float) -> _Rule:
    p_values = sequence.proportion_p_values(
        sides.client_errors,
        sides.requests,
        sides.production_client_errors,
        sides.production_requests,
        limit,
    )
    observed = sides.client_errors / np.maximum(sides.requests, 1) - (
        sides.production_client_errors / np.maximum(sides.production_requests, 1)
    )
    return _Rule(GuardRule.CLIENT_ERROR_EXCESS, sides.both_ready, p_values, observed, limit)


def _p99_ms(sides: _Sides, sequence: ConfidenceSequence, limit: float) -> _Rule:
    slower = sides.slower_than(np.full(sides.timed.shape[0], limit))
    p_values = sequence.proportion_excess_p_values(slower, sides.timed, _TAIL)
    eligible = sides.canary_ready & ~np.isnan(sides.p99)
    return _Rule(GuardRule.P99_LATENCY_MS, eligible, p_values, sides.p99, limit)


def _p99_ratio(sides: _Sides, sequence: ConfidenceSequence, limit: float) -> _Rule:
    usable = sides.production_p99 > 0.0
    thresholds = np.where(usable, limit * sides.production_p99, np.nan)
    slower = sides.slower_than(thresholds)
    p_values = sequence.proportion_excess_p_values(slower, sides.timed, _TAIL)
    eligible = sides.both_ready & usable & ~np.isnan(sides.p99)
    observed = np.where(usable, sides.p99 / sides.production_p99, np.nan)
    return _Rule(GuardRule.P99_LATENCY_RATIO, eligible, p_values, observed, limit)


def _accuracy(
    labels: list[str],
    answers: tuple[Answers, Answers],
    sequence: ConfidenceSequence,
    limit: float,
    min_sample: int,
) -> _Rule:
    canary, production = answers
    c_n, c_right = (_array([canary.get(label, (0, 0))[i] for label in labels]) for i in (0, 1))
    p_n, p_right = (_array([production.get(label, (0, 0))[i] for label in labels]) for i in (0, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        c_accuracy, p_accuracy = c_right / c_n, p_right / p_n
        observed = np.where(p_accuracy > 0, (p_accuracy - c_accuracy) / p_accuracy, np.nan)
    eligible = (c_n >= min_sample) & (p_n >= min_sample) & (p_accuracy > 0)
    # Production's accuracy minus the canary's at most limit * production's, one at a time:
    # the margin differs per segment, so each gets its own p-value call.
    p_values = np.ones(len(labels))
    for i in np.flatnonzero(eligible).tolist():
        p_values[i] = sequence.proportion_p_values(
            [p_right[i]], [p_n[i]], [c_right[i]], [c_n[i]], limit * float(p_accuracy[i])
        )[0]
    return _Rule(GuardRule.PERFORMANCE_DROP, eligible, p_values, observed, limit)


def _array(values: list[int] | list[float]) -> FloatArray:
    return np.asarray(values, dtype=np.float64)
