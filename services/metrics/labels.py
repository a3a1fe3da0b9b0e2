"""Label coverage and label-delay percentiles: how much traffic has ground truth, how late."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import as_float
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.latency import Percentiles, percentiles


def label_coverage(labelled_count: int, predicted_count: int) -> float | None:
    """labelled / predicted; None before any prediction."""
    if labelled_count < 0 or predicted_count < 0:
        raise InvalidInputError("counts cannot be negative")
    return labelled_count / predicted_count if predicted_count else None


def label_delay_percentiles(label_delay_ms: npt.ArrayLike) -> Percentiles:
    """p50/p95/p99 of the delays of labelled rows; NaN (unlabelled) rows are skipped."""
    delays = as_float(label_delay_ms, "label_delay_ms")
    return percentiles(delays[~np.isnan(delays)])
