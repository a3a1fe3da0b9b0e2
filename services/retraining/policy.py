"""Thresholds that turn drift, performance and model age into a retraining urgency."""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.services.metrics.drift import PSI_MAJOR, PSI_MODERATE
from safeloop.services.retraining.exceptions import RetrainingPolicyError

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RetrainingPolicy:
    """When a model should be retrained and how urgently."""

    moderate_psi: float = PSI_MODERATE
    major_psi: float = PSI_MAJOR
    # Relative drop from the baseline performance that alone makes retraining critical.
    critical_drop: float = 0.05
    # A smaller drop: elevated alone, critical when drift corroborates it.
    warning_drop: float = 0.02
    # Fewer live values or labels than these are not trusted.
    min_drift_sample: int = 500
    min_labelled: int = 200
    # The schedule floor: older models are retrained routinely. None: no schedule.
    max_age_ms: int | None = 30 * DAY_MS

    def __post_init__(self) -> None:
        if not 0 < self.moderate_psi <= self.major_psi:
            raise RetrainingPolicyError("need 0 < moderate_psi <= major_psi")
        if not 0 < self.warning_drop <= self.critical_drop:
            raise RetrainingPolicyError("need 0 < warning_drop <= critical_drop")
        if self.min_drift_sample < 1 or self.min_labelled < 1:
            raise RetrainingPolicyError("minimum samples must be at least 1")
        if self.max_age_ms is not None and self.max_age_ms <= 0:
            raise RetrainingPolicyError("max_age_ms must be positive")
