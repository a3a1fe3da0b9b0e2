"""Shadow versus production comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.shadow import compare_shadow, pair_by_id

NAN = math.nan


def test_classification_agreement_and_accuracy_side_by_side() -> None:
    production = [0.9, 0.2, 0.6, 0.4, 0.7]
    shadow = [0.8, 0.6, 0.4, 0.3, NAN]
    truth = [1, 0, 1, NAN, 1]
    result = compare_shadow(Task.CLASSIFICATION, production, shadow, truth)
    assert result.pair_count == 4  # the shadow had no answer for the last request
    assert result.agreement_rate == pytest.approx(2 / 4)
    differences = [-0.1, 0.4, -0.2, -0.1]
    assert result.mean_difference == pytest.approx(sum(differences) / 4)
    assert result.abs_difference_max == pytest.approx(0.4)
    assert result.abs_difference_p50 == pytest.approx(0.15)
    assert result.labelled_count == 3
    # Labelled pairs: production right on all three, shadow on one (the first).
    assert result.production_performance == pytest.approx(1.0)
    assert result.shadow_performance == pytest.approx(1 / 3)


def test_regression_agreement_uses_tolerance_and_rmse() -> None:
    result = compare_shadow(
        Task.REGRESSION, [1.0, 2.0, 3.0], [1.05, 2.5, 3.0], [1.0, 2.0, 4.0], tolerance=0.1
    )
    assert result.agreement_rate == pytest.approx(2 / 3)
    assert result.production_performance == pytest.approx(math.sqrt(1 / 3))
    assert result.shadow_performance == pytest.approx(math.sqrt((0.0025 + 0.25 + 1) / 3))


def test_empty_comparison_is_defined() -> None:
    result = compare_shadow(Task.CLASSIFICATION, [], [])
    assert result.pair_count == 0
    assert result.agreement_rate is None
    assert result.abs_difference_p99 is None
    assert result.production_performance is None


def test_pair_by_id_aligns_rows() -> None:
    production_ids = ["a", "b", "c", "d"]
    shadow_ids = ["d", "x", "b"]
    prod_rows, shadow_rows = pair_by_id(production_ids, shadow_ids)
    pairs = sorted(
        (production_ids[p], shadow_ids[s]) for p, s in zip(prod_rows, shadow_rows, strict=True)
    )
    assert pairs == [("b", "b"), ("d", "d")]
    with pytest.raises(InvalidInputError):
        pair_by_id(["a", "a"], ["a"])
    empty = pair_by_id(np.array([], dtype=str), ["a"])
    assert empty[0].shape == (0,)
