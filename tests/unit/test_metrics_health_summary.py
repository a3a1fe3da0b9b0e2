"""Mergeable health summaries: the sum of two windows' summaries is the union's summary."""

from __future__ import annotations

import numpy as np
import pytest

from safeloop.services.metrics.health import HEALTH_COLUMNS, health_of_window
from safeloop.services.metrics.health_summary import HealthSummary
from safeloop.services.metrics.windows import CountWindow


def _window(rng: np.random.Generator, n: int, start_ms: int) -> CountWindow:
    window = CountWindow(n, HEALTH_COLUMNS)
    window.append(
        {
            "timestamp_ms": np.arange(start_ms, start_ms + n, dtype=np.int64),
            "latency_ms": rng.lognormal(1.5, 0.8, n),
            "error": rng.random(n) < 0.07,
            "client_error": rng.random(n) < 0.02,
        }
    )
    return window


def test_merged_summaries_equal_the_union_and_quantiles_are_within_one_percent() -> None:
    rng = np.random.default_rng(4)
    a, b = _window(rng, 3_000, 1_000), _window(rng, 2_000, 10_000)
    merged = (HealthSummary.of_window(a.view()) + HealthSummary.of_window(b.view())).snapshot()
    union = CountWindow(5_000, HEALTH_COLUMNS)
    union.append(dict(a.view()))
    union.append(dict(b.view()))
    exact = health_of_window(union.view())
    assert merged.request_count == exact.request_count == 5_000
    assert merged.error_count == exact.error_count
    assert merged.client_error_count == exact.client_error_count
    assert (merged.window_start_ms, merged.window_end_ms) == (1_000, 11_999)
    for got, want in (
        (merged.latency_p50_ms, exact.latency_p50_ms),
        (merged.latency_p95_ms, exact.latency_p95_ms),
        (merged.latency_p99_ms, exact.latency_p99_ms),
    ):
        assert got == pytest.approx(want, rel=0.02)


def test_summary_survives_json_and_empty_is_neutral() -> None:
    rng = np.random.default_rng(5)
    summary = HealthSummary.of_window(_window(rng, 500, 0).view())
    again = HealthSummary.from_json(summary.to_json())
    assert again.snapshot() == summary.snapshot()
    assert (summary + HealthSummary.empty()).snapshot() == summary.snapshot()
    assert HealthSummary.empty().snapshot().latency_p99_ms is None
