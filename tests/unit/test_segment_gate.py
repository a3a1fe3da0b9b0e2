"""The gate per segment: anytime-valid p-values agree with the confidence sequences, Holm keeps
the family-wise false-alarm rate over segments (simulated at every look), and a canary worse
for one segment only fails with that segment named, from real events through StepEvidence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, PredictionEvent, Route
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.multiple_comparisons import Correction, rejections
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.segments import dense_counts
from safeloop.services.rollout.evidence import StepEvidence
from safeloop.services.rollout.gate import GateOutcome, judge_gate
from safeloop.services.rollout.intervals import difference_interval
from safeloop.services.rollout.machine import start
from safeloop.services.rollout.persist import plan_from_json, plan_to_json
from safeloop.services.rollout.plan import RolloutPlan
from safeloop.services.rollout.segment_gate import SegmentEvidence, SegmentSide, judge_segments
from safeloop.services.rollout.sequential import ConfidenceSequence

ALPHA = 0.05
PLAN = RolloutPlan(
    min_sample_per_step=500,
    min_sample_per_segment=200,
    bake_ms=0,
    error_rate_tolerance=0.005,
    latency_ratio_tolerance=None,
    guard=GuardPolicy(max_error_rate=0.2, min_requests=50),
)


def test_p_values_fall_to_alpha_exactly_where_the_sequence_clears_the_tolerance() -> None:
    rng = np.random.default_rng(1)
    n_a = rng.integers(1, 5_000, 2_000).astype(np.float64)
    n_b = rng.integers(1, 5_000, 2_000).astype(np.float64)
    x_a = np.floor(n_a * rng.random(2_000) * 0.2)
    x_b = np.floor(n_b * rng.random(2_000) * 0.2)
    sequence = ConfidenceSequence.for_plan(ALPHA, 300)
    for tolerance in (0.0, 0.01):
        lows, _ = sequence.proportion_differences(x_a, n_a, x_b, n_b)
        p = sequence.proportion_p_values(x_a, n_a, x_b, n_b, tolerance)
        assert ((p <= ALPHA) == (lows > tolerance)).mean() > 0.999  # equal up to rounding
        assert ((p >= 0.0) & (p <= 1.0)).all()
    assert sequence.proportion_p_values([0], [0], [0], [10], 0.0).tolist() == [1.0]


def _family_alarm_rates(regressed_rate: float, seed: int) -> tuple[float, float]:
    """Share of runs with any segment failing, looking every 50 events: the sequences with Holm's
    correction, and fixed intervals per segment without one."""
    rng = np.random.default_rng(seed)
    runs, segments, per_arm, every = 150, 20, 1_500, 50
    base = 0.03
    rates = np.full(segments, base)
    rates[0] = regressed_rate
    canary = np.cumsum(rng.random((runs, per_arm, segments)) < rates, axis=1)[:, every - 1 :: every]
    production = np.cumsum(rng.random((runs, per_arm, segments)) < base, axis=1)[
        :, every - 1 :: every
    ]
    trials = np.arange(every, per_arm + 1, every, dtype=np.float64)[None, :, None]
    trials = np.broadcast_to(trials, canary.shape)
    sequence = ConfidenceSequence.for_plan(ALPHA, 200)
    p = sequence.proportion_p_values(canary, trials, production, trials, 0.0)
    p = np.where(trials >= 200, p, 1.0)
    holm = fixed = 0
    for run in range(runs):
        holm += any(rejections(look, ALPHA, Correction.HOLM).any() for look in p[run])
        # What the gate did before: a fixed 95 % interval per segment, uncorrected.
        fixed += any(
            difference_interval(
                int(canary[run, look, s]), int(n), int(production[run, look, s]), int(n)
            )[0]
            > 0.0
            for look, n in enumerate(trials[0, :, 0])
            if n >= 200
            for s in range(segments)
        )
    return holm / runs, fixed / runs


def test_holm_over_segments_keeps_false_alarms_under_alpha_at_every_look() -> None:
    holm, fixed = _family_alarm_rates(0.03, seed=2)
    assert holm <= ALPHA
    # Fixed intervals on 20 healthy segments, looked at 26 times each, alarm most of the time.
    assert fixed > 0.5


def test_holm_over_segments_still_finds_one_regressed_segment() -> None:
    holm, _ = _family_alarm_rates(0.12, seed=3)
    assert holm >= 0.9


def _side(codes: list[int], errors: list[bool], size: int) -> SegmentSide:
    array = np.array(codes, dtype=np.int64)
    return SegmentSide(
        dense_counts(array, np.array(errors), np.zeros(len(codes)), size),
    )


def test_segments_short_of_the_minimum_count_in_the_family_but_are_not_judged() -> None:
    # Segment 0 is bad but thin; segment 1 is bad and large enough.
    errors = [True] * 25 + [False] * 25 + [True] * 100 + [False] * 300
    canary = _side([0] * 50 + [1] * 400, errors, 3)
    production = _side([0] * 50 + [1] * 400 + [2] * 10, [False] * 460, 3)
    numbers: dict[str, str] = {}
    labels = ("country=AR", "country=BR", "country=CL")
    failures = judge_segments(PLAN, SegmentEvidence(labels, canary, production), numbers)
    assert len(failures) == 1 and failures[0].startswith("segment country=BR: canary error rate")
    assert "over 3 segments" in failures[0]
    assert numbers["failed_segments"] == "country=BR"
    assert numbers["segments_compared"] == "1"
    assert numbers["segment_correction"] == "holm"


T0 = 1_700_000_000_000
COUNTRIES = ("US", "DE", "FR", "IN", "BR")


def _prediction(i: int, route: Route, version: str, country: str, error: bool) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=f"{route.value}-{i}",
        model_name="fraud",
        model_version=version,
        timestamp=T0 + i,
        features={"x": 1.0},
        prediction=None if error else 0.7,
        confidence=None if error else 0.7,
        latency_ms=5.0,
        route=route,
        replica_id="r",
        routing_key=str(i),
        routing_hash_version=1,
        error="boom" if error else None,
        segments={"country": country},
    )


def _traffic(
    rng: np.random.Generator, route: Route, version: str, n: int, br_error_rate: float
) -> list[PredictionEvent]:
    # Brazil is 6 % of traffic: a regression there barely moves the overall error rate.
    countries = rng.choice(COUNTRIES, size=n, p=[0.4, 0.2, 0.2, 0.14, 0.06])
    draws = rng.random(n)
    return [
        _prediction(i, route, version, str(c), bool(d < (br_error_rate if c == "BR" else 0.01)))
        for i, (c, d) in enumerate(zip(countries, draws, strict=True))
    ]


def _evidence(br_canary_error_rate: float, seed: int = 4) -> StepEvidence:
    rng = np.random.default_rng(seed)
    state = start(PLAN, "fraud", "v1", "v2", now_ms=T0).state
    evidence = StepEvidence(state, Task.CLASSIFICATION)
    evidence.add_predictions(_traffic(rng, Route.CANARY, "v2", 6_000, br_canary_error_rate))
    evidence.add_predictions(_traffic(rng, Route.PRODUCTION, "v1", 6_000, 0.01))
    return evidence


def test_a_canary_worse_only_in_one_segment_fails_and_the_verdict_names_it() -> None:
    evidence = _evidence(br_canary_error_rate=0.12).evidence()
    # The whole population alone does not show it...
    overall = judge_gate(PLAN, replace(evidence, segments=None), baked=True)
    assert overall.outcome is GateOutcome.PASS, overall.reason
    # ...Brazil does.
    result = judge_gate(PLAN, evidence, baked=True)
    assert result.outcome is GateOutcome.FAIL
    assert result.reason.startswith("segment country=BR: canary error rate")
    assert result.numbers["failed_segments"] == "country=BR"
    assert result.numbers["segments_compared"] == "5"


def test_a_healthy_segmented_canary_passes() -> None:
    result = judge_gate(PLAN, _evidence(br_canary_error_rate=0.01).evidence(), baked=True)
    assert result.outcome is GateOutcome.PASS, result.reason


def test_segment_accuracy_is_compared_from_feedback() -> None:
    rng = np.random.default_rng(9)
    state = start(PLAN, "fraud", "v1", "v2", now_ms=T0).state
    evidence = StepEvidence(state, Task.CLASSIFICATION)
    records = []
    for route, version in ((Route.CANARY, "v2"), (Route.PRODUCTION, "v1")):
        for i in range(4_000):
            country = str(rng.choice(COUNTRIES))
            # The canary is right 90 % of the time, except in Germany: 60 %.
            good = 0.6 if route is Route.CANARY and country == "DE" else 0.9
            truth = 1.0 if rng.random() < good else 0.0
            records.append(
                FeedbackRecord(
                    prediction_id=f"{route.value}-{i}",
                    model_name="fraud",
                    model_version=version,
                    route=route,
                    replica_id="r",
                    features={},
                    prediction=0.9,
                    confidence=0.9,
                    prediction_timestamp=T0 + i,
                    status=FeedbackStatus.JOINED,
                    ground_truth=truth,
                    outcome_timestamp=T0 + i + 1,
                    label_delay_ms=1,
                    outcome_source="it",
                    emitted_at=T0 + i + 2,
                    segments={"country": country},
                )
            )
    evidence.add_feedback(records)
    gate = evidence.evidence()
    assert gate.segments is not None
    numbers: dict[str, str] = {}
    failures = judge_segments(PLAN, gate.segments, numbers)
    assert [f.split(":")[0] for f in failures] == ["segment country=DE"]
    assert "canary accuracy" in failures[0]


def test_plans_keep_their_segment_settings_and_old_plans_read_with_defaults() -> None:
    plan = replace(PLAN, min_sample_per_segment=50, segment_correction=Correction.BONFERRONI)
    assert plan_from_json(plan_to_json(plan)) == plan
    import json

    old = json.loads(plan_to_json(PLAN))
    del old["min_sample_per_segment"], old["segment_correction"]
    restored = plan_from_json(json.dumps(old))
    assert restored.min_sample_per_segment == 200
    assert restored.segment_correction is Correction.HOLM


@pytest.mark.parametrize("minimum", [0, -1])
def test_the_minimum_segment_sample_must_be_positive(minimum: int) -> None:
    from safeloop.services.rollout.exceptions import PlanError

    with pytest.raises(PlanError):
        RolloutPlan(min_sample_per_segment=minimum)
