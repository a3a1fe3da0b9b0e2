"""Classification metrics against brute-force references on hand-made and random cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeloop.services.metrics.classification import (
    brier_score,
    classification_metrics,
    confusion,
    log_loss,
    roc_auc,
)
from safeloop.services.metrics.exceptions import InvalidInputError


def auc_by_pairs(labels: list[int], scores: list[float]) -> float:
    """Every (positive, negative) pair: 1 if ranked right, 0.5 if tied."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def cells_by_loop(labels: list[int], scores: list[float], threshold: float) -> tuple[int, ...]:
    tp = fp = tn = fn = 0
    for y, s in zip(labels, scores, strict=True):
        predicted = 1 if s >= threshold else 0
        tp += predicted == 1 and y == 1
        fp += predicted == 1 and y == 0
        tn += predicted == 0 and y == 0
        fn += predicted == 0 and y == 1
    return tp, fp, tn, fn


def test_auc_by_hand() -> None:
    # Pairs (pos, neg): (0.9,0.1)=1 (0.9,0.4)=1 (0.4,0.1)=1 (0.4,0.4)=0.5 -> 3.5 / 4.
    assert roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)


def test_auc_all_tied_is_one_half() -> None:
    assert roc_auc([1, 0, 1, 0, 0], [0.3] * 5) == pytest.approx(0.5)


def test_auc_perfect_and_inverted() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_auc_matches_pair_counting_with_heavy_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 120))
    labels = rng.integers(0, 2, size)
    labels[0], labels[1] = 0, 1
    # One decimal: many ties, within and across classes.
    scores = np.round(np.clip(rng.normal(0.5 + 0.2 * labels, 0.25), 0, 1), 1)
    assert roc_auc(labels, scores) == pytest.approx(
        auc_by_pairs(labels.tolist(), scores.tolist()), abs=1e-12
    )


def test_auc_of_one_class_or_empty_window_is_none() -> None:
    assert roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert roc_auc([0, 0], [0.2, 0.5]) is None
    assert roc_auc([], []) is None


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_confusion_and_ratios_match_loops(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 50)
    scores = np.round(rng.random(50), 2)
    tp, fp, tn, fn = cells_by_loop(labels.tolist(), scores.tolist(), threshold)
    metrics = classification_metrics(labels, scores, threshold)
    assert metrics.confusion == confusion(labels, scores, threshold)
    assert (metrics.confusion.tp, metrics.confusion.fp) == (tp, fp)
    assert (metrics.confusion.tn, metrics.confusion.fn) == (tn, fn)
    assert metrics.correct_count == tp + tn
    assert metrics.accuracy == pytest.approx((tp + tn) / 50)
    if tp + fp:
        assert metrics.precision == pytest.approx(tp / (tp + fp))
    if tp + fn:
        assert metrics.recall == pytest.approx(tp / (tp + fn))
    if tp:
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        assert metrics.f1 == pytest.approx(2 * precision * recall / (precision + recall))


def test_score_equal_to_threshold_is_predicted_positive() -> None:
    cells = confusion([1, 0], [0.5, 0.5], 0.5)
    assert (cells.tp, cells.fp, cells.tn, cells.fn) == (1, 1, 0, 0)


def test_log_loss_and_brier_by_hand() -> None:
    labels = [1, 0, 1]
    scores = [0.8, 0.3, 0.5]
    expected = -(math.log(0.8) + math.log(0.7) + math.log(0.5)) / 3
    assert log_loss(labels, scores) == pytest.approx(expected)
    assert brier_score(labels, scores) == pytest.approx((0.04 + 0.09 + 0.25) / 3)


def test_log_loss_is_clipped_not_infinite() -> None:
    clipped_high = 1.0 - 1e-15  # as a double, 1 - clipped_high is not exactly 1e-15
    expected = (-math.log(1e-15) - math.log(1.0 - clipped_high)) / 2
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(expected, rel=1e-12)
    assert log_loss([1], [0.0], epsilon=1e-3) == pytest.approx(-math.log(1e-3))


def test_one_class_window_is_defined() -> None:
    metrics = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert metrics.accuracy == 1.0
    assert metrics.precision is None  # nothing predicted positive
    assert metrics.recall is None  # no positives
    assert metrics.f1 is None
    assert metrics.roc_auc is None
    assert metrics.log_loss is not None
    assert metrics.brier_score == pytest.approx((0.01 + 0.04 + 0.09) / 3)
    positives = classification_metrics([1, 1], [0.9, 0.2])
    assert positives.precision == 1.0
    assert positives.recall == 0.5
    assert positives.f1 == pytest.approx(2 / 3)
    assert positives.roc_auc is None


def test_all_wrong_window_has_f1_zero_not_none() -> None:
    metrics = classification_metrics([1, 0], [0.1, 0.9])
    assert metrics.f1 == 0.0
    assert metrics.precision == 0.0
    assert metrics.recall == 0.0


def test_empty_window_is_defined() -> None:
    metrics = classification_metrics([], [])
    assert metrics.count == 0
    assert metrics.positive_count == 0
    for value in (
        metrics.accuracy,
        metrics.precision,
        metrics.recall,
        metrics.f1,
        metrics.roc_auc,
        metrics.log_loss,
        metrics.brier_score,
        metrics.expected_calibration_error,
    ):
        assert value is None
    assert metrics.reliability.counts.sum() == 0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="0 and 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(InvalidInputError, match="NaN"):
        roc_auc([0, 1], [0.1, math.nan])
    with pytest.raises(InvalidInputError, match="rows"):
        log_loss([0, 1], [0.1])
    with pytest.raises(InvalidInputError, match="1-D"):
        brier_score([[0, 1]], [[0.1, 0.2]])
