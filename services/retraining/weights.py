"""Recency weights for training: exponential decay by event age with a configurable half-life."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from safeloop.services.retraining.exceptions import RetrainingError


def recency_weights(
    event_ms: npt.ArrayLike, now_ms: int, half_life_ms: float, normalise: bool = False
) -> npt.NDArray[np.float64]:
    """0.5 ** (age / half_life_ms): 1 for an event at `now_ms`, 0.5 one half-life earlier.

    Events stamped after `now_ms` (clock skew) weigh 1. With `normalise` the weights average 1,
    so a weighted loss keeps the scale of an unweighted one.
    """
    if not half_life_ms > 0:
        raise RetrainingError(f"half_life_ms must be positive, got {half_life_ms}")
    stamps = np.asarray(event_ms, dtype=np.float64)
    age_ms = np.maximum(now_ms - stamps, 0.0)
    weights: npt.NDArray[np.float64] = np.exp2(-age_ms / half_life_ms)
    if normalise and weights.size:
        weights = weights / weights.mean()
    return weights
