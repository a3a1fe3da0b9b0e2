"""Regression metrics against hand formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.regression import regression_metrics


def test_regression_metrics_by_hand() -> None:
    truth = [3.0, -0.5, 2.0, 7.0]
    predicted = [2.5, 0.0, 2.0, 8.0]
    metrics = regression_metrics(truth, predicted)
    assert metrics.count == 4
    assert metrics.mae == pytest.approx((0.5 + 0.5 + 0 + 1) / 4)
    assert metrics.rmse == pytest.approx(math.sqrt((0.25 + 0.25 + 0 + 1) / 4))
    mean = sum(truth) / 4
    total = sum((t - mean) ** 2 for t in truth)
    assert metrics.r2 == pytest.approx(1 - 1.5 / total)


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=40).tolist()
    predicted = (np.array(truth) + rng.normal(0, 0.3, 40)).tolist()
    metrics = regression_metrics(truth, predicted)
    errors = [t - p for t, p in zip(truth, predicted, strict=True)]
    mean = sum(truth) / len(truth)
    assert metrics.mae == pytest.approx(sum(abs(e) for e in errors) / 40)
    assert metrics.rmse == pytest.approx(math.sqrt(sum(e * e for e in errors) / 40))
    assert metrics.r2 == pytest.approx(
        1 - sum(e * e for e in errors) / sum((t - mean) ** 2 for t in truth)
    )


def test_constant_truth_has_no_r2() -> None:
    metrics = regression_metrics([2.0, 2.0], [1.0, 3.0])
    assert metrics.r2 is None
    assert metrics.mae == 1.0


def test_single_row_and_empty_window() -> None:
    assert regression_metrics([1.0], [1.5]).r2 is None
    empty = regression_metrics([], [])
    assert (empty.count, empty.mae, empty.rmse, empty.r2) == (0, None, None, None)


def test_regression_refuses_nan() -> None:
    with pytest.raises(InvalidInputError):
        regression_metrics([1.0], [math.nan])
