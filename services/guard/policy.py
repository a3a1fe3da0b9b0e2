"""The thresholds a canary must stay within; a None threshold switches its rule off."""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.services.guard.exceptions import PolicyError
from safeloop.services.metrics.performance import PerformanceMetric


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Rollback thresholds; each is breached only when exceeded (equal is within)."""

    max_error_rate: float | None = 0.05
    max_p99_latency_ms: float | None = 1_000.0
    # Canary p99 / production p99.
    max_p99_latency_ratio: float | None = 2.0
    # Relative drop of `performance_metric` from production's (0.05 = 5 % worse).
    max_performance_drop: float | None = 0.05
    performance_metric: PerformanceMetric = PerformanceMetric.ACCURACY
    # Below these, a side's figures are too noisy to act on.
    min_requests: int = 100
    min_labelled: int = 100

    def __post_init__(self) -> None:
        if self.max_error_rate is not None and not 0.0 <= self.max_error_rate <= 1.0:
            raise PolicyError(f"max_error_rate must be in [0, 1], got {self.max_error_rate}")
        for name in ("max_p99_latency_ms", "max_p99_latency_ratio", "max_performance_drop"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise PolicyError(f"{name} must be positive, got {value}")
        if self.min_requests < 1 or self.min_labelled < 1:
            raise PolicyError("min_requests and min_labelled must be at least 1")
