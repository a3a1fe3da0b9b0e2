"""Labelling-queue selection: uncertainty, novelty against the baseline, ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.active_learning import (
    SelectionReason,
    select_for_labelling,
    typicality,
    uncertainty_of,
)
from safeloop.services.metrics.baseline import Baseline, ModelBaseline
from safeloop.services.metrics.exceptions import InvalidInputError


def test_uncertainty_from_top_class_probability() -> None:
    np.testing.assert_allclose(uncertainty_of([1.0, 0.75, 0.5]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(uncertainty_of([1 / 3, 1.0], n_classes=3), [1.0, 0.0])
    with pytest.raises(InvalidInputError):
        uncertainty_of([0.5], n_classes=1)


def test_typicality_by_hand() -> None:
    # Bins (-inf,1] (1,2] (2,10]: fractions 0.4, 0.4, 0.2 over widths 1, 1, 8 from low 0.
    sample = [0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.0, 5.0, 10.0]
    baseline = Baseline(
        edges=np.array([1.0, 2.0]),
        expected=np.array([0.4, 0.4, 0.2]),
        bin_means=np.array([0.6, 1.9, 7.5]),
        low=min(sample),
        high=max(sample),
        sample_count=10,
        missing_fraction=0.0,
    )
    levels = typicality(baseline, [0.5, 0.7, 1.5, 6.0, 9.0, 11.0, -1.0, math.nan])
    # Densities 0.4, 0.4, 0.025: the sparse top bin is level 0.2, the dense ones level 1.
    # Beyond an outer bin's mean the level falls linearly to 0 at the training min/max:
    # 0.5 is 0.5/0.6 of the way from min 0 to mean 0.6; 9 is 1/2.5 from max 10 to mean 7.5.
    np.testing.assert_allclose(levels, [0.5 / 0.6, 1.0, 1.0, 0.2, 0.2 / 2.5, 0.0, 0.0, 1.0])


def test_queue_ranks_uncertain_and_novel_predictions() -> None:
    rng = np.random.default_rng(0)
    model = ModelBaseline.from_training_data({"x": rng.normal(size=5_000)})
    ids = ["sure", "unsure", "novel", "both"]
    confidence = [0.99, 0.55, 0.99, 0.6]
    features = {"x": np.array([0.0, 0.1, 9.0, 9.0])}
    queue = select_for_labelling(ids, confidence, 4, features=features, baseline=model)
    assert [c.prediction_id for c in queue] == ["both", "novel", "unsure", "sure"]
    by_id = {c.prediction_id: c for c in queue}
    assert by_id["novel"].reason is SelectionReason.OUT_OF_DISTRIBUTION
    assert by_id["novel"].novelty == 1.0
    assert by_id["novel"].rarest_feature == "x"
    assert by_id["unsure"].reason is SelectionReason.LOW_CONFIDENCE
    assert by_id["unsure"].uncertainty == pytest.approx(0.9)
    assert by_id["both"].priority == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)


def test_in_range_tail_values_gain_some_novelty() -> None:
    rng = np.random.default_rng(1)
    model = ModelBaseline.from_training_data({"x": rng.normal(size=10_000)})
    high = model.features["x"].high
    queue = select_for_labelling(
        ["centre", "tail", "edge"],
        [1.0, 1.0, 1.0],
        3,
        features={"x": np.array([0.0, high - 0.3, high])},
        baseline=model,
    )
    novelty = {c.prediction_id: c.novelty for c in queue}
    assert novelty["centre"] == 0.0
    assert 0.0 < novelty["tail"] < 1.0
    assert novelty["edge"] == 1.0


def test_queue_without_baseline_is_uncertainty_only_and_limited() -> None:
    queue = select_for_labelling(["a", "b", "c"], [0.9, 0.5, math.nan], 2)
    assert [c.prediction_id for c in queue] == ["b", "a"]
    assert all(c.novelty == 0.0 and c.rarest_feature is None for c in queue)
    assert select_for_labelling(["a"], [0.5], 0) == []
    assert select_for_labelling([], [], 5) == []


def test_queue_ties_keep_arrival_order() -> None:
    queue = select_for_labelling(["a", "b", "c"], [0.7, 0.7, 0.7], 3)
    assert [c.prediction_id for c in queue] == ["a", "b", "c"]


def test_queue_refuses_bad_inputs() -> None:
    with pytest.raises(InvalidInputError):
        select_for_labelling(["a"], [0.5], 1, uncertainty_weight=1.5)
    with pytest.raises(InvalidInputError):
        select_for_labelling(["a"], [0.5], 1, novelty_level=0.0)
    with pytest.raises(InvalidInputError):
        select_for_labelling(["a", "b"], [0.5], 1)
