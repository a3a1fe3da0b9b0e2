"""Training baselines for drift: quantile bin edges and expected fractions, computed once.

The model store calls `Baseline.from_training_sample` (or `ModelBaseline.from_training_data`)
at training time and stores `to_dict()` as JSON beside the model; serving-time drift only ever
reads it back, raw reference data is never needed again.

Bin i of a baseline with interior edges e_1 < ... < e_{k-1} holds e_{i} < v <= e_{i+1}, with
e_0 = -inf and e_k = +inf, so live values outside the training range land in the outer bins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import FloatArray, IntArray, as_float
from safeloop.services.metrics.exceptions import BaselineError

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True, eq=False)
class Baseline:
    """One variable's training distribution as quantile bins."""

    # Interior edges, strictly increasing; k bins have k - 1 edges.
    edges: FloatArray
    # Fraction of the training sample in each bin; sums to 1.
    expected: FloatArray
    # Mean training value in each bin: where Wasserstein places the bin's mass.
    bin_means: FloatArray
    # Training minimum and maximum: the extent of the outer bins for density.
    low: float
    high: float
    sample_count: int
    missing_fraction: float

    def __post_init__(self) -> None:
        if self.expected.ndim != 1 or self.edges.shape[0] != self.expected.shape[0] - 1:
            raise BaselineError("a baseline with k fractions needs k - 1 edges")
        if self.edges.shape[0] and not bool(np.all(np.diff(self.edges) > 0)):
            raise BaselineError("baseline edges must be strictly increasing")
        if not np.isclose(self.expected.sum(), 1.0) or bool(np.any(self.expected < 0)):
            raise BaselineError("baseline fractions must be non-negative and sum to 1")
        if self.bin_means.shape != self.expected.shape:
            raise BaselineError("a baseline needs one bin mean per bin")
        if not self.low <= self.high:
            raise BaselineError(f"baseline low {self.low} exceeds high {self.high}")

    @property
    def n_bins(self) -> int:
        return int(self.expected.shape[0])

    @classmethod
    def from_training_sample(cls, values: npt.ArrayLike, n_bins: int = 10) -> Baseline:
        """Quantile bins of the finite training values (NaN counts as missing).

        Ties (discrete features) merge quantiles, so a baseline may have fewer than `n_bins`
        bins; every bin holds some training mass, except the guard bins of a constant feature.
        """
        if n_bins < 2:
            raise BaselineError(f"n_bins must be at least 2, got {n_bins}")
        sample = as_float(values, "values")
        finite = sample[np.isfinite(sample)]
        if finite.shape[0] == 0:
            raise BaselineError("the training sample has no finite values")
        low, high = float(finite.min()), float(finite.max())
        levels = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
        # Sample values as edges keep discrete features on their own values.
        edges = np.unique(np.quantile(finite, levels, method="inverted_cdf"))
        edges = edges[edges < high]
        if edges.shape[0] == 0:
            # A constant: bins just below, at, and above it, so any change is visible.
            edges = np.array([np.nextafter(low, -np.inf), low])
        index = np.searchsorted(edges, finite, side="left")
        counts = np.bincount(index, minlength=edges.shape[0] + 1)
        sums = np.bincount(index, weights=finite, minlength=edges.shape[0] + 1)
        # An empty (guard) bin of a constant has no mean: its edge nearest the data stands in.
        nearest_edge = np.clip(np.concatenate((edges[:1], edges)), low, high)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / counts, nearest_edge)
        return cls(
            edges=edges.astype(np.float64),
            expected=counts / finite.shape[0],
            bin_means=means,
            low=low,
            high=high,
            sample_count=int(sample.shape[0]),
            missing_fraction=1.0 - finite.shape[0] / sample.shape[0],
        )

    def bin_index(self, values: npt.ArrayLike) -> IntArray:
        """Bin of each value (NaN values land in the last bin: filter them first)."""
        return np.searchsorted(self.edges, as_float(values, "values"), side="left").astype(np.int64)

    def bin_counts(self, values: npt.ArrayLike) -> tuple[IntArray, int]:
        """Counts per bin of the finite values, and how many values were missing (NaN)."""
        sample = as_float(values, "values")
        present = ~np.isnan(sample)
        counts = np.bincount(self.bin_index(sample[present]), minlength=self.n_bins)
        return counts.astype(np.int64), int(sample.shape[0] - np.count_nonzero(present))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "format": FORMAT_VERSION,
            "edges": self.edges.tolist(),
            "expected": self.expected.tolist(),
            "bin_means": self.bin_means.tolist(),
            "low": self.low,
            "high": self.high,
            "sample_count": self.sample_count,
            "missing_fraction": self.missing_fraction,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Read back `to_dict()` output; anything malformed raises `BaselineError`."""
        if data.get("format") != FORMAT_VERSION:
            raise BaselineError(f"unsupported baseline format {data.get('format')!r}")
        try:
            return cls(
                edges=np.asarray(data["edges"], dtype=np.float64).reshape(-1),
                expected=np.asarray(data["expected"], dtype=np.float64).reshape(-1),
                bin_means=np.asarray(data["bin_means"], dtype=np.float64).reshape(-1),
                low=float(data["low"]),
                high=float(data["high"]),
                sample_count=int(data["sample_count"]),
                missing_fraction=float(data["missing_fraction"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise BaselineError(f"malformed baseline: {error!r}") from error


@dataclass(frozen=True, slots=True, eq=False)
class ModelBaseline:
    """The baselines of one model version: one per feature, and one for the score."""

    features: Mapping[str, Baseline]
    score: Baseline | None = None
    # Regressors: the holdout residuals (truth - prediction), for residual drift.
    residual: Baseline | None = None

    @classmethod
    def from_training_data(
        cls,
        features: Mapping[str, npt.ArrayLike],
        score: npt.ArrayLike | None = None,
        n_bins: int = 10,
        residual: npt.ArrayLike | None = None,
    ) -> ModelBaseline:
        """Baselines of every training feature column (and the training scores, if given)."""
        return cls(
            features={
                name: Baseline.from_training_sample(values, n_bins)
                for name, values in features.items()
            },
            score=None if score is None else Baseline.from_training_sample(score, n_bins),
            residual=None if residual is None else Baseline.from_training_sample(residual, n_bins),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `residual` only when present, so older readers see no change."""
        data: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "features": {name: baseline.to_dict() for name, baseline in self.features.items()},
            "score": None if self.score is None else self.score.to_dict(),
        }
        if self.residual is not None:
            data["residual"] = self.residual.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelBaseline:
        """Read back `to_dict()` output; anything malformed raises `BaselineError`."""
        if data.get("format") != FORMAT_VERSION:
            raise BaselineError(f"unsupported baseline format {data.get('format')!r}")
        features = data.get("features")
        if not isinstance(features, Mapping):
            raise BaselineError("a model baseline needs a 'features' object")
        score = data.get("score")
        residual = data.get("residual")
        return cls(
            features={str(name): Baseline.from_dict(item) for name, item in features.items()},
            score=None if score is None else Baseline.from_dict(score),
            residual=None if residual is None else Baseline.from_dict(residual),
        )
