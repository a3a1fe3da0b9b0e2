"""Combine drift, performance drop and model age into one `RetrainingDecision`.

| performance drop (enough labels) | drift (max PSI)     | urgency  |
|----------------------------------|---------------------|----------|
| >= critical_drop                 | any                 | critical |
| >= warning_drop                  | >= moderate_psi     | critical |
| >= warning_drop                  | below moderate      | elevated |
| below warning, or no labels      | > major_psi         | elevated |
| below warning, or no labels      | >= moderate_psi     | routine  |
| otherwise, model older than max_age_ms                 || routine  |
| otherwise                                              || none     |

Drift alone is an early warning (elevated at most); a performance drop confirms it; the
schedule is the floor. `should_retrain` is urgency != none.
"""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.schemas.events import RetrainingDecision, Urgency
from safeloop.services.metrics.drift import SCORE_NAME, ModelDrift
from safeloop.services.retraining.policy import RetrainingPolicy


@dataclass(frozen=True, slots=True)
class _DriftView:
    max_psi: float | None
    drifted: list[str]


def decide(
    policy: RetrainingPolicy,
    *,
    model_name: str,
    model_version: str,
    now_ms: int,
    drift: ModelDrift | None,
    performance_drop: float | None,
    labelled_count: int,
    last_trained_ms: int | None,
    decision_id: str | None = None,
) -> RetrainingDecision:
    """Decide for one model version; `performance_drop` is relative (0.05 = 5 % worse).

    Drift figures with fewer than `min_drift_sample` live values, and a drop measured on fewer
    than `min_labelled` labels, are ignored. An unknown training time sets no schedule floor.
    """
    seen = _trusted_drift(policy, drift)
    drop = performance_drop if labelled_count >= policy.min_labelled else None
    reasons: list[str] = []
    urgency = Urgency.NONE
    drifting = seen.max_psi is not None and seen.max_psi >= policy.moderate_psi
    major = seen.max_psi is not None and seen.max_psi > policy.major_psi
    if drop is not None and drop >= policy.critical_drop:
        urgency = Urgency.CRITICAL
        reasons.append(f"performance dropped {drop:.1%} (critical at {policy.critical_drop:.1%})")
    elif drop is not None and drop >= policy.warning_drop:
        urgency = Urgency.CRITICAL if drifting else Urgency.ELEVATED
        reasons.append(f"performance dropped {drop:.1%} (warning at {policy.warning_drop:.1%})")
    if drifting and seen.max_psi is not None:
        if urgency is Urgency.NONE:
            urgency = Urgency.ELEVATED if major else Urgency.ROUTINE
        band = "major" if major else "moderate"
        reasons.append(f"{band} drift, max PSI {seen.max_psi:.3f} on {', '.join(seen.drifted)}")
    if (
        urgency is Urgency.NONE
        and policy.max_age_ms is not None
        and last_trained_ms is not None
        and now_ms - last_trained_ms > policy.max_age_ms
    ):
        urgency = Urgency.ROUTINE
        age_days = (now_ms - last_trained_ms) / 86_400_000
        reasons.append(f"scheduled: last trained {age_days:.1f} days ago")
    if labelled_count < policy.min_labelled:
        reasons.append(f"performance not judged ({labelled_count} of {policy.min_labelled} labels)")
    if urgency is Urgency.NONE and not reasons:
        reasons.append("no drift, no performance drop, not due")
    return RetrainingDecision(
        decision_id=decision_id or f"{model_name}:{model_version}:{now_ms}",
        model_name=model_name,
        model_version=model_version,
        timestamp=now_ms,
        should_retrain=urgency is not Urgency.NONE,
        urgency=urgency,
        reason="; ".join(reasons),
        max_psi=seen.max_psi,
        performance_drop=performance_drop,
        drifted_features=seen.drifted,
    )


def _trusted_drift(policy: RetrainingPolicy, drift: ModelDrift | None) -> _DriftView:
    if drift is None:
        return _DriftView(None, [])
    candidates = dict(drift.features)
    if drift.score is not None:
        candidates[SCORE_NAME] = drift.score
    values = {
        name: metrics.psi
        for name, metrics in candidates.items()
        if metrics.psi is not None and metrics.sample_count >= policy.min_drift_sample
    }
    drifted = sorted(
        (name for name, value in values.items() if value >= policy.moderate_psi),
        key=lambda name: -values[name],
    )
    return _DriftView(max(values.values()) if values else None, drifted)
