"""Retraining urgency table, sample floors and the decision event."""

from __future__ import annotations

import pytest

from safeloop.schemas.events import Urgency
from safeloop.services.metrics.drift import SCORE_NAME, DriftMetrics, ModelDrift, drift_band
from safeloop.services.retraining.decision import decide
from safeloop.services.retraining.exceptions import RetrainingPolicyError
from safeloop.services.retraining.policy import DAY_MS, RetrainingPolicy

POLICY = RetrainingPolicy(
    critical_drop=0.05,
    warning_drop=0.02,
    min_drift_sample=100,
    min_labelled=50,
    max_age_ms=30 * DAY_MS,
)
NOW = 100 * DAY_MS


def metrics(value: float, sample: int = 1_000) -> DriftMetrics:
    return DriftMetrics(sample, 0.0, value, drift_band(value), 0.1, 0.01, 0.1)


def drift(**psi_by_feature: float) -> ModelDrift:
    features = {name: metrics(value) for name, value in psi_by_feature.items()}
    values = list(psi_by_feature.values())
    return ModelDrift(features, None, max(values) if values else None, ())


def run(
    max_psi: float | None, drop: float | None, age_days: float = 1.0, labelled: int = 1_000
) -> tuple[bool, Urgency, str]:
    decision = decide(
        POLICY,
        model_name="fraud",
        model_version="v3",
        now_ms=NOW,
        drift=None if max_psi is None else drift(amount=max_psi),
        performance_drop=drop,
        labelled_count=labelled,
        last_trained_ms=int(NOW - age_days * DAY_MS),
    )
    return decision.should_retrain, decision.urgency, decision.reason


@pytest.mark.parametrize(
    ("max_psi", "drop", "age_days", "urgency"),
    [
        # Performance alone.
        (0.01, 0.05, 1, Urgency.CRITICAL),
        (None, 0.20, 1, Urgency.CRITICAL),
        (0.01, 0.049, 1, Urgency.ELEVATED),
        (0.01, 0.02, 1, Urgency.ELEVATED),
        (0.01, 0.019, 1, Urgency.NONE),
        (0.01, -0.10, 1, Urgency.NONE),
        # Drift alone: an early warning, elevated at most.
        (0.10, None, 1, Urgency.ROUTINE),
        (0.25, None, 1, Urgency.ROUTINE),
        (0.2501, None, 1, Urgency.ELEVATED),
        (5.0, 0.0, 1, Urgency.ELEVATED),
        (0.0999, None, 1, Urgency.NONE),
        # A smaller drop confirmed by drift.
        (0.10, 0.02, 1, Urgency.CRITICAL),
        (0.40, 0.03, 1, Urgency.CRITICAL),
        # The schedule is the floor.
        (0.01, 0.0, 31, Urgency.ROUTINE),
        (0.01, 0.0, 30, Urgency.NONE),
        (None, None, 45, Urgency.ROUTINE),
        (0.30, None, 45, Urgency.ELEVATED),
        (0.01, 0.06, 45, Urgency.CRITICAL),
    ],
)
def test_urgency_table(
    max_psi: float | None, drop: float | None, age_days: float, urgency: Urgency
) -> None:
    should, got, reason = run(max_psi, drop, age_days)
    assert got is urgency, reason
    assert should is (urgency is not Urgency.NONE)


def test_reasons_name_what_decided() -> None:
    assert "performance dropped 6.0%" in run(0.01, 0.06)[2]
    assert "major drift, max PSI 0.400 on amount" in run(0.4, None)[2]
    assert "scheduled: last trained 45.0 days ago" in run(None, None, 45)[2]
    assert run(0.01, 0.0)[2] == "no drift, no performance drop, not due"


def test_too_few_labels_means_performance_is_not_judged() -> None:
    should, urgency, reason = run(0.01, 0.30, labelled=49)
    assert (should, urgency) == (False, Urgency.NONE)
    assert "performance not judged (49 of 50 labels)" in reason


def test_thin_drift_samples_are_ignored_and_features_ranked() -> None:
    report = ModelDrift(
        features={
            "thin": metrics(3.0, sample=99),
            "a": metrics(0.12),
            "b": metrics(0.5),
            "calm": metrics(0.01),
        },
        score=metrics(0.3),
        max_psi=3.0,
        drifted=(),
    )
    decision = decide(
        POLICY,
        model_name="fraud",
        model_version="v3",
        now_ms=NOW,
        drift=report,
        performance_drop=None,
        labelled_count=0,
        last_trained_ms=None,
        decision_id="d-1",
    )
    assert decision.max_psi == 0.5
    assert decision.drifted_features == ["b", SCORE_NAME, "a"]
    assert decision.urgency is Urgency.ELEVATED
    assert decision.decision_id == "d-1"
    assert (decision.model_name, decision.model_version, decision.timestamp) == ("fraud", "v3", NOW)
    assert decision.performance_drop is None


def test_unknown_training_time_sets_no_schedule_floor() -> None:
    decision = decide(
        POLICY,
        model_name="m",
        model_version="1",
        now_ms=NOW,
        drift=None,
        performance_drop=None,
        labelled_count=0,
        last_trained_ms=None,
    )
    assert decision.urgency is Urgency.NONE
    assert decision.decision_id == f"m:1:{NOW}"
    assert decision.max_psi is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"moderate_psi": 0.3, "major_psi": 0.2},
        {"warning_drop": 0.1, "critical_drop": 0.05},
        {"min_labelled": 0},
        {"max_age_ms": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(RetrainingPolicyError):
        RetrainingPolicy(**kwargs)  # type: ignore[arg-type]
