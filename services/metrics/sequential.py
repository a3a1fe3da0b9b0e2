"""Always-valid comparisons: confidence sequences for the difference of two means.

A fixed-sample interval (Wilson, Newcombe) is valid for one look at the data; a gate looks every
few seconds, and each look is another chance of a false alarm. A confidence sequence covers the
true difference at every sample size at once with probability 1 - alpha, so the false-alarm
rate holds however often the guard looks (tests/unit/test_rollout_sequential.py simulates both).
The rollout gates and the central guard's per-segment rules share it.

The boundary is Robbins' normal mixture: for a sum S with variance V, the mixture martingale
(1 + rho^2 V)^(-1/2) exp(rho^2 S^2 / (2 (1 + rho^2 V))) exceeds 1/alpha with probability at most
alpha ever (Ville's inequality), which bounds |S| for all V at once. It is applied, through the
central limit theorem, to the difference of two sample means with plug-in variances
(an asymptotic confidence sequence, Waudby-Smith et al. 2021); `rho` only sets where the
sequence is tightest and is fixed from the plan, never from the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics.exceptions import InvalidInputError

FloatArray = npt.NDArray[np.float64]
# One arm at many looks: counts, running means, running sample variances.
Moments = tuple[FloatArray, FloatArray, FloatArray]
# The same from any numbers (e.g. integer counts).
MomentsLike = tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike]

# Bernoulli variance is at most 1/4: the target information of a plan uses it, so `rho` is
# fixed before any data is seen (a data-chosen rho would void the guarantee).
_MAX_BERNOULLI_VARIANCE = 0.25


@dataclass(frozen=True, slots=True)
class MeanSummary:
    """One arm of a continuous metric: how many values, their mean and sample variance."""

    count: int
    mean: float
    variance: float

    @classmethod
    def of(cls, values: FloatArray) -> MeanSummary:
        data = np.asarray(values, dtype=np.float64)
        data = data[np.isfinite(data)]
        if data.shape[0] == 0:
            return cls(0, 0.0, 0.0)
        variance = float(data.var(ddof=1)) if data.shape[0] > 1 else 0.0
        return cls(int(data.shape[0]), float(data.mean()), variance)


@dataclass(frozen=True, slots=True)
class ConfidenceSequence:
    """Two-sided, level 1 - alpha, tightest around a plan's per-step sample size."""

    alpha: float
    rho_squared: float

    @classmethod
    def for_plan(
        cls,
        alpha: float,
        target_per_arm: int,
        reference_variance: float = _MAX_BERNOULLI_VARIANCE,
    ) -> ConfidenceSequence:
        """Tightest when each arm has about `target_per_arm` observations of that variance."""
        if not 0.0 < alpha < 1.0:
            raise InvalidInputError(f"alpha must be in (0, 1), got {alpha}")
        if target_per_arm < 1 or reference_variance <= 0.0:
            raise InvalidInputError(f"target_per_arm must be at least 1, got {target_per_arm}")
        # Information of a difference of two means is 1 / (var_a / n + var_b / n).
        target_information = target_per_arm / (2.0 * reference_variance)
        log_term = -2.0 * np.log(alpha)
        # The rho^2 that makes the half-width smallest at the target information.
        return cls(alpha, float((log_term + np.log(log_term + 1.0)) / target_information))

    def half_widths(self, information: FloatArray) -> FloatArray:
        """Half-widths for estimates whose variance is 1 / `information` (inf without any)."""
        info = np.asarray(information, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = 1.0 + self.rho_squared * info
            radius_of_sum = np.sqrt(
                2.0 * spread / self.rho_squared * np.log(np.sqrt(spread) / self.alpha)
            )
            widths = radius_of_sum / info
        return np.where(info > 0.0, widths, np.inf)

    def proportion_differences(
        self,
        successes_a: FloatArray,
        trials_a: FloatArray,
        successes_b: FloatArray,
        trials_b: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """Bounds on p_a - p_b at many looks (cumulative counts); unbounded until both have data."""
        estimate, information = _proportion_difference(successes_a, trials_a, successes_b, trials_b)
        half = self.half_widths(information)
        both = information > 0.0
        return np.where(both, estimate - half, -np.inf), np.where(both, estimate + half, np.inf)

    def p_values(
        self, estimate: FloatArray, information: FloatArray, tolerance: float
    ) -> FloatArray:
        """Anytime-valid p-values against "the difference is at most `tolerance`".

        1 / (the mixture martingale at the excess over the tolerance): by Ville's inequality it
        falls to alpha or below, ever, with probability at most alpha under that hypothesis,
        and it does exactly when this sequence's lower bound at level alpha clears the
        tolerance. Valid p-values at every look are what Holm's correction needs.
        """
        info = np.asarray(information, dtype=np.float64)
        excess = np.maximum(np.asarray(estimate, dtype=np.float64) - tolerance, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            spread = 1.0 + self.rho_squared * info
            sums = excess * info
            log_p = 0.5 * np.log(spread) - self.rho_squared * sums * sums / (2.0 * spread)
        return np.where(info > 0.0, np.minimum(1.0, np.exp(np.minimum(log_p, 0.0))), 1.0)

    def proportion_p_values(
        self,
        successes_a: npt.ArrayLike,
        trials_a: npt.ArrayLike,
        successes_b: npt.ArrayLike,
        trials_b: npt.ArrayLike,
        tolerance: float,
    ) -> FloatArray:
        """`p_values` for p_a - p_b <= tolerance, from counts (1 until both arms have data)."""
        estimate, information = _proportion_difference(successes_a, trials_a, successes_b, trials_b)
        return self.p_values(np.nan_to_num(estimate), information, tolerance)

    def proportion_excess_p_values(
        self, successes: npt.ArrayLike, trials: npt.ArrayLike, tolerance: float
    ) -> FloatArray:
        """`p_values` for "one arm's rate is at most `tolerance`", from its counts (1 without
        trials): one canary's error rate against a fixed limit."""
        x, n = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            estimate = x / n
            # The same pseudo-counts as two arms use (Agresti-Caffo): no claim of certainty.
            smooth = (x + 1.0) / (n + 2.0)
            information = np.where(n > 0, n / (smooth * (1.0 - smooth)), 0.0)
        return self.p_values(np.nan_to_num(estimate), information, tolerance)

    def mean_p_values(self, a: MomentsLike, b: MomentsLike, tolerance: float) -> FloatArray:
        """`p_values` for mean_a - mean_b <= tolerance (1 until each arm has two values)."""
        estimate, information = _mean_difference(a, b)
        return self.p_values(np.nan_to_num(estimate), information, tolerance)

    def mean_differences(self, a: Moments, b: Moments) -> tuple[FloatArray, FloatArray]:
        """Bounds on mean_a - mean_b at many looks (each arm: counts, means, variances);
        unbounded until each arm has two values."""
        estimate, information = _mean_difference(a, b)
        half = self.half_widths(information)
        usable = information > 0.0
        return np.where(usable, estimate - half, -np.inf), np.where(usable, estimate + half, np.inf)

    def mean_difference(self, a: MeanSummary, b: MeanSummary) -> tuple[float, float]:
        """Bounds on mean(a) - mean(b) for one look, from sample means and variances."""
        lows, highs = self.mean_differences(
            (np.array([a.count]), np.array([a.mean]), np.array([a.variance])),
            (np.array([b.count]), np.array([b.mean]), np.array([b.variance])),
        )
        return float(lows[0]), float(highs[0])

    def proportion_difference(
        self, successes_a: int, trials_a: int, successes_b: int, trials_b: int
    ) -> tuple[float, float]:
        """Bounds on p_a - p_b for one look (e.g. canary errors minus production errors)."""
        for successes, trials in ((successes_a, trials_a), (successes_b, trials_b)):
            if trials < 0 or not 0 <= successes <= trials:
                raise InvalidInputError(f"need 0 <= successes <= trials, got {successes}/{trials}")
        lows, highs = self.proportion_differences(
            np.array([successes_a]),
            np.array([trials_a]),
            np.array([successes_b]),
            np.array([trials_b]),
        )
        return float(lows[0]), float(highs[0])


def _proportion_difference(
    successes_a: npt.ArrayLike,
    trials_a: npt.ArrayLike,
    successes_b: npt.ArrayLike,
    trials_b: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """p_a - p_b and its information (1 / variance; 0 until both arms have data)."""
    x_a, n_a = np.asarray(successes_a, np.float64), np.asarray(trials_a, np.float64)
    x_b, n_b = np.asarray(successes_b, np.float64), np.asarray(trials_b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = x_a / n_a - x_b / n_b
        # Variances from one pseudo-success and one pseudo-failure per arm (Agresti-Caffo),
        # so an arm without a single error yet does not claim certainty.
        smooth_a = (x_a + 1.0) / (n_a + 2.0)
        smooth_b = (x_b + 1.0) / (n_b + 2.0)
        variance = smooth_a * (1.0 - smooth_a) / n_a + smooth_b * (1.0 - smooth_b) / n_b
        information = np.where((n_a > 0) & (n_b > 0), 1.0 / variance, 0.0)
    return estimate, information


def _mean_difference(a: MomentsLike, b: MomentsLike) -> tuple[FloatArray, FloatArray]:
    """mean_a - mean_b and its information (0 until each arm has two values and a spread)."""
    (count_a, mean_a, variance_a), (count_b, mean_b, variance_b) = a, b
    n_a, n_b = np.asarray(count_a, np.float64), np.asarray(count_b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.asarray(variance_a) / n_a + np.asarray(variance_b) / n_b
        estimate = np.asarray(mean_a, np.float64) - np.asarray(mean_b, np.float64)
        usable = (n_a >= 2) & (n_b >= 2) & (variance > 0.0)
        information = np.where(usable, 1.0 / variance, 0.0)
    return estimate, information
