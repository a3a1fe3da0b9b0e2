"""Training baselines and drift distances against hand formulas and raw-sample references."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from safeloop.services.metrics.baseline import Baseline, ModelBaseline
from safeloop.services.metrics.drift import (
    SCORE_NAME,
    DriftBand,
    drift_band,
    drift_from_counts,
    drift_of_sample,
    js_divergence,
    ks_statistic,
    model_drift,
    psi,
    wasserstein,
)
from safeloop.services.metrics.exceptions import BaselineError, InvalidInputError


def bin_of(edges: list[float], value: float) -> int:
    """Bin i holds edges[i-1] < value <= edges[i]."""
    for i, edge in enumerate(edges):
        if value <= edge:
            return i
    return len(edges)


def psi_by_hand(expected: list[float], actual: list[float], floor: float = 1e-4) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, floor), max(a, floor)
        total += (a - e) * math.log(a / e)
    return total


def w1_by_quantiles(points: list[float], p: list[float], q: list[float]) -> float:
    """∫_0^1 |Q_p(u) - Q_q(u)| du for two distributions on the same points."""

    def quantile(weights: list[float], u: float) -> float:
        running = 0.0
        for point, weight in zip(points, weights, strict=True):
            running += weight
            if u < running:
                return point
        return points[-1]

    cuts = sorted({0.0, 1.0, *np.cumsum(p).tolist(), *np.cumsum(q).tolist()})
    cuts = [min(max(c, 0.0), 1.0) for c in cuts]
    area = 0.0
    for low, high in itertools.pairwise(cuts):
        if high > low:
            middle = (low + high) / 2
            area += (high - low) * abs(quantile(p, middle) - quantile(q, middle))
    return area


def test_baseline_of_a_continuous_sample_matches_loops() -> None:
    sample = np.random.default_rng(1).normal(size=1_000)
    baseline = Baseline.from_training_sample(sample, n_bins=10)
    edges = baseline.edges.tolist()
    assert len(edges) == 9
    assert all(b > a for a, b in itertools.pairwise(edges))
    members: list[list[float]] = [[] for _ in range(10)]
    for value in sample.tolist():
        members[bin_of(edges, value)].append(value)
    np.testing.assert_allclose(baseline.expected, [len(m) / 1_000 for m in members])
    np.testing.assert_allclose(baseline.bin_means, [sum(m) / len(m) for m in members])
    np.testing.assert_allclose(baseline.expected, 0.1, atol=0.002)
    assert (baseline.low, baseline.high) == (sample.min(), sample.max())
    assert baseline.missing_fraction == 0.0


def test_baseline_of_a_discrete_sample_merges_tied_quantiles() -> None:
    sample = [0] * 70 + [1] * 20 + [5] * 10
    baseline = Baseline.from_training_sample(sample, n_bins=10)
    assert baseline.edges.tolist() == [0.0, 1.0]
    np.testing.assert_allclose(baseline.expected, [0.7, 0.2, 0.1])
    np.testing.assert_allclose(baseline.bin_means, [0.0, 1.0, 5.0])


def test_baseline_of_a_constant_still_sees_change() -> None:
    baseline = Baseline.from_training_sample([3.0] * 50)
    assert baseline.n_bins == 3
    np.testing.assert_allclose(baseline.expected, [0.0, 1.0, 0.0])
    assert drift_of_sample(baseline, [3.0] * 20).band is DriftBand.STABLE
    assert drift_of_sample(baseline, [4.0] * 20).band is DriftBand.MAJOR
    assert drift_of_sample(baseline, [2.0] * 20).band is DriftBand.MAJOR


def test_baseline_counts_missing_values() -> None:
    baseline = Baseline.from_training_sample([1.0, 2.0, math.nan, 3.0], n_bins=2)
    assert baseline.missing_fraction == 0.25
    assert baseline.sample_count == 4
    counts, missing = baseline.bin_counts([1.0, math.nan, 10.0, -10.0])
    assert missing == 1
    assert counts.sum() == 3
    with pytest.raises(BaselineError):
        Baseline.from_training_sample([math.nan])
    with pytest.raises(BaselineError):
        Baseline.from_training_sample([1.0, 2.0], n_bins=1)


def test_baseline_round_trips_through_json() -> None:
    rng = np.random.default_rng(2)
    model = ModelBaseline.from_training_data(
        {"age": rng.normal(40, 10, 500), "clicks": rng.poisson(3, 500)}, score=rng.random(500)
    )
    restored = ModelBaseline.from_dict(json.loads(json.dumps(model.to_dict())))
    assert set(restored.features) == {"age", "clicks"}
    for name, baseline in model.features.items():
        again = restored.features[name]
        np.testing.assert_array_equal(again.edges, baseline.edges)
        np.testing.assert_array_equal(again.expected, baseline.expected)
        np.testing.assert_array_equal(again.bin_means, baseline.bin_means)
        assert (again.low, again.high) == (baseline.low, baseline.high)
    assert restored.score is not None
    live = rng.normal(45, 10, 300)
    assert drift_of_sample(restored.features["age"], live) == drift_of_sample(
        model.features["age"], live
    )


@pytest.mark.parametrize(
    "data",
    [
        {"format": 99},
        {"format": 1, "edges": [1.0]},
        {
            "format": 1,
            "edges": [2.0, 1.0],
            "expected": [0.3, 0.3, 0.4],
            "bin_means": [0, 1, 2],
            "low": 0,
            "high": 3,
            "sample_count": 3,
            "missing_fraction": 0,
        },
        {
            "format": 1,
            "edges": [1.0],
            "expected": [0.5, 0.6],
            "bin_means": [0, 1],
            "low": 0,
            "high": 3,
            "sample_count": 3,
            "missing_fraction": 0,
        },
        {
            "format": 1,
            "edges": [1.0],
            "expected": [0.5, 0.5],
            "bin_means": [0],
            "low": 0,
            "high": 3,
            "sample_count": 3,
            "missing_fraction": 0,
        },
    ],
)
def test_malformed_baselines_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(BaselineError):
        Baseline.from_dict(data)


def test_psi_by_hand_formula_with_floor() -> None:
    expected = [0.25, 0.25, 0.25, 0.25]
    actual = [0.1, 0.2, 0.3, 0.4]
    assert psi(expected, actual) == pytest.approx(psi_by_hand(expected, actual))
    # An empty live bin is floored at 1e-4 instead of blowing up.
    actual_with_gap = [0.0, 0.5, 0.25, 0.25]
    value = psi(expected, actual_with_gap)
    assert math.isfinite(value)
    assert value == pytest.approx(psi_by_hand(expected, actual_with_gap))
    assert psi(expected, expected) == 0.0


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (0.0, DriftBand.STABLE),
        (0.0999, DriftBand.STABLE),
        (0.1, DriftBand.MODERATE),
        (0.25, DriftBand.MODERATE),
        (0.2501, DriftBand.MAJOR),
        (3.0, DriftBand.MAJOR),
    ],
)
def test_drift_bands(value: float, band: DriftBand) -> None:
    assert drift_band(value) is band


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_ks_equals_raw_sample_cdf_gap_at_the_edges(shift: float) -> None:
    rng = np.random.default_rng(3)
    training = rng.normal(size=2_000)
    live = rng.normal(shift, 1.2, size=700)
    baseline = Baseline.from_training_sample(training, n_bins=10)
    gaps = [
        abs(np.mean(training <= edge) - np.mean(live <= edge)) for edge in baseline.edges.tolist()
    ]
    assert drift_of_sample(baseline, live).ks == pytest.approx(max(gaps))


def test_js_divergence_by_hand() -> None:
    p = [0.5, 0.5, 0.0]
    q = [0.0, 0.5, 0.5]
    m = [0.25, 0.5, 0.25]
    by_hand = 0.5 * sum(a * math.log2(a / b) for a, b in zip(p, m, strict=True) if a) + 0.5 * sum(
        a * math.log2(a / b) for a, b in zip(q, m, strict=True) if a
    )
    assert js_divergence(p, q) == pytest.approx(by_hand)
    assert js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert js_divergence(p, p) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_wasserstein_matches_quantile_integral(seed: int) -> None:
    rng = np.random.default_rng(seed)
    baseline = Baseline.from_training_sample(rng.gamma(2.0, 3.0, 3_000), n_bins=8)
    live = rng.gamma(2.0 + seed * 0.3, 3.0, 500)
    counts, _ = baseline.bin_counts(live)
    actual = (counts / counts.sum()).tolist()
    expected = w1_by_quantiles(baseline.bin_means.tolist(), baseline.expected.tolist(), actual)
    assert wasserstein(baseline, actual) == pytest.approx(expected, abs=1e-9)


def test_wasserstein_tracks_a_mean_shift() -> None:
    rng = np.random.default_rng(4)
    baseline = Baseline.from_training_sample(rng.normal(size=100_000), n_bins=20)
    for shift in (0.1, 0.5):
        metrics = drift_of_sample(baseline, rng.normal(shift, 1.0, 100_000))
        assert metrics.wasserstein == pytest.approx(shift, rel=0.15)


def test_distances_refuse_mismatched_bins() -> None:
    with pytest.raises(InvalidInputError):
        psi([0.5, 0.5], [1.0])
    with pytest.raises(InvalidInputError):
        ks_statistic([], [])
    baseline = Baseline.from_training_sample(np.arange(100.0), n_bins=4)
    with pytest.raises(InvalidInputError):
        drift_from_counts(baseline, [1, 2])


def test_drift_of_empty_or_all_missing_window_is_defined() -> None:
    baseline = Baseline.from_training_sample(np.arange(100.0), n_bins=4)
    empty = drift_of_sample(baseline, [])
    assert (empty.sample_count, empty.psi, empty.band, empty.missing_fraction) == (
        0,
        None,
        None,
        None,
    )
    missing = drift_of_sample(baseline, [math.nan, math.nan])
    assert missing.missing_fraction == 1.0
    assert missing.psi is None


def test_drift_from_counts_equals_drift_of_sample() -> None:
    rng = np.random.default_rng(5)
    baseline = Baseline.from_training_sample(rng.normal(size=1_000))
    live = rng.normal(0.4, 1, 400)
    counts, missing = baseline.bin_counts(live)
    assert drift_from_counts(baseline, counts, missing) == drift_of_sample(baseline, live)


def test_model_drift_reports_worst_first() -> None:
    rng = np.random.default_rng(6)
    model = ModelBaseline.from_training_data(
        {"a": rng.normal(size=5_000), "b": rng.normal(size=5_000), "c": rng.normal(size=5_000)},
        score=rng.random(5_000),
    )
    live = {
        "a": rng.normal(size=2_000),
        "b": rng.normal(1.5, 1, 2_000),  # major
        "c": rng.normal(0.45, 1, 2_000),  # moderate-ish
        "unknown": rng.normal(size=2_000),
    }
    report = model_drift(model, live, score=rng.random(2_000) ** 2)
    assert set(report.features) == {"a", "b", "c"}
    values = {name: m.psi for name, m in report.features.items()}
    assert report.score is not None
    values[SCORE_NAME] = report.score.psi
    assert report.max_psi == max(v for v in values.values() if v is not None)
    assert report.drifted[0] == "b"
    assert "a" not in report.drifted
    assert list(report.drifted) == sorted(report.drifted, key=lambda name: -(values[name] or 0.0))
    nothing = model_drift(model, {})
    assert (nothing.max_psi, nothing.drifted) == (None, ())
