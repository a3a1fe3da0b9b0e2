"""Latency (or any delay) percentiles p50/p95/p99 over a window.

Linear interpolation between order statistics, as numpy's default `percentile`, but from one
`np.partition` for all three quantiles: about 3x faster than `np.percentile` on replica-sized
windows (1k-10k rows), which matters on the guard's fast path. NaN values are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import as_float

_QUANTILES = np.array([0.50, 0.95, 0.99])


@dataclass(frozen=True, slots=True)
class Percentiles:
    """p50/p95/p99 of a window in the unit of its input; None when the window is empty."""

    p50: float | None
    p95: float | None
    p99: float | None


EMPTY = Percentiles(None, None, None)


def percentiles(values: npt.ArrayLike) -> Percentiles:
    """p50, p95 and p99 of the finite values; all None when there are none."""
    array = as_float(values, "values")
    if array.shape[0] == 0:
        return EMPTY
    if not bool(np.isfinite(array).all()):
        array = array[np.isfinite(array)]
        if array.shape[0] == 0:
            return EMPTY
    rank = _QUANTILES * (array.shape[0] - 1)
    below = rank.astype(np.intp)
    above = np.minimum(below + 1, array.shape[0] - 1)
    ordered = np.partition(array, np.union1d(below, above))
    low, high = ordered[below], ordered[above]
    p50, p95, p99 = low + (high - low) * (rank - below)
    return Percentiles(float(p50), float(p95), float(p99))
