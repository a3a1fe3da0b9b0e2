"""Wilson and Newcombe intervals against published values and a root-finding reference."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from safeloop.services.rollout.exceptions import RolloutError
from safeloop.services.rollout.intervals import difference_interval, wilson_interval, z_for


def wilson_by_bisection(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Solve |p_hat - p| = z sqrt(p (1 - p) / n) for p on each side of p_hat."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p_hat = successes / trials

    def excess(p: float) -> float:
        return abs(p_hat - p) - z * math.sqrt(p * (1 - p) / trials)

    def solve(low: float, high: float) -> float:
        for _ in range(200):
            middle = (low + high) / 2
            # excess is positive far from p_hat and negative near it.
            if (excess(middle) > 0) == (excess(low) > 0):
                low = middle
            else:
                high = middle
        return (low + high) / 2

    lower = 0.0 if successes == 0 else solve(0.0, p_hat)
    upper = 1.0 if successes == trials else solve(1.0, p_hat)
    return lower, upper


def test_z_for_common_confidences() -> None:
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for(0.99) == pytest.approx(2.575829, abs=1e-6)
    with pytest.raises(RolloutError):
        z_for(1.0)


def test_wilson_published_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


@pytest.mark.parametrize(("successes", "trials"), [(1, 3), (7, 20), (0, 50), (49, 50), (300, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_root_finding(successes: int, trials: int, confidence: float) -> None:
    assert wilson_interval(successes, trials, confidence) == pytest.approx(
        wilson_by_bisection(successes, trials, confidence), abs=1e-9
    )


def test_wilson_without_trials_and_bad_counts() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(RolloutError):
        wilson_interval(3, 2)


def test_newcombe_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a), method 10: 56/70 - 48/80.
    assert difference_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_newcombe_is_built_from_wilson_limits() -> None:
    low_a, high_a = wilson_interval(9, 10)
    low_b, high_b = wilson_interval(3, 10)
    low, high = difference_interval(9, 10, 3, 10)
    assert low == pytest.approx(0.6 - math.sqrt((0.9 - low_a) ** 2 + (high_b - 0.3) ** 2))
    assert high == pytest.approx(0.6 + math.sqrt((high_a - 0.9) ** 2 + (0.3 - low_b) ** 2))


def test_difference_interval_is_antisymmetric_and_bounded() -> None:
    low, high = difference_interval(3, 40, 10, 50)
    swapped_low, swapped_high = difference_interval(10, 50, 3, 40)
    assert (low, high) == pytest.approx((-swapped_high, -swapped_low))
    assert difference_interval(0, 0, 0, 0) == pytest.approx((-1.0, 1.0))
