"""Reliability bins, expected calibration error, and a histogram-binning calibrator.

Bins split [0, 1] into `n_bins` equal widths: bin i holds edges[i] <= p < edges[i+1], the last
bin also holds p == 1. Scores are P(y=1), so this is the reliability diagram of the positive
class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray, IntArray, as_binary, as_float, same_length
from safeloop.services.metrics.exceptions import InvalidInputError


@dataclass(frozen=True, slots=True, eq=False)
class ReliabilityBins:
    """Per bin: rows, mean predicted score and observed positive rate (NaN for empty bins)."""

    edges: FloatArray
    counts: IntArray
    mean_predicted: FloatArray
    observed_rate: FloatArray

    @property
    def expected_calibration_error(self) -> float | None:
        """Sum over bins of (bin share of rows) * |observed rate - mean predicted|."""
        total = int(self.counts.sum())
        if total == 0:
            return None
        filled = self.counts > 0
        gaps = np.abs(self.observed_rate[filled] - self.mean_predicted[filled])
        return float(self.counts[filled] @ gaps / total)


def bin_index(scores: FloatArray, edges: FloatArray) -> IntArray:
    """Bin of each score for equal-width `edges` over [0, 1]; scores outside are clamped."""
    index = np.searchsorted(edges, scores, side="right") - 1
    return np.clip(index, 0, edges.shape[0] - 2).astype(np.int64)


def reliability_bins(
    y_true: npt.ArrayLike, score: npt.ArrayLike, n_bins: int = 10
) -> ReliabilityBins:
    """Reliability diagram of binary labels against scores P(y=1)."""
    if n_bins < 1:
        raise InvalidInputError(f"n_bins must be at least 1, got {n_bins}")
    labels = as_binary(y_true, "y_true")
    scores = as_float(score, "score")
    same_length("y_true", labels, "score", scores)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = bin_index(scores, edges)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    score_sums = np.bincount(index, weights=scores, minlength=n_bins)
    positive_sums = np.bincount(index, weights=labels, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(counts > 0, score_sums / counts, np.nan)
        observed_rate = np.where(counts > 0, positive_sums / counts, np.nan)
    return ReliabilityBins(edges, counts, mean_predicted, observed_rate)


def expected_calibration_error(
    y_true: npt.ArrayLike, score: npt.ArrayLike, n_bins: int = 10
) -> float | None:
    """ECE over `n_bins` equal-width bins; None for an empty window."""
    return reliability_bins(y_true, score, n_bins).expected_calibration_error


@dataclass(frozen=True, slots=True, eq=False)
class HistogramCalibrator:
    """Maps a raw score to the positive rate observed in its bin on labelled reference data.

    Fit once on labelled data (e.g. the validation set at training time) and store with the
    model; bins with fewer than `min_count` reference rows leave scores unchanged.
    """

    edges: FloatArray
    rates: FloatArray

    @classmethod
    def fit(
        cls, y_true: npt.ArrayLike, score: npt.ArrayLike, n_bins: int = 10, min_count: int = 1
    ) -> HistogramCalibrator:
        bins = reliability_bins(y_true, score, n_bins)
        rates = np.where(bins.counts >= max(min_count, 1), bins.observed_rate, np.nan)
        return cls(bins.edges, rates)

    def apply(self, score: npt.ArrayLike) -> FloatArray:
        """Calibrated P(y=1) for each raw score."""
        scores = as_float(score, "score")
        mapped = self.rates[bin_index(scores, self.edges)]
        return np.where(np.isnan(mapped), scores, mapped)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; empty bins are null."""
        return {
            "edges": self.edges.tolist(),
            "rates": [None if np.isnan(rate) else float(rate) for rate in self.rates],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistogramCalibrator:
        try:
            edges = np.asarray(data["edges"], dtype=np.float64)
            rates = np.asarray(
                [np.nan if rate is None else rate for rate in data["rates"]], dtype=np.float64
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"not a calibrator: {error}") from error
        if edges.ndim != 1 or rates.shape != (edges.shape[0] - 1,) or rates.shape[0] < 1:
            raise InvalidInputError("a calibrator needs n+1 edges and n rates")
        return cls(edges, rates)
