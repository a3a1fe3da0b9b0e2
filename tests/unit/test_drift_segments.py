"""Drift per segment: rows for each segment with the minimum sample, capped per model, from
windows whose size does not grow with the number of segment values."""

from __future__ import annotations

import numpy as np
import pytest

from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.tables import DRIFT_METRICS, MetricRow
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.metrics.drift import drift_of_sample
from safeloop.services.metrics.drift_tracker import DriftTracker
from safeloop.services.metrics.model_source import ModelInfo
from safeloop.services.metrics.performance import Task

RNG_SEED = 4


class Models:
    """One classifier whose training features were standard normal, scores uniform."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        baseline = ModelBaseline.from_training_data(
            {"age": rng.normal(0, 1, 5_000), "income": rng.normal(0, 1, 5_000)},
            rng.random(5_000),
        )
        self.info = ModelInfo(Task.CLASSIFICATION, baseline, None, None, 0)

    def get(self, model_name: str, version: str) -> ModelInfo | None:
        return self.info


def _events(counts: dict[str, int], shifted: str, seed: int = RNG_SEED) -> list[PredictionEvent]:
    """`counts[country]` predictions each; `shifted`'s ages moved by two standard deviations."""
    rng = np.random.default_rng(seed)
    events = []
    for country, n in counts.items():
        ages = rng.normal(2.0 if country == shifted else 0.0, 1.0, n)
        for i in range(n):
            events.append(
                PredictionEvent(
                    f"{country}-{seed}-{i}", "churn", "v1", 1_000 + i,
                    {"age": float(ages[i]), "income": float(rng.normal())},
                    float(rng.random()), None, 5.0, Route.PRODUCTION, "r", "k", 1,
                    segments={"country": country, "device": "ios" if i % 2 else "web"},
                )
            )  # fmt: skip
    return events


def _psi(rows: list[MetricRow], segment: tuple[str, str], feature: str) -> float:
    (row,) = [
        r
        for r in rows
        if (r.segment_key, r.segment_value) == segment
        and r.feature == feature
        and r.metric == "psi"
    ]
    return row.value


def test_a_segment_drifting_alone_gets_its_own_rows() -> None:
    models = Models()
    tracker = DriftTracker(models, 5_000, segment_min_sample=100, max_segments=10)
    events = _events({"US": 1_500, "DE": 300, "FR": 60}, shifted="DE")
    tracker.add(events)
    drift, _ = tracker.rows()
    segments = {(r.segment_key, r.segment_value) for r in drift}
    # FR has 60 rows, short of the minimum: no rows of its own.
    assert segments == {
        ("", ""),
        ("country", "US"),
        ("country", "DE"),
        ("device", "ios"),
        ("device", "web"),
    }
    de_ages = np.array([e.features["age"] for e in events if e.segments["country"] == "DE"])
    expected = drift_of_sample(models.info.baseline.features["age"], de_ages).psi
    assert _psi(drift, ("country", "DE"), "age") == pytest.approx(expected)
    assert _psi(drift, ("country", "DE"), "age") > 0.25
    assert _psi(drift, ("country", "US"), "age") < 0.1
    # DE is 16 % of traffic: the whole population drifts far less than DE alone.
    assert _psi(drift, ("", ""), "age") < _psi(drift, ("country", "DE"), "age")
    de_rows = [r for r in drift if r.segment_value == "DE"]
    assert {r.sample_count for r in de_rows if r.feature == "age"} == {300}
    assert all(r.labels["window"] == "count_5000" for r in de_rows)


def test_the_cap_keeps_the_largest_segments_per_model() -> None:
    tracker = DriftTracker(Models(), 5_000, segment_min_sample=100, max_segments=2)
    tracker.add(_events({"US": 1_500, "DE": 300, "FR": 200}, shifted="DE"))
    drift, _ = tracker.rows()
    kept = {(r.segment_key, r.segment_value) for r in drift if r.segment_key}
    # device=ios and device=web have 1,000 each, US 1,500: DE and FR are left out.
    assert kept == {("country", "US"), ("device", "ios")}


def test_segment_windows_hold_at_most_window_rows_per_segment_key() -> None:
    tracker = DriftTracker(Models(), 1_000, segment_min_sample=100, max_segments=1_000)
    for seed in range(5):
        # 40 countries of 100 rows each per batch: many values, the same two windows.
        counts = {f"c{i:02d}": 100 for i in range(40)}
        tracker.add(_events(counts, shifted="c00", seed=seed))
    windows = tracker._segment_windows
    assert len(windows) == 2
    assert all(len(window) == 1_000 for window in windows.values())
    drift, _ = tracker.rows()
    # The last 1,000 rows hold the 10 last countries of the last batch, 100 rows each.
    countries = {r.segment_value for r in drift if r.segment_key == "country"}
    assert countries == {f"c{i:02d}" for i in range(30, 40)}


def test_drift_rows_carry_the_segment_into_the_table() -> None:
    row = MetricRow("churn", "v1", "production", 0, 1, "psi", 0.3, 300, {}, "age", "country", "DE")
    (converted,) = DRIFT_METRICS.rows([row])
    values = dict(zip(DRIFT_METRICS.columns, converted, strict=True))
    assert (values["feature"], values["segment_key"], values["segment_value"]) == (
        "age",
        "country",
        "DE",
    )
