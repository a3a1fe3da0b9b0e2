"""Count and time windows against plain-list reference implementations."""

from __future__ import annotations

import numpy as np
import pytest

from safeloop.schemas.events import Route
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.windows import CountWindow, TimeWindow

COLUMNS = {"timestamp_ms": np.int64, "value": np.float64}


def batch(stamps: list[int], values: list[float] | None = None) -> dict[str, np.ndarray]:
    values = [float(s) for s in stamps] if values is None else values
    return {"timestamp_ms": np.array(stamps, dtype=np.int64), "value": np.array(values)}


@pytest.mark.parametrize("capacity", [1, 3, 10, 64])
def test_count_window_keeps_the_newest_rows_in_order(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    window = CountWindow(capacity, COLUMNS)
    reference: list[float] = []
    counter = 0
    for _ in range(300):
        size = int(rng.choice([0, 1, 2, capacity - 1, capacity, capacity + 5, 7]))
        size = max(size, 0)
        values = list(range(counter, counter + size))
        counter += size
        window.append(batch(values))
        reference.extend(float(v) for v in values)
        view = window.view()
        expected = reference[-capacity:]
        assert view["value"].tolist() == expected
        assert view["timestamp_ms"].tolist() == [int(v) for v in expected]
        assert len(window) == len(expected)


def test_count_window_view_is_read_only_and_empty_at_first() -> None:
    window = CountWindow(4, COLUMNS)
    assert len(window) == 0
    assert window.view()["value"].shape == (0,)
    window.append(batch([1, 2]))
    view = window.view()
    with pytest.raises(ValueError, match="read-only"):
        view["value"][0] = 9.0


def test_count_window_refuses_bad_batches() -> None:
    with pytest.raises(InvalidInputError):
        CountWindow(0, COLUMNS)
    window = CountWindow(4, COLUMNS)
    with pytest.raises(InvalidInputError, match="missing"):
        window.append({"timestamp_ms": np.array([1])})
    with pytest.raises(InvalidInputError, match="equally long"):
        window.append({"timestamp_ms": np.array([1, 2]), "value": np.array([1.0])})
    with pytest.raises(InvalidInputError, match="unexpected"):
        window.append({**batch([1]), "other": np.array([1.0])})


def reference_time_window(
    arrivals: list[list[tuple[int, float]]], span_ms: int
) -> tuple[list[tuple[int, float]], int]:
    """All rows ever accepted, stable-sorted by time, cut to (clock - span, clock]; late count."""
    accepted: list[tuple[int, float]] = []
    clock: int | None = None
    late = 0
    for rows in arrivals:
        if not rows:
            continue
        newest = max(stamp for stamp, _ in rows)
        clock = newest if clock is None else max(clock, newest)
        for stamp, value in rows:
            if stamp > clock - span_ms:
                accepted.append((stamp, value))
            else:
                late += 1
    assert clock is not None
    kept = sorted(accepted, key=lambda row: row[0])  # sorted() is stable
    return [row for row in kept if row[0] > clock - span_ms], late


@pytest.mark.parametrize("seed", range(6))
def test_time_window_matches_reference_with_out_of_order_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    span_ms = int(rng.integers(5, 200))
    window = TimeWindow(span_ms, COLUMNS)
    arrivals: list[list[tuple[int, float]]] = []
    now = 1_000
    serial = 0
    for _ in range(200):
        now += int(rng.integers(0, 20))
        size = int(rng.integers(0, 12))
        # Up to 30 ms late, sometimes far later than the window.
        stamps = now - rng.integers(0, 30, size)
        if size and rng.random() < 0.1:
            stamps[0] -= 1_000
        values = [float(serial + i) for i in range(size)]
        serial += size
        rows = list(zip(stamps.tolist(), values, strict=True))
        arrivals.append(rows)
        window.append(batch(stamps.tolist(), values))
        if rows:
            expected, late = reference_time_window(arrivals, span_ms)
            view = window.view()
            assert (
                list(zip(view["timestamp_ms"].tolist(), view["value"].tolist(), strict=True))
                == expected
            )
            assert window.late_dropped == late


def test_time_window_advance_empties_a_quiet_window() -> None:
    window = TimeWindow(100, COLUMNS)
    window.append(batch([1_000, 1_050, 1_090]))
    window.advance(1_120)
    assert window.view()["timestamp_ms"].tolist() == [1_050, 1_090]
    window.advance(1_000)  # the clock never goes back
    assert window.clock_ms == 1_120
    window.advance(1_190)
    assert len(window) == 0
    window.append(batch([1_050]))  # older than the window now: dropped, counted
    assert len(window) == 0
    assert window.late_dropped == 1


def test_time_window_boundary_is_exclusive_of_clock_minus_span() -> None:
    window = TimeWindow(10, COLUMNS)
    window.append(batch([0, 1, 10]))
    assert window.view()["timestamp_ms"].tolist() == [1, 10]


def test_time_window_caps_rows_and_counts_the_overflow() -> None:
    window = TimeWindow(1_000_000, COLUMNS, max_rows=50)
    for start in range(0, 1_000, 10):
        window.append(batch(list(range(start, start + 10))))
    assert window.view()["timestamp_ms"].tolist() == list(range(950, 1_000))
    assert window.overflow_dropped == 950


def test_time_window_grows_past_its_first_allocation() -> None:
    window = TimeWindow(10**9, COLUMNS)
    stamps = list(range(5_000))
    window.append(batch(stamps[:100]))
    window.append(batch(stamps[100:]))
    assert window.view()["timestamp_ms"].tolist() == stamps


def test_time_window_needs_a_timestamp_column() -> None:
    with pytest.raises(InvalidInputError):
        TimeWindow(10, {"value": np.float64})
    with pytest.raises(InvalidInputError):
        TimeWindow(0, COLUMNS)


def test_keyed_windows_route_mixed_batches_to_their_keys() -> None:
    windows = KeyedWindows(lambda: CountWindow(100, COLUMNS))
    a = WindowKey("m", "1", Route.PRODUCTION)
    b = WindowKey("m", "2", Route.CANARY)
    c = WindowKey("m", "2", Route.SHADOW)
    keys = [a, b, a, c, b, a]
    windows.append(keys, batch([1, 2, 3, 4, 5, 6]))
    windows.append([b], batch([7]))
    assert windows.window(a).view()["timestamp_ms"].tolist() == [1, 3, 6]
    assert windows.window(b).view()["timestamp_ms"].tolist() == [2, 5, 7]
    assert windows.window(c).view()["timestamp_ms"].tolist() == [4]
    assert {key for key, _ in windows} == {a, b, c}
    windows.discard(c)
    assert len(windows) == 2
    windows.append([], batch([]))
    with pytest.raises(InvalidInputError):
        windows.append([a, b], batch([1]))
