"""Percentiles against a hand-written linear-interpolation reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.latency import percentiles


def reference_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 1_000])
def test_percentiles_match_reference(size: int) -> None:
    values = np.random.default_rng(size).exponential(20.0, size).tolist()
    result = percentiles(values)
    assert result.p50 == pytest.approx(reference_percentile(values, 50))
    assert result.p95 == pytest.approx(reference_percentile(values, 95))
    assert result.p99 == pytest.approx(reference_percentile(values, 99))


def test_percentiles_by_hand() -> None:
    result = percentiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (result.p50, result.p95, result.p99) == pytest.approx((3.0, 4.8, 4.96))


def test_percentiles_of_empty_and_all_nan_are_none() -> None:
    assert percentiles([]).p99 is None
    assert percentiles([math.nan, math.inf]).p50 is None


def test_percentiles_skip_nan() -> None:
    assert percentiles([math.nan, 2.0, 4.0]).p50 == 3.0
