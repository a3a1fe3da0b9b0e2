"""Health snapshots from windows."""

from __future__ import annotations

import numpy as np
import pytest

from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.health import HEALTH_COLUMNS, health_of_window, health_snapshot
from safeloop.services.metrics.windows import CountWindow, TimeWindow


def test_health_snapshot_counts_and_rates() -> None:
    latencies = [10.0, 20.0, 30.0, 40.0, 1000.0]
    snapshot = health_snapshot(
        latencies, [False, True, False, False, True], [100, 200, 300, 400, 500]
    )
    assert snapshot.request_count == 5
    assert snapshot.error_count == 2
    assert snapshot.error_rate == pytest.approx(0.4)
    assert snapshot.latency_p50_ms == 30.0
    assert snapshot.latency_p99_ms == pytest.approx(40 + (1000 - 40) * 0.96)
    # 5 requests over 400 ms of timestamps.
    assert snapshot.requests_per_s == pytest.approx(12.5)
    assert (snapshot.window_start_ms, snapshot.window_end_ms) == (100, 500)


def test_health_snapshot_with_span_uses_it_for_the_rate() -> None:
    snapshot = health_snapshot([1.0, 2.0], [False, False], span_ms=10_000)
    assert snapshot.requests_per_s == pytest.approx(0.2)
    assert snapshot.window_start_ms is None


def test_empty_window_gives_zero_counts_and_none() -> None:
    snapshot = health_of_window(CountWindow(10, HEALTH_COLUMNS).view())
    assert snapshot.request_count == 0
    assert snapshot.error_rate is None
    assert snapshot.latency_p99_ms is None
    assert snapshot.requests_per_s is None
    assert snapshot.window_start_ms is None


def test_single_request_has_no_rate_without_a_span() -> None:
    snapshot = health_snapshot([5.0], [True], [7])
    assert snapshot.error_rate == 1.0
    assert snapshot.requests_per_s is None


def test_health_of_time_window() -> None:
    window = TimeWindow(1_000, HEALTH_COLUMNS)
    window.append(
        {
            "timestamp_ms": np.array([0, 600, 1_500]),
            "latency_ms": np.array([1.0, 2.0, 3.0]),
            "error": np.array([True, False, False]),
            "client_error": np.array([False, True, True]),
        }
    )
    snapshot = health_of_window(window.view(), span_ms=window.span_ms)
    assert snapshot.request_count == 2
    assert snapshot.error_count == 0
    assert (snapshot.client_error_count, snapshot.client_error_rate) == (2, 1.0)
    assert snapshot.requests_per_s == pytest.approx(2.0)


def test_health_snapshot_refuses_misaligned_inputs() -> None:
    with pytest.raises(InvalidInputError):
        health_snapshot([1.0, 2.0], [False])
    with pytest.raises(InvalidInputError):
        health_snapshot([1.0], [False], span_ms=0)
