"""What the trackers need to know of a model version, and the source they ask for it.

The monitor's `ModelInfoCache` reads it from the model store; the core only sees this Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.metrics.performance import PerformanceMetric, Task


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A version's task, training baseline, and its holdout figure of the primary metric."""

    task: Task
    baseline: ModelBaseline
    # None when the store's primary metric is not one the metrics code computes.
    primary_metric: PerformanceMetric | None
    baseline_performance: float | None
    trained_at_ms: int


class ModelInfoSource(Protocol):
    """Gives a version's `ModelInfo`, None when it is not known (yet)."""

    def get(self, model_name: str, version: str) -> ModelInfo | None: ...
