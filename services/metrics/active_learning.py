"""Active learning: rank unlabelled predictions worth a human label.

Two signals: uncertainty (the model's own confidence is low) and novelty (the inputs sit where
the training data was sparse). Novelty reads the training baselines: a value's typicality is the
training mass in bins no denser than its own (1 inside the densest bins, small in sparse bins,
0 outside the training range), a scale-free density level that needs no raw data. In the two
outer bins it falls linearly from the bin's training mean to the training min/max, so extreme
tails rank above the rest of their bin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray, as_float, same_length
from safeloop.services.metrics.baseline import Baseline, ModelBaseline
from safeloop.services.metrics.exceptions import InvalidInputError


class SelectionReason(StrEnum):
    """Which signal put a prediction in the queue."""

    LOW_CONFIDENCE = "low_confidence"
    OUT_OF_DISTRIBUTION = "out_of_distribution"


@dataclass(frozen=True, slots=True)
class LabellingCandidate:
    """One queue item, highest priority first in `select_for_labelling`'s answer."""

    prediction_id: str
    priority: float
    uncertainty: float
    novelty: float
    reason: SelectionReason
    # The feature least like the training data, when novelty was computed.
    rarest_feature: str | None


def typicality(baseline: Baseline, values: npt.ArrayLike) -> FloatArray:
    """Training mass in bins no denser than each value's bin; NaN values count as typical (1)."""
    sample = as_float(values, "values")
    points = np.maximum.accumulate(
        np.concatenate(([baseline.low], baseline.edges, [baseline.high]))
    )
    widths = np.diff(points)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.where(widths > 0, baseline.expected / widths, np.inf)
    density = np.where(baseline.expected > 0, density, 0.0)
    # level[i] = sum of expected[j] over bins j with density[j] <= density[i].
    order = np.argsort(density, kind="stable")
    cumulative = np.cumsum(baseline.expected[order])
    last_of_equal = np.searchsorted(density[order], density[order], side="right") - 1
    level = np.empty_like(density)
    level[order] = cumulative[last_of_equal]
    index = baseline.bin_index(np.nan_to_num(sample))
    result = level[index]
    first_mean, last_mean = baseline.bin_means[0], baseline.bin_means[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        below = (index == 0) & (sample < first_mean) & (first_mean > baseline.low)
        result = np.where(
            below, result * (sample - baseline.low) / (first_mean - baseline.low), result
        )
        last = baseline.n_bins - 1
        above = (index == last) & (sample > last_mean) & (baseline.high > last_mean)
        result = np.where(
            above, result * (baseline.high - sample) / (baseline.high - last_mean), result
        )
    outside = (sample < baseline.low) | (sample > baseline.high)
    result = np.where(outside, 0.0, result)
    return np.where(np.isnan(sample), 1.0, np.minimum(result, 1.0))


def uncertainty_of(confidence: npt.ArrayLike, n_classes: int = 2) -> FloatArray:
    """0 for a certain prediction, 1 for a uniform guess, from the top class's probability."""
    if n_classes < 2:
        raise InvalidInputError(f"n_classes must be at least 2, got {n_classes}")
    top = as_float(confidence, "confidence")
    return np.clip((1.0 - top) * n_classes / (n_classes - 1), 0.0, 1.0)


def select_for_labelling(
    prediction_ids: Sequence[str],
    confidence: npt.ArrayLike,
    limit: int,
    *,
    features: Mapping[str, npt.ArrayLike] | None = None,
    baseline: ModelBaseline | None = None,
    uncertainty_weight: float = 0.5,
    novelty_level: float = 0.1,
    n_classes: int = 2,
) -> list[LabellingCandidate]:
    """The `limit` predictions most worth labelling, by a weighted mix of the two signals.

    `confidence` is the top class's probability (NaN: unknown, uncertainty 0). A row's novelty is
    1 - (its least typical feature's typicality / `novelty_level`), floored at 0: typical rows
    score 0, rows outside the training range 1. Without features and a baseline, novelty is 0
    and the queue is purely uncertainty-ranked.
    """
    if not 0.0 <= uncertainty_weight <= 1.0:
        raise InvalidInputError(f"uncertainty_weight must be in [0, 1], got {uncertainty_weight}")
    if not 0.0 < novelty_level <= 1.0:
        raise InvalidInputError(f"novelty_level must be in (0, 1], got {novelty_level}")
    ids = np.asarray(prediction_ids, dtype=object)
    uncertainty = np.nan_to_num(uncertainty_of(confidence, n_classes), nan=0.0)
    same_length("prediction_ids", ids, "confidence", uncertainty)
    novelty = np.zeros_like(uncertainty)
    rarest: npt.NDArray[np.int64] | None = None
    names: list[str] = []
    if features is not None and baseline is not None:
        names = [name for name in baseline.features if name in features]
        if names:
            levels = np.vstack(
                [typicality(baseline.features[name], features[name]) for name in names]
            )
            if levels.shape[1] != ids.shape[0]:
                raise InvalidInputError("feature columns and prediction_ids differ in length")
            rarest = np.argmin(levels, axis=0)
            novelty = np.maximum(0.0, 1.0 - levels.min(axis=0) / novelty_level)
    weighted_uncertainty = uncertainty_weight * uncertainty
    weighted_novelty = (1.0 - uncertainty_weight) * novelty
    priority = weighted_uncertainty + weighted_novelty
    count = min(max(limit, 0), ids.shape[0])
    if count == 0:
        return []
    # Highest priority first; equal priorities keep arrival order so the queue is reproducible.
    chosen = np.lexsort((np.arange(ids.shape[0]), -priority))[:count]
    return [
        LabellingCandidate(
            prediction_id=str(ids[row]),
            priority=float(priority[row]),
            uncertainty=float(uncertainty[row]),
            novelty=float(novelty[row]),
            reason=(
                SelectionReason.LOW_CONFIDENCE
                if weighted_uncertainty[row] >= weighted_novelty[row]
                else SelectionReason.OUT_OF_DISTRIBUTION
            ),
            rarest_feature=names[int(rarest[row])] if rarest is not None else None,
        )
        for row in chosen
    ]
