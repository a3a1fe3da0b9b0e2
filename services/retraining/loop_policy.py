"""What the retraining loop accepts before a candidate reaches real traffic."""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.services.retraining.exceptions import RetrainingPolicyError


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    """Shadow bake, the agreement and estimated performance a candidate needs, and the gate."""

    # The candidate stays in shadow at least this long before it can be judged.
    shadow_bake_ms: int = 60_000
    # ... and is rejected if it has not answered `min_shadow_pairs` requests by then.
    shadow_deadline_ms: int = 900_000
    min_shadow_pairs: int = 200
    # Share of requests where candidate and production predict the same class (or agree
    # within the scorer's tolerance): a retrained model should differ, not be another model.
    min_agreement: float = 0.7
    # How much worse than production the candidate may score on the newest labelled rows
    # (in the model's primary metric, absolute) and still go to canary.
    performance_tolerance: float = 0.01
    # Hold an accepted candidate for `safeloop retrain approve` before its canary starts.
    approval: bool = False
    # After a run that ended without promotion (rolled back, rejected, failed), decisions about
    # the same production version start no run for this long: the same trainer on nearly the
    # same window would likely make the same candidate, and a canary would expose users again.
    retry_after_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if self.shadow_bake_ms < 0 or self.shadow_deadline_ms < self.shadow_bake_ms:
            raise RetrainingPolicyError("need 0 <= shadow_bake_ms <= shadow_deadline_ms")
        if self.min_shadow_pairs < 1:
            raise RetrainingPolicyError("min_shadow_pairs must be at least 1")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise RetrainingPolicyError("min_agreement must be in [0, 1]")
        if self.performance_tolerance < 0:
            raise RetrainingPolicyError("performance_tolerance cannot be negative")
        if self.retry_after_ms < 0:
            raise RetrainingPolicyError("retry_after_ms cannot be negative")
