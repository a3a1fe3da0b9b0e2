"""The central guard per segment: per-segment summaries (mergeable, exchange-ready), the rules as
anytime-valid tests corrected over the segments, and a canary worse in one segment only rolled
back with the segment named. References are computed independently in the tests."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from _fake_issuer import FakeIssuer

from safeloop.schemas.events import (
    CommandKind,
    ErrorKind,
    FeedbackRecord,
    FeedbackStatus,
    PredictionEvent,
    Route,
)
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.runner import CentralGuard
from safeloop.services.guard.segment_judge import judge_segments
from safeloop.services.guard.segment_windows import SegmentWindows
from safeloop.services.guard.verdict import GuardRule, VerdictKind
from safeloop.services.metrics.health_summary import (
    HealthSummary,
    histogram_quantiles,
    segment_summaries,
    slower_counts,
)
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.multiple_comparisons import Correction
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.performance_tracker import PerformanceTracker
from safeloop.services.metrics.segment_tracker import SegmentTracker
from safeloop.services.metrics.segments import SegmentCodes
from safeloop.services.metrics.sequential import ConfidenceSequence

ALPHA = 0.05
MODEL_NAME = "churn"
COUNTRIES = ("BR", "DE", "FR", "US")
# Only the error-rate rule, so each test reads one family.
ERRORS_ONLY = GuardPolicy(
    max_client_error_excess=None,
    max_p99_latency_ms=None,
    max_p99_latency_ratio=None,
    max_performance_drop=None,
)


def _traffic(
    version: str, route: Route, per_country: int, failing: dict[str, float], seed: int
) -> list[PredictionEvent]:
    """`per_country` requests of each country; a `failing[country]` share of them fail."""
    rng = np.random.default_rng(seed)
    events = []
    for country in COUNTRIES:
        fails = rng.random(per_country) < failing.get(country, 0.0)
        for i in range(per_country):
            events.append(
                PredictionEvent(
                    f"{version}-{country}-{i}", "churn", version, 1_000 + i, {}, 0.5, 0.5,
                    float(rng.uniform(5.0, 20.0)), route, "r", "k", 1,
                    "boom" if fails[i] else None,
                    ErrorKind.SERVER if fails[i] else None,
                    segments={"country": country, "device": "ios" if i % 2 else "web"},
                )
            )  # fmt: skip
    return events


# -- the statistics -------------------------------------------------------------------------------


def _mixture_p(successes: int, trials: int, tolerance: float, rho_squared: float) -> float:
    """1 / Robbins' normal-mixture martingale at the excess over the tolerance, by hand."""
    if trials == 0:
        return 1.0
    smooth = (successes + 1) / (trials + 2)
    information = trials / (smooth * (1 - smooth))
    excess = max(successes / trials - tolerance, 0.0)
    total = excess * information
    spread = 1 + rho_squared * information
    martingale = math.exp(rho_squared * total**2 / (2 * spread)) / math.sqrt(spread)
    return min(1.0, 1.0 / martingale)


def test_one_arm_p_values_are_the_mixture_martingales_inverse() -> None:
    sequence = ConfidenceSequence.for_plan(ALPHA, 100)
    cases = [(0, 0), (3, 100), (10, 100), (30, 100), (60, 400), (5, 10)]
    got = sequence.proportion_excess_p_values([c[0] for c in cases], [c[1] for c in cases], 0.05)
    expected = [_mixture_p(x, n, 0.05, sequence.rho_squared) for x, n in cases]
    assert got == pytest.approx(expected, rel=1e-9)


def test_one_arm_test_at_the_limit_stays_under_alpha_however_often_it_looks() -> None:
    """A/A at the limit, checked after every request: few runs ever reject; a clear excess is
    found."""
    rng = np.random.default_rng(7)
    sequence = ConfidenceSequence.for_plan(ALPHA, 100)
    runs, length = 400, 1_500
    trials = np.arange(1, length + 1)

    def ever_rejected(rate: float) -> float:
        hits = np.cumsum(rng.random((runs, length)) < rate, axis=1)
        p = sequence.proportion_excess_p_values(hits, np.broadcast_to(trials, hits.shape), 0.05)
        return float(np.mean((p <= ALPHA).any(axis=1)))

    assert ever_rejected(0.05) <= ALPHA
    assert ever_rejected(0.15) >= 0.95


def test_segment_summaries_equal_each_segments_own_summary() -> None:
    rng = np.random.default_rng(3)
    n = 2_000
    codes = rng.integers(0, 40, n)
    stamps = rng.integers(0, 10_000, n)
    latency = rng.lognormal(2.0, 1.0, n)
    latency[::97] = np.nan
    error, client = rng.random(n) < 0.1, rng.random(n) < 0.05
    found = segment_summaries(codes, stamps, latency, error, client)
    assert sorted(found) == sorted(set(codes.tolist()))
    for code, summary in found.items():
        mask = codes == code
        own = HealthSummary.of_window(
            {
                "timestamp_ms": stamps[mask],
                "latency_ms": latency[mask],
                "error": error[mask],
                "client_error": client[mask],
            }
        )
        assert summary.request_count == own.request_count == int(mask.sum())
        assert (summary.error_count, summary.client_error_count) == (
            own.error_count,
            own.client_error_count,
        )
        assert (summary.start_ms, summary.end_ms) == (own.start_ms, own.end_ms)
        assert np.array_equal(summary.latency, own.latency)


def test_histogram_rows_read_the_p99_and_the_tail_as_one_summary_does() -> None:
    rng = np.random.default_rng(5)
    samples = [rng.lognormal(2.0, s, n) for s, n in ((0.5, 300), (1.5, 1_000), (1.0, 1))]
    summaries = [_timed(values) for values in samples] + [HealthSummary.empty()]
    histograms = np.stack([s.latency for s in summaries])
    p99 = histogram_quantiles(histograms, 0.99)
    for got, summary in zip(p99.tolist(), summaries, strict=True):
        expected = summary.snapshot().latency_p99_ms
        assert (math.isnan(got) and expected is None) or got == pytest.approx(expected)
    limits = np.array([20.0, 50.0, 5.0, 1.0])
    tails = slower_counts(histograms, limits)
    for got, values, limit in zip(tails.tolist(), [*samples, np.array([])], limits, strict=True):
        # Within the histogram's resolution: exact but for values in the limit's own bin.
        assert abs(got - int((values > limit).sum())) <= int(
            (np.abs(np.log(values / limit)) < math.log(1.02)).sum()
        )
    assert slower_counts(histograms, np.full(4, np.nan)).tolist() == [0, 0, 0, 0]


def _timed(latency: np.ndarray, errors: int = 0) -> HealthSummary:
    """One window of these latencies, a request a millisecond; the first `errors` failed."""
    n = latency.shape[0]
    return HealthSummary.of_window(
        {
            "timestamp_ms": np.arange(n),
            "latency_ms": latency,
            "error": np.arange(n) < errors,
            "client_error": np.zeros(n, dtype=bool),
        }
    )


def test_segments_merge_and_survive_the_exchange_encoding() -> None:
    a = HealthSummary.empty().with_segments(
        {"country=DE": _summary(10, 2), "country=FR": _summary(5, 0)}
    )
    b = HealthSummary.empty().with_segments({"country=DE": _summary(30, 1)})
    merged = a + b
    assert merged.segments["country=DE"].request_count == 40
    assert merged.segments["country=DE"].error_count == 3
    assert merged.segments["country=FR"].request_count == 5
    decoded = HealthSummary.from_json(json.loads(json.dumps(merged.to_json())))
    assert {k: (v.request_count, v.error_count) for k, v in decoded.segments.items()} == {
        "country=DE": (40, 3),
        "country=FR": (5, 0),
    }
    # A summary from before segments (no "g") reads as none.
    assert HealthSummary.from_json(HealthSummary.empty().to_json()).segments == {}


def _summary(requests: int, errors: int) -> HealthSummary:
    return _timed(np.full(requests, 10.0), errors)


def _holm_adjusted(p: list[float]) -> list[float]:
    """Holm's adjusted p-values by brute force: max over the step-down prefix."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        out[i] = min(1.0, running)
    return out


def test_one_bad_segment_is_named_with_its_holm_adjusted_p() -> None:
    counts = {"country=BR": (300, 6), "country=DE": (300, 60), "country=FR": (300, 9),
              "country=US": (40, 20)}  # fmt: skip
    canary = {label: _summary(n, e) for label, (n, e) in counts.items()}
    found = judge_segments(canary, {}, ERRORS_ONLY, min_sample=100)
    assert (found.judged, found.seen) == (3, 4), "US is short of the minimum sample"
    (breach,) = found.breaches
    assert breach.segment == "country=DE"
    assert breach.breach.rule is GuardRule.ERROR_RATE
    assert breach.breach.observed == pytest.approx(0.2)
    rho = ConfidenceSequence.for_plan(ALPHA, 100).rho_squared
    raw = [_mixture_p(e, n, 0.05, rho) if n >= 100 else 1.0 for label, (n, e) in counts.items()]
    assert breach.adjusted_p == pytest.approx(_holm_adjusted(raw)[1], rel=1e-9)
    assert breach.adjusted_p <= ALPHA


def test_many_segments_at_the_limit_rarely_raise_a_false_alarm() -> None:
    """50 segments whose true error rate is exactly the limit: the chance that any is called
    in breach stays under alpha; the overall rule applied to each segment's figure as is
    (observed rate above the limit) would fire almost every time."""
    rng = np.random.default_rng(11)
    trials, segments, n = 200, 50, 150
    alarms = naive = 0
    for _ in range(trials):
        errors = rng.binomial(n, 0.05, segments)
        canary = {f"tenant={i}": _summary(n, int(e)) for i, e in enumerate(errors)}
        alarms += bool(judge_segments(canary, {}, ERRORS_ONLY, min_sample=100).breaches)
        naive += bool((errors / n > 0.05).any())
    assert alarms / trials <= ALPHA
    assert naive / trials >= 0.9


def test_latency_rules_per_segment_read_the_tail() -> None:
    policy = GuardPolicy(max_error_rate=None, max_client_error_excess=None,
                         max_performance_drop=None, max_p99_latency_ms=100.0,
                         max_p99_latency_ratio=2.0)  # fmt: skip

    fast = np.full(400, 10.0)
    slow_tail = fast.copy()
    slow_tail[:40] = 150.0  # 10 % above 100 ms: p99 150 ms, 15x production's
    canary = {"device=ios": _timed(fast), "device=web": _timed(slow_tail)}
    production = {"device=ios": _timed(fast), "device=web": _timed(fast)}
    found = judge_segments(canary, production, policy, min_sample=100)
    assert {(b.segment, b.breach.rule) for b in found.breaches} == {
        ("device=web", GuardRule.P99_LATENCY_MS),
        ("device=web", GuardRule.P99_LATENCY_RATIO),
    }
    ratio = next(b for b in found.breaches if b.breach.rule is GuardRule.P99_LATENCY_RATIO)
    assert ratio.breach.observed == pytest.approx(15.0, rel=0.03)


def test_bonferroni_is_never_looser_than_holm() -> None:
    counts = [(300, 24), (300, 27), (300, 30)]
    canary = {f"country={i}": _summary(n, e) for i, (n, e) in enumerate(counts)}
    holm = judge_segments(canary, {}, ERRORS_ONLY, 100)
    policy = GuardPolicy(**{**_fields(ERRORS_ONLY), "segment_correction": Correction.BONFERRONI})
    bonferroni = judge_segments(canary, {}, policy, 100)
    assert {b.segment for b in bonferroni.breaches} <= {b.segment for b in holm.breaches}
    for b in bonferroni.breaches:
        h = next(x for x in holm.breaches if x.segment == b.segment)
        assert b.adjusted_p >= h.adjusted_p


def _fields(policy: GuardPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in policy.__dataclass_fields__}


# -- the central guard ----------------------------------------------------------------------------


def test_a_canary_worse_in_one_segment_only_is_rolled_back_naming_it() -> None:
    issuer = FakeIssuer()
    guard = CentralGuard(ERRORS_ONLY, issuer, window_rows=4_000)  # type: ignore[arg-type]
    guard.observe(_traffic("v1", Route.PRODUCTION, 400, {}, 1))
    # 4 % overall (within 5 %), 16 % in DE.
    guard.observe(_traffic("v2", Route.CANARY, 400, {"DE": 0.16}, 2))
    (decision,) = guard.check()
    assert decision.verdict.kind is VerdictKind.BREACH
    assert decision.verdict.breaches == (), "the whole canary is within every threshold"
    command = decision.command
    assert command is not None and command.kind is CommandKind.ROLLBACK
    assert command.details["segment"] == "country=DE"
    assert command.details["failed_segments"] == "country=DE"
    assert float(command.details["error_rate_adjusted_p[country=DE]"]) <= ALPHA
    assert command.details["segments_seen"] == "6"  # 4 countries, 2 devices
    assert "segment country=DE: error_rate" in command.reason


def test_the_same_traffic_healthy_in_every_segment_is_not_rolled_back() -> None:
    issuer = FakeIssuer()
    guard = CentralGuard(ERRORS_ONLY, issuer, window_rows=4_000)  # type: ignore[arg-type]
    guard.observe(_traffic("v1", Route.PRODUCTION, 400, {}, 1))
    guard.observe(_traffic("v2", Route.CANARY, 400, dict.fromkeys(COUNTRIES, 0.03), 2))
    assert guard.check() == []
    assert issuer.sent == []
    assert guard.verdicts[VerdictKind.HEALTHY] == 1


def test_segments_split_over_two_instances_are_judged_merged() -> None:
    """DE's failures are spread over two partitions read by two instances: neither alone has
    DE's minimum sample; the judge sees it through the other's (JSON-encoded) summaries."""
    issuer = FakeIssuer()
    policy = GuardPolicy(**{**_fields(ERRORS_ONLY), "min_requests": 50})
    judge = CentralGuard(policy, issuer, window_rows=4_000, partitions=2,  # type: ignore[arg-type]
                         segment_min_sample=200)  # fmt: skip
    other = CentralGuard(policy, FakeIssuer(), window_rows=4_000, partitions=2,  # type: ignore[arg-type]
                         segment_min_sample=200)  # fmt: skip
    production = _traffic("v1", Route.PRODUCTION, 300, {}, 1)
    canary = _traffic("v2", Route.CANARY, 300, {"DE": 0.16}, 2)
    judge.observe(production, [0] * len(production))
    judge.observe(canary[0::2], [0] * len(canary[0::2]))
    other.observe(canary[1::2], [1] * len(canary[1::2]))
    assert judge.check() == [], "150 DE requests per instance are short of the minimum"
    published = {
        partition: {key: HealthSummary.from_json(json.loads(json.dumps(s.to_json())))
                    for key, s in summaries.items()}
        for partition, summaries in other.summaries().items()
    }  # fmt: skip
    (decision,) = judge.check(published)
    assert decision.command is not None
    assert decision.command.details["segment"] == "country=DE"


def test_policy_refuses_a_segment_alpha_outside_0_1() -> None:
    from safeloop.services.guard.exceptions import PolicyError

    with pytest.raises(PolicyError):
        GuardPolicy(segment_alpha=1.0)
    assert GuardPolicy().segment_correction is Correction.HOLM


def test_segment_summaries_are_recomputed_at_most_every_refresh() -> None:
    key = WindowKey(MODEL_NAME, "v2", Route.CANARY)

    def requests_in_de(refresh_ms: int) -> tuple[int, int]:
        windows = SegmentWindows(1_000, SegmentCodes(), refresh_ms)
        first = _traffic("v2", Route.CANARY, 10, {}, 1)
        windows.append([key] * len(first), first)
        before = windows.summaries(key)["country=DE"].request_count
        windows.append([key] * len(first), first)
        return before, windows.summaries(key)["country=DE"].request_count

    assert requests_in_de(0) == (10, 20)
    assert requests_in_de(60_000) == (10, 10)


# -- labels per segment ---------------------------------------------------------------------------

LABELLED = {"US": 600, "FR": 600, "BR": 600, "DE": 200}


def _labels(version: str, route: Route, right: dict[str, float], seed: int) -> list[FeedbackRecord]:
    """LABELLED[country] joined labels; `right[country]` of the answers right (default 0.9)."""
    rng = np.random.default_rng(seed)
    records = []
    for country, n in LABELLED.items():
        hits = rng.random(n) < right.get(country, 0.9)
        for i in range(n):
            records.append(
                FeedbackRecord(
                    f"{version}-{country}-{i}", "churn", version, route, "r", {}, 0.8, None,
                    1_000 + i, FeedbackStatus.JOINED, 1.0 if hits[i] else 0.0, 2_000 + i, 1_000,
                    "labels", 2_000 + i, segments={"country": country},
                )
            )  # fmt: skip
    return records


def test_segment_answers_count_labels_and_right_answers_per_segment() -> None:
    tracker = SegmentTracker(lambda name, version: Task.CLASSIFICATION, 10_000, 100)
    records = _labels("v2", Route.CANARY, {"DE": 0.6}, 5)
    tracker.add_feedback(records)
    found = tracker.answers("churn", "v2", Route.CANARY)
    for country, n in LABELLED.items():
        right = sum(r.ground_truth == 1.0 for r in records if r.segments["country"] == country)
        assert found[f"country={country}"] == (n, right)
    assert tracker.answers("churn", "v1", Route.PRODUCTION) == {}


def test_a_canary_less_accurate_in_one_segment_only_is_rolled_back_naming_it() -> None:
    policy = GuardPolicy(max_p99_latency_ratio=None, max_client_error_excess=None)
    performance = PerformanceTracker(lambda name, version: Task.CLASSIFICATION, 10_000, 10**9)
    segments = SegmentTracker(lambda name, version: Task.CLASSIFICATION, 10_000, 100)
    production = _labels("v1", Route.PRODUCTION, {}, 6)
    # 0.6 right in DE, 0.9 elsewhere: about 3 % below production's accuracy overall (within
    # the 5 % limit), a third below it in DE.
    canary = _labels("v2", Route.CANARY, {"DE": 0.6}, 7)
    for records in (production, canary):
        performance.add(records)
        segments.add_feedback(records)
    issuer = FakeIssuer()
    guard = CentralGuard(policy, issuer, performance=performance, window_rows=4_000,  # type: ignore[arg-type]
                         segment_answers=segments)  # fmt: skip
    guard.observe(_traffic("v1", Route.PRODUCTION, 400, {}, 1))
    guard.observe(_traffic("v2", Route.CANARY, 400, {}, 2))
    (decision,) = guard.check()
    assert decision.verdict.breaches == ()
    assert decision.verdict.performance_judged
    (breach,) = decision.verdict.segment_breaches
    assert (breach.segment, breach.breach.rule) == ("country=DE", GuardRule.PERFORMANCE_DROP)
    de = [r for r in canary if r.segments["country"] == "DE"]
    de_production = [r for r in production if r.segments["country"] == "DE"]
    accuracy = sum(r.ground_truth == 1.0 for r in de) / len(de)
    production_accuracy = sum(r.ground_truth == 1.0 for r in de_production) / len(de_production)
    assert breach.breach.observed == pytest.approx(1 - accuracy / production_accuracy)
    assert decision.command is not None
    assert decision.command.details["segment"] == "country=DE"
    # Without the labels per segment, the same guard keeps the canary.
    plain = CentralGuard(policy, FakeIssuer(), performance=performance, window_rows=4_000)  # type: ignore[arg-type]
    plain.observe(_traffic("v1", Route.PRODUCTION, 400, {}, 1))
    plain.observe(_traffic("v2", Route.CANARY, 400, {}, 2))
    assert plain.check() == []
