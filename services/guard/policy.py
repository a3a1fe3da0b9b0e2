"""The thresholds a canary must stay within; a None threshold switches its rule off."""

from __future__ import annotations

from dataclasses import dataclass

from safeloop.services.guard.exceptions import PolicyError
from safeloop.services.metrics.multiple_comparisons import Correction
from safeloop.services.metrics.performance import PerformanceMetric, Task

# The figures each task computes; a metric outside its task's set is never judged for it.
TASK_METRICS: dict[Task, frozenset[PerformanceMetric]] = {
    Task.CLASSIFICATION: frozenset(
        {
            PerformanceMetric.ACCURACY,
            PerformanceMetric.PRECISION,
            PerformanceMetric.RECALL,
            PerformanceMetric.F1,
            PerformanceMetric.ROC_AUC,
            PerformanceMetric.LOG_LOSS,
            PerformanceMetric.BRIER_SCORE,
        }
    ),
    Task.MULTICLASS: frozenset(
        {
            PerformanceMetric.ACCURACY,
            PerformanceMetric.MACRO_F1,
            PerformanceMetric.MICRO_F1,
            PerformanceMetric.WEIGHTED_F1,
            PerformanceMetric.MACRO_PRECISION,
            PerformanceMetric.MACRO_RECALL,
            PerformanceMetric.LOG_LOSS,
            PerformanceMetric.BRIER_SCORE,
        }
    ),
    Task.REGRESSION: frozenset(
        {PerformanceMetric.MAE, PerformanceMetric.RMSE, PerformanceMetric.R2}
    ),
}


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
    # Multi-class and regression models are judged on their own figure: a macro-F1 drop and an
    # MAE rise by default. None: `performance_metric` if it is one of the task's, else the default.
    multiclass_metric: PerformanceMetric | None = PerformanceMetric.MACRO_F1
    regression_metric: PerformanceMetric | None = None
    # Below these, a side's figures are too noisy to act on.
    min_requests: int = 100
    min_labelled: int = 100
    # Per segment (a model's segment_keys) the same rules are judged as one-sided anytime-valid
    # tests; the chance that any within-threshold segment is called in breach is held at
    # `segment_alpha` over the segments by `segment_correction`.
    segment_alpha: float = 0.05
    segment_correction: Correction = Correction.HOLM

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
        if not 0.0 < self.segment_alpha < 1.0:
            raise PolicyError(f"segment_alpha must be in (0, 1), got {self.segment_alpha}")
        if self.min_requests < 1 or self.min_labelled < 1:
            raise PolicyError("min_requests and min_labelled must be at least 1")
        for task, metric in (
            (Task.MULTICLASS, self.multiclass_metric),
            (Task.REGRESSION, self.regression_metric),
        ):
            if metric is not None and metric not in TASK_METRICS[task]:
                raise PolicyError(f"{metric.value} is not a {task.value} metric")

    def metric_for(self, task: Task) -> PerformanceMetric:
        """The figure a canary of this task is judged on."""
        chosen = {
            Task.CLASSIFICATION: self.performance_metric,
            Task.MULTICLASS: self.multiclass_metric,
            Task.REGRESSION: self.regression_metric,
        }[task]
        if chosen is not None:
            return chosen
        if self.performance_metric in TASK_METRICS[task]:
            return self.performance_metric
        return _TASK_DEFAULTS[task]


_TASK_DEFAULTS = {
    Task.CLASSIFICATION: PerformanceMetric.ACCURACY,
    Task.MULTICLASS: PerformanceMetric.MACRO_F1,
    Task.REGRESSION: PerformanceMetric.MAE,
}
