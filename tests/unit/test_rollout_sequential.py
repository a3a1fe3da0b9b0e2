"""Confidence sequences keep their false-alarm rate however often the gate looks; fixed
intervals checked at every event do not. Checked by simulation, plus the formula's pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.sequential import ConfidenceSequence
from safeloop.services.rollout.intervals import difference_interval

ALPHA = 0.05
RUNS = 400
EVENTS_PER_ARM = 3_000
# Comparisons start once each arm has this many events (as a plan's min_sample_per_step).
FIRST_LOOK = 100
BASE_RATE = 0.02


def _cumulative_errors(rng: np.random.Generator, rate: float) -> np.ndarray:
    return np.cumsum(rng.random((RUNS, EVENTS_PER_ARM)) < rate, axis=1).astype(np.float64)


def _sequence_alarms(canary_rate: float, seed: int) -> np.ndarray:
    """Per run, whether the sequence's lower bound ever exceeded 0 (one look per event pair)."""
    rng = np.random.default_rng(seed)
    canary, production = _cumulative_errors(rng, canary_rate), _cumulative_errors(rng, BASE_RATE)
    trials = np.broadcast_to(np.arange(1, EVENTS_PER_ARM + 1, dtype=np.float64), canary.shape)
    sequence = ConfidenceSequence.for_plan(ALPHA, FIRST_LOOK)
    lows, _ = sequence.proportion_differences(canary, trials, production, trials)
    return (lows[:, FIRST_LOOK - 1 :] > 0.0).any(axis=1)


def _fixed_interval_alarms(seed: int, every: int) -> np.ndarray:
    """The same A/A runs judged by the fixed 95 % Newcombe interval, looking every `every`."""
    rng = np.random.default_rng(seed)
    canary, production = _cumulative_errors(rng, BASE_RATE), _cumulative_errors(rng, BASE_RATE)
    alarms = np.zeros(RUNS, dtype=bool)
    for run in range(RUNS):
        for n in range(FIRST_LOOK, EVENTS_PER_ARM + 1, every):
            low, _ = difference_interval(
                int(canary[run, n - 1]), n, int(production[run, n - 1]), n, 1.0 - ALPHA
            )
            if low > 0.0:
                alarms[run] = True
                break
    return alarms


def test_a_a_runs_checked_at_every_event_stay_under_the_false_alarm_rate() -> None:
    rate = _sequence_alarms(BASE_RATE, seed=7).mean()
    # 400 runs: the Monte Carlo error of a rate near 5 % is about 1 %; the guarantee is <= 5 %.
    assert rate <= ALPHA


def test_fixed_intervals_raise_far_more_false_alarms_even_looked_at_less_often() -> None:
    fixed = _fixed_interval_alarms(seed=7, every=20).mean()
    sequential = _sequence_alarms(BASE_RATE, seed=7).mean()
    # 146 looks (every 20th event) at a 95 % interval: false alarms in several times alpha of
    # the runs (13.75 % here, against 0.25 % for the sequence looking at every event).
    assert fixed > 2 * ALPHA
    assert fixed > 3 * sequential


def test_a_b_runs_with_a_real_effect_are_detected() -> None:
    # Canary fails 5 % of requests against production's 2 %: caught within 3,000 per arm
    # (4 % against 2 % is caught in 88 % of runs, 3.5 % in 56 %).
    assert _sequence_alarms(0.05, seed=11).mean() >= 0.95


def test_rho_makes_the_sequence_tightest_at_the_plan_sample() -> None:
    sequence = ConfidenceSequence.for_plan(ALPHA, 500)
    target = np.array([500 / 0.5])
    at_target = sequence.half_widths(target)[0]
    others = [
        ConfidenceSequence(ALPHA, sequence.rho_squared * math.exp(k / 10)).half_widths(target)[0]
        for k in range(-30, 31)
    ]
    assert at_target <= min(others) * (1 + 1e-9)


def test_sequence_is_wider_than_one_fixed_interval_and_narrows_with_data() -> None:
    sequence = ConfidenceSequence.for_plan(ALPHA, 500)
    low, high = sequence.proportion_difference(40, 1_000, 20, 1_000)
    fixed_low, fixed_high = difference_interval(40, 1_000, 20, 1_000, 1.0 - ALPHA)
    assert low < fixed_low and high > fixed_high
    assert low < 0.02 < high
    more_low, more_high = sequence.proportion_difference(400, 10_000, 200, 10_000)
    assert more_high - more_low < (high - low) / 2
    assert more_low > 0.0  # the same 2-point gap, now certain


def test_no_data_means_no_bound_and_bad_counts_are_refused() -> None:
    assert ConfidenceSequence.for_plan(ALPHA, 100).proportion_difference(0, 0, 3, 10) == (
        -math.inf,
        math.inf,
    )
    with pytest.raises(InvalidInputError):
        ConfidenceSequence.for_plan(ALPHA, 100).proportion_difference(5, 3, 0, 10)
    with pytest.raises(InvalidInputError):
        ConfidenceSequence.for_plan(1.0, 100)


def _latency_alarms(slowdown: float, seed: int) -> np.ndarray:
    """Log-normal latencies (median 20 ms), the canary `slowdown` times slower; per run, whether
    the sequence on mean log-latency ever put the canary above production (every event pair)."""
    rng = np.random.default_rng(seed)
    shape = (RUNS, EVENTS_PER_ARM)
    canary = np.log(20.0 * slowdown) + 0.8 * rng.standard_normal(shape)
    production = np.log(20.0) + 0.8 * rng.standard_normal(shape)
    n = np.broadcast_to(np.arange(1, EVENTS_PER_ARM + 1, dtype=np.float64), shape)

    def running(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.cumsum(values, axis=1) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = (np.cumsum(values**2, axis=1) - n * mean**2) / (n - 1)
        return mean, np.nan_to_num(variance)

    sequence = ConfidenceSequence.for_plan(ALPHA, FIRST_LOOK, reference_variance=1.0)
    lows, _ = sequence.mean_differences((n, *running(canary)), (n, *running(production)))
    return (lows[:, FIRST_LOOK - 1 :] > 0.0).any(axis=1)


def test_latency_a_a_runs_checked_at_every_event_stay_under_the_false_alarm_rate() -> None:
    assert _latency_alarms(1.0, seed=5).mean() <= ALPHA


def test_a_canary_a_fifth_slower_is_detected() -> None:
    assert _latency_alarms(1.2, seed=6).mean() >= 0.95
