"""Many segments, one false-alarm budget: family-wise corrections over a set of p-values.

Judging m segments each at level alpha raises the chance that at least one healthy segment
looks worse to nearly m * alpha. Holm's step-down procedure keeps that chance at most alpha
for any dependence between the tests and rejects everything Bonferroni (alpha / m each) does,
and sometimes more: sort the p-values ascending, reject p_(i) while p_(i) <= alpha / (m - i + 1)
(i from 1), stop at the first that is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from safeloop.services.metrics._arrays import BoolArray, FloatArray, as_float
from safeloop.services.metrics.exceptions import InvalidInputError


class Correction(StrEnum):
    """How the family-wise error rate over segments is held at alpha."""

    HOLM = "holm"
    BONFERRONI = "bonferroni"


def rejections(p_values: FloatArray, alpha: float, correction: Correction) -> BoolArray:
    """Which hypotheses are rejected with the family-wise error rate held at `alpha`.

    NaN p-values (tests that could not be run) are never rejected and do not count in m.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha must be in (0, 1), got {alpha}")
    p = as_float(p_values, "p_values")
    valid = ~np.isnan(p)
    m = int(np.count_nonzero(valid))
    rejected = np.zeros(p.shape[0], dtype=np.bool_)
    if m == 0:
        return rejected
    if correction is Correction.BONFERRONI:
        rejected[valid] = p[valid] <= alpha / m
        return rejected
    positions = np.flatnonzero(valid)
    order = positions[np.argsort(p[valid], kind="stable")]
    thresholds = alpha / (m - np.arange(m))
    passing = p[order] <= thresholds
    # Step-down: everything before the first p-value above its threshold is rejected.
    stop = m if bool(passing.all()) else int(np.argmin(passing))
    rejected[order[:stop]] = True
    return rejected


def adjusted_p_values(p_values: FloatArray, correction: Correction) -> FloatArray:
    """Adjusted p-values: reject at family level alpha exactly where they are <= alpha."""
    p = as_float(p_values, "p_values")
    out = np.full(p.shape[0], np.nan)
    valid = ~np.isnan(p)
    m = int(np.count_nonzero(valid))
    if m == 0:
        return out
    if correction is Correction.BONFERRONI:
        out[valid] = np.minimum(1.0, p[valid] * m)
        return out
    positions = np.flatnonzero(valid)
    order = positions[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


@dataclass(frozen=True, slots=True)
class FamilyOutcome:
    """Which members of a family are rejected, and every member's adjusted p-value."""

    rejected: BoolArray
    adjusted: FloatArray


def judge_family(
    p_values: FloatArray, eligible: BoolArray, alpha: float, correction: Correction
) -> FamilyOutcome:
    """Correct over every member of a family, eligible yet or not (the ineligible as p = 1):
    a segment must not get a looser threshold because others are still short of data."""
    chosen = np.asarray(eligible, dtype=np.bool_)
    p = np.where(chosen, as_float(p_values, "p_values"), 1.0)
    return FamilyOutcome(rejections(p, alpha, correction), adjusted_p_values(p, correction))
