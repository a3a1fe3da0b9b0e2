"""Reliability bins, ECE and the histogram calibrator against loop references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from safeloop.services.metrics.calibration import (
    HistogramCalibrator,
    expected_calibration_error,
    reliability_bins,
)
from safeloop.services.metrics.exceptions import InvalidInputError


def bins_by_loop(labels: list[int], scores: list[float], n_bins: int) -> list[list[float]]:
    edges = np.linspace(0, 1, n_bins + 1).tolist()
    members: list[list[tuple[int, float]]] = [[] for _ in range(n_bins)]
    for y, s in zip(labels, scores, strict=True):
        for i in range(n_bins):
            last = i == n_bins - 1
            if edges[i] <= s < edges[i + 1] or (last and s == 1.0):
                members[i].append((y, s))
                break
    return [
        [float(len(m)), sum(s for _, s in m) / len(m), sum(y for y, _ in m) / len(m)]
        if m
        else [0.0, float("nan"), float("nan")]
        for m in members
    ]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
def test_reliability_bins_match_loop(seed: int, n_bins: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.random(80)
    scores[:3] = [0.0, 1.0, 0.5]
    labels = (rng.random(80) < scores).astype(int)
    bins = reliability_bins(labels, scores, n_bins)
    reference = bins_by_loop(labels.tolist(), scores.tolist(), n_bins)
    assert bins.counts.tolist() == [int(row[0]) for row in reference]
    np.testing.assert_allclose(bins.mean_predicted, [row[1] for row in reference])
    np.testing.assert_allclose(bins.observed_rate, [row[2] for row in reference])
    ece = sum(row[0] / 80 * abs(row[2] - row[1]) for row in reference if row[0])
    assert bins.expected_calibration_error == pytest.approx(ece)


def test_ece_by_hand() -> None:
    # Two bins of 0.5 width: [0.2, 0.4] with labels [0, 1]; [0.6, 0.8, 0.9] with [1, 1, 0].
    labels = [0, 1, 1, 1, 0]
    scores = [0.2, 0.4, 0.6, 0.8, 0.9]
    low_gap = abs(0.5 - 0.3)
    high_gap = abs(2 / 3 - (0.6 + 0.8 + 0.9) / 3)
    expected = 2 / 5 * low_gap + 3 / 5 * high_gap
    assert expected_calibration_error(labels, scores, 2) == pytest.approx(expected)


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    assert expected_calibration_error([0, 1, 1, 0], [0.5, 0.5, 0.5, 0.5], 10) == 0.0


def test_ece_of_empty_window_is_none() -> None:
    assert expected_calibration_error([], [], 10) is None


def test_reliability_refuses_zero_bins() -> None:
    with pytest.raises(InvalidInputError):
        reliability_bins([1], [0.5], 0)


def test_histogram_calibrator_maps_to_observed_rates() -> None:
    labels = [0, 0, 0, 1, 1, 1, 1, 0]
    scores = [0.1, 0.1, 0.15, 0.15, 0.9, 0.9, 0.95, 0.95]
    calibrator = HistogramCalibrator.fit(labels, scores, n_bins=2)
    np.testing.assert_allclose(calibrator.apply([0.05, 0.7]), [0.25, 0.75])
    restored = HistogramCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_allclose(restored.apply([0.05, 0.7]), [0.25, 0.75])


def test_histogram_calibrator_leaves_thin_bins_alone() -> None:
    calibrator = HistogramCalibrator.fit([1, 1, 0], [0.05, 0.08, 0.95], n_bins=10, min_count=2)
    # Bin 0 has two rows (rate 1); bin 9 has one (< min_count) and empty bins map to themselves.
    np.testing.assert_allclose(calibrator.apply([0.02, 0.97, 0.5]), [1.0, 0.97, 0.5])
    data = calibrator.to_dict()
    assert data["rates"][9] is None
    with pytest.raises(InvalidInputError):
        HistogramCalibrator.from_dict({"edges": [0, 1], "rates": []})
