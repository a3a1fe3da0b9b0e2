"""Per-segment grouping and the multiple-comparison corrections, each checked against a
brute-force computation written here (a loop per segment, the textbook procedures)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.tables import SEGMENT_METRICS
from safeloop.services.metrics.multiple_comparisons import (
    Correction,
    adjusted_p_values,
    rejections,
)
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.segment_tracker import SegmentTracker
from safeloop.services.metrics.segments import (
    SegmentCodes,
    correct_answers,
    dense_counts,
    explode,
    segment_health,
    segment_performance,
)


def _holm_by_definition(p: list[float], alpha: float) -> list[bool]:
    """Holm (1979): order the p-values, reject H_(1..k-1) where k is the first index with
    p_(k) > alpha / (m + 1 - k)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    rejected = [False] * m
    for rank, i in enumerate(order, start=1):
        if p[i] > alpha / (m + 1 - rank):
            break
        rejected[i] = True
    return rejected


def _holm_adjusted_by_definition(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order, start=1):
        running = max(running, (m + 1 - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted


@pytest.mark.parametrize("seed", range(20))
def test_holm_and_bonferroni_match_their_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    # A mix of tiny and ordinary p-values, with ties.
    p = np.where(rng.random(m) < 0.3, rng.random(m) * 0.01, rng.random(m))
    p[rng.integers(0, m)] = p[0]
    alpha = 0.05
    holm = rejections(p, alpha, Correction.HOLM)
    assert holm.tolist() == _holm_by_definition(p.tolist(), alpha)
    bonferroni = rejections(p, alpha, Correction.BONFERRONI)
    assert bonferroni.tolist() == [value <= alpha / m for value in p.tolist()]
    # Holm rejects at least what Bonferroni does.
    assert not bool((bonferroni & ~holm).any())
    assert adjusted_p_values(p, Correction.HOLM) == pytest.approx(
        _holm_adjusted_by_definition(p.tolist())
    )
    assert adjusted_p_values(p, Correction.BONFERRONI) == pytest.approx(
        [min(1.0, value * m) for value in p.tolist()]
    )
    # Rejected exactly where the adjusted p-value is within alpha.
    assert ((adjusted_p_values(p, Correction.HOLM) <= alpha) == holm).all()


def test_untestable_segments_do_not_count_and_are_never_rejected() -> None:
    p = np.array([0.01, np.nan, 0.02, np.nan])
    # m = 2: 0.01 <= 0.05/2 and 0.02 <= 0.05/1.
    assert rejections(p, 0.05, Correction.HOLM).tolist() == [True, False, True, False]
    assert rejections(np.array([np.nan]), 0.05, Correction.HOLM).tolist() == [False]
    assert np.isnan(adjusted_p_values(p, Correction.HOLM)[1])


def test_holm_holds_the_family_wise_error_rate_where_uncorrected_tests_do_not() -> None:
    rng = np.random.default_rng(3)
    runs, m, alpha = 4_000, 20, 0.05
    p = rng.random((runs, m))  # every null true: uniform p-values
    uncorrected = (p <= alpha).any(axis=1).mean()
    holm = np.mean([rejections(row, alpha, Correction.HOLM).any() for row in p])
    assert uncorrected > 0.5  # 1 - 0.95^20 = 0.64
    assert holm <= alpha + 0.01


def _events(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    countries = ["BR", "DE", "US", "JP"]
    devices = ["ios", "android"]
    out: list[dict[str, str]] = []
    for _ in range(n):
        segments: dict[str, str] = {}
        if rng.random() < 0.9:
            segments["country"] = countries[int(rng.integers(0, 4))]
        if rng.random() < 0.5:
            segments["device"] = devices[int(rng.integers(0, 2))]
        out.append(segments)
    return out


def test_segment_health_matches_a_loop_over_segments() -> None:
    rng = np.random.default_rng(11)
    n = 3_000
    segments = _events(rng, n)
    stamps = rng.integers(0, 1_000_000, n)
    latency = rng.lognormal(2.0, 0.7, n)
    latency[rng.integers(0, n, 20)] = np.nan  # missing latencies are left out of percentiles
    error = rng.random(n) < 0.05
    client = rng.random(n) < 0.02
    codes = SegmentCodes()
    rows, found = explode(segments, codes)
    assert rows.shape[0] == sum(len(s) for s in segments)
    health = segment_health(found, stamps[rows], latency[rows], error[rows], client[rows])
    assert sorted(codes.label(int(c)) for c in health.codes) == sorted(
        {f"{k}={v}" for s in segments for k, v in s.items()}
    )
    for i, code in enumerate(health.codes.tolist()):
        key, value = codes.pair(code)
        members = [j for j, s in enumerate(segments) if s.get(key) == value]
        assert health.request_count[i] == len(members)
        assert health.error_count[i] == int(error[members].sum())
        assert health.client_error_count[i] == int(client[members].sum())
        assert health.error_rate[i] == pytest.approx(error[members].mean())
        finite = latency[members][np.isfinite(latency[members])]
        expected = np.percentile(finite, [50, 95, 99])
        assert health.latency_ms[i] == pytest.approx(expected)
        assert health.window_start_ms[i] == stamps[members].min()
        assert health.window_end_ms[i] == stamps[members].max()


def test_segment_performance_matches_a_loop_over_segments() -> None:
    rng = np.random.default_rng(12)
    n = 2_000
    segments = _events(rng, n)
    score = rng.random(n)
    truth = (rng.random(n) < 0.4).astype(np.float64)
    truth[rng.random(n) < 0.2] = np.nan  # expired: no label
    nan = np.full(n, np.nan)
    correct = correct_answers(score, truth, nan, nan)
    codes = SegmentCodes()
    rows, found = explode(segments, codes)
    figures = segment_performance(
        found, np.arange(n)[rows], score[rows], truth[rows], correct[rows]
    )
    for i, code in enumerate(figures.codes.tolist()):
        key, value = codes.pair(code)
        members = [j for j, s in enumerate(segments) if s.get(key) == value]
        labelled = [j for j in members if not math.isnan(truth[j])]
        right = sum((score[j] >= 0.5) == (truth[j] >= 0.5) for j in labelled)
        assert figures.row_count[i] == len(members)
        assert figures.labelled_count[i] == len(labelled)
        assert figures.correct_count[i] == right
        assert figures.accuracy[i] == pytest.approx(right / len(labelled))
        absolute = [abs(score[j] - truth[j]) for j in labelled]
        assert figures.mae[i] == pytest.approx(sum(absolute) / len(labelled))
        assert figures.rmse[i] == pytest.approx(
            math.sqrt(sum(a * a for a in absolute) / len(labelled))
        )


def test_multiclass_answers_are_right_when_the_true_class_had_the_top_probability() -> None:
    score = np.array([2.0, 1.0, np.nan])
    truth = np.array([2.0, 0.0, 1.0])
    true_class = np.array([0.7, 0.2, np.nan])
    top = np.array([0.7, 0.5, np.nan])
    assert correct_answers(score, truth, true_class, top).tolist() == [True, False, False]


def test_dense_counts_match_a_loop_and_align_with_the_code_numbering() -> None:
    rng = np.random.default_rng(5)
    n, size = 5_000, 7
    codes = rng.integers(0, size - 1, n)  # the last code has no rows
    flag = rng.random(n) < 0.1
    values = rng.normal(0.0, 1.0, n)
    values[rng.random(n) < 0.05] = np.nan
    counts = dense_counts(codes, flag, values, size)
    for code in range(size):
        members = codes == code
        kept = values[members & np.isfinite(values)]
        assert counts.rows[code] == members.sum()
        assert counts.flagged[code] == (members & flag).sum()
        assert counts.value_count[code] == kept.shape[0]
        if kept.shape[0] > 1:
            assert counts.value_mean[code] == pytest.approx(kept.mean())
            assert counts.value_variance[code] == pytest.approx(kept.var(ddof=1))
    assert counts.rows[size - 1] == 0 and counts.value_variance[size - 1] == 0.0


def test_rows_without_segments_add_nothing() -> None:
    rows, found = explode([{}, {}, {"tenant": "acme"}], SegmentCodes())
    assert rows.tolist() == [2] and found.tolist() == [0]
    empty = segment_health(
        found[:0], np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)
    )
    assert empty.codes.shape == (0,)


def _event(i: int, version: str, country: str, latency: float, error: bool) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=str(i),
        model_name="fraud",
        model_version=version,
        timestamp=1_000 + i,
        features={},
        prediction=None if error else 0.4,
        confidence=None,
        latency_ms=latency,
        route=Route.PRODUCTION,
        replica_id="r",
        routing_key=str(i),
        routing_hash_version=1,
        error="boom" if error else None,
        segments={"country": country, "device": "ios" if i % 3 else "web"},
    )


def test_the_tracker_writes_rows_for_segments_with_enough_rows_only() -> None:
    rng = np.random.default_rng(21)
    countries = rng.choice(["BR", "DE", "US", "XX"], size=3_000, p=[0.3, 0.3, 0.38, 0.02])
    latency = rng.lognormal(2.0, 0.5, 3_000)
    error = rng.random(3_000) < 0.05
    events = [
        _event(i, "v1", str(c), float(latency[i]), bool(error[i])) for i, c in enumerate(countries)
    ]
    tracker = SegmentTracker(lambda name, version: Task.CLASSIFICATION, 2_000, min_sample=100)
    for start in range(0, 3_000, 700):  # several batches
        tracker.add_predictions(events[start : start + 700])
    rows = tracker.rows()
    # The window holds each segment key's last 2,000 (request, segment) rows.
    last = events[-2_000:]
    by_segment: dict[tuple[str, str], list[int]] = {}
    for j, event in enumerate(last, start=1_000):
        for key, value in event.segments.items():
            by_segment.setdefault((key, value), []).append(j)
    expected = {pair for pair, members in by_segment.items() if len(members) >= 100}
    assert ("country", "XX") not in expected  # too few: no row
    written = {(r.segment_key, r.segment_value) for r in rows}
    assert written == expected
    for row in rows:
        members = by_segment[(row.segment_key, row.segment_value)]
        assert row.sample_count == len(members)
        assert row.labels == {"window": "count_2000"}
        if row.metric == "error_rate":
            assert row.value == pytest.approx(error[members].mean())
        if row.metric == "latency_p99_ms":
            assert row.value == pytest.approx(np.percentile(latency[members], 99))
        assert (row.window_start_ms, row.window_end_ms) == (1_000 + members[0], 1_000 + members[-1])
    [table_row] = SEGMENT_METRICS.rows(rows[:1])
    assert table_row[SEGMENT_METRICS.columns.index("segment_key")] == rows[0].segment_key
