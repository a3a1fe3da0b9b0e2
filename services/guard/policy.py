"""The thresholds a canary must stay within; a None threshold switches its rule off."""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.services.guard.exceptions import PolicyError
from safeloop.services.metrics.performance import PerformanceMetric


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Rollback thresholds; each is breached only when exceeded (equal is within)."""

    # Server-side failures (5xx, timeouts, model exceptions) per request.
    max_error_rate: float | None = 0.05
    # Client errors (4xx) are the callers' doing and production sees the same callers: a canary
    # breaches only when its 4xx rate exceeds production's by more than this margin...
    max_client_error_excess: float | None = 0.05
    # ...and by at least this many standard errors (one-sided two-proportion z-test), so that
    # two equally noisy samples do not trip the rule on a fluctuation.
    client_error_min_z: float = 3.0
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
        for name in ("max_error_rate", "max_client_error_excess"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise PolicyError(f"{name} must be in [0, 1], got {value}")
        if self.client_error_min_z < 0:
            raise PolicyError(f"client_error_min_z must be >= 0, got {self.client_error_min_z}")
        for name in ("max_p99_latency_ms", "max_p99_latency_ratio", "max_performance_drop"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise PolicyError(f"{name} must be positive, got {value}")
        if self.min_requests < 1 or self.min_labelled < 1:
            raise PolicyError("min_requests and min_labelled must be at least 1")
