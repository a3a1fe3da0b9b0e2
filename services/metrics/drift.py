"""Drift of live values against a training `Baseline`: PSI, KS, Jensen-Shannon, Wasserstein.

All four read the same binned summary (counts per baseline bin), so a consumer can keep running
bin counts instead of raw values. They are bin-resolution estimates: KS compares the CDFs at the
bin edges only, and Wasserstein puts each bin's live mass at the bin's training mean, so it
understates a shift that stays inside bins or runs past the outermost ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray
from safeloop.services.metrics.baseline import Baseline, ModelBaseline
from safeloop.services.metrics.exceptions import InvalidInputError

PSI_FLOOR = 1e-4
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25


class DriftBand(StrEnum):
    """The usual PSI reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major."""

    STABLE = "stable"
    MODERATE = "moderate"
    MAJOR = "major"


def drift_band(psi: float) -> DriftBand:
    """The band of a PSI value; 0.1 and 0.25 themselves are moderate."""
    if psi < PSI_MODERATE:
        return DriftBand.STABLE
    return DriftBand.MODERATE if psi <= PSI_MAJOR else DriftBand.MAJOR


@dataclass(frozen=True, slots=True)
class DriftMetrics:
    """One variable's drift; the distances are None when there were no live values."""

    sample_count: int
    missing_fraction: float | None
    psi: float | None
    band: DriftBand | None
    ks: float | None
    js_divergence: float | None
    # In the variable's own unit.
    wasserstein: float | None


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, floor: float = PSI_FLOOR) -> float:
    """Population stability index: sum (a - e) ln(a / e), each fraction floored at `floor`."""
    e = np.maximum(_fractions(expected, "expected"), floor)
    a = np.maximum(_fractions(actual, "actual"), floor)
    if e.shape != a.shape:
        raise InvalidInputError(f"expected has {e.shape[0]} bins, actual {a.shape[0]}")
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Largest gap between the two cumulative distributions at the bin edges."""
    e, a = _pair(expected, actual)
    return float(np.max(np.abs(np.cumsum(e) - np.cumsum(a))))


def js_divergence(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Jensen-Shannon divergence in bits (0 identical .. 1 disjoint); empty bins need no floor."""
    e, a = _pair(expected, actual)
    middle = (e + a) / 2.0
    return float(max(0.5 * _kl_bits(e, middle) + 0.5 * _kl_bits(a, middle), 0.0))


def wasserstein(baseline: Baseline, actual: npt.ArrayLike) -> float:
    """Earth mover's distance, in the variable's unit, with each bin's mass at its training mean.

    For distributions on the same ordered points this is sum |F_expected - F_actual| * step.
    """
    e, a = _pair(baseline.expected, actual)
    gap = np.abs(np.cumsum(e)[:-1] - np.cumsum(a)[:-1])
    return float(gap @ np.diff(baseline.bin_means))


def drift_from_counts(
    baseline: Baseline, counts: npt.ArrayLike, missing_count: int = 0
) -> DriftMetrics:
    """Drift of live values summarised as counts per baseline bin (plus missing values)."""
    bin_counts = np.asarray(counts, dtype=np.float64)
    if bin_counts.shape != (baseline.n_bins,):
        raise InvalidInputError(f"counts must have {baseline.n_bins} bins, got {bin_counts.shape}")
    present = int(bin_counts.sum())
    total = present + missing_count
    missing = missing_count / total if total else None
    if present == 0:
        return DriftMetrics(0, missing, None, None, None, None, None)
    actual = bin_counts / present
    value = psi(baseline.expected, actual)
    return DriftMetrics(
        sample_count=present,
        missing_fraction=missing,
        psi=value,
        band=drift_band(value),
        ks=ks_statistic(baseline.expected, actual),
        js_divergence=js_divergence(baseline.expected, actual),
        wasserstein=wasserstein(baseline, actual),
    )


def drift_of_sample(baseline: Baseline, values: npt.ArrayLike) -> DriftMetrics:
    """Drift of raw live values (NaN counts as missing)."""
    counts, missing = baseline.bin_counts(values)
    return drift_from_counts(baseline, counts, missing)


@dataclass(frozen=True, slots=True)
class ModelDrift:
    """Drift of every baselined feature and of the score, with the headline figures."""

    features: Mapping[str, DriftMetrics]
    score: DriftMetrics | None
    # Over features and score; None when nothing had live values.
    max_psi: float | None
    # Features (and "__score__") outside the stable band, worst first.
    drifted: tuple[str, ...]


SCORE_NAME = "__score__"


def model_drift(
    baseline: ModelBaseline,
    features: Mapping[str, npt.ArrayLike],
    score: npt.ArrayLike | None = None,
) -> ModelDrift:
    """Drift of live feature columns (and scores) against a model's baselines.

    Features without a baseline are ignored; baselined features absent from `features` are left
    out of the result rather than guessed.
    """
    per_feature = {
        name: drift_of_sample(feature_baseline, features[name])
        for name, feature_baseline in baseline.features.items()
        if name in features
    }
    score_drift = (
        None if score is None or baseline.score is None else drift_of_sample(baseline.score, score)
    )
    judged = dict(per_feature)
    if score_drift is not None:
        judged[SCORE_NAME] = score_drift
    values = {name: metrics.psi for name, metrics in judged.items() if metrics.psi is not None}
    drifted = sorted(
        (name for name, value in values.items() if drift_band(value) is not DriftBand.STABLE),
        key=lambda name: -values[name],
    )
    return ModelDrift(
        features=per_feature,
        score=score_drift,
        max_psi=max(values.values()) if values else None,
        drifted=tuple(drifted),
    )


def _fractions(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] == 0:
        raise InvalidInputError(f"{name} must be a non-empty 1-D array of bin fractions")
    return array


def _pair(expected: npt.ArrayLike, actual: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    e, a = _fractions(expected, "expected"), _fractions(actual, "actual")
    if e.shape != a.shape:
        raise InvalidInputError(f"expected has {e.shape[0]} bins, actual {a.shape[0]}")
    return e, a


def _kl_bits(p: FloatArray, q: FloatArray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))
