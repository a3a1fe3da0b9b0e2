"""What the monitor needs from the model store per version (a `ModelInfoSource`), cached."""

from __future__ import annotations

import logging
import time

from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.model_source import ModelInfo
from safeloop.services.metrics.performance import PerformanceMetric, Task
from safeloop.services.models.exceptions import ModelError
from safeloop.services.models.store_protocol import ModelStoreProtocol

logger = logging.getLogger(__name__)

MISS_RETRY_S = 30.0


class ModelInfoCache:
    """`get` reads metadata.json once per version; a missing version is retried after a while."""

    def __init__(self, store: ModelStoreProtocol | None) -> None:
        self._store = store
        self._found: dict[tuple[str, str], ModelInfo] = {}
        self._missing: dict[tuple[str, str], float] = {}

    def get(self, model_name: str, version: str) -> ModelInfo | None:
        key = (model_name, version)
        found = self._found.get(key)
        if found is not None or self._store is None:
            return found
        missed_at = self._missing.get(key)
        if missed_at is not None and time.monotonic() - missed_at < MISS_RETRY_S:
            return None
        try:
            metadata = self._store.load_metadata(model_name, version)
        except (ModelError, ValueError) as exc:
            # Said once per version: a version that never had metadata is retried for good.
            level = logging.DEBUG if missed_at is not None else logging.WARNING
            logger.log(level, "no metadata for %s %s (no drift or baseline): %s", *key, exc)
            self._missing[key] = time.monotonic()
            return None
        if self._missing.pop(key, None) is not None:
            logger.info("metadata for %s %s found after all", *key)
        try:
            metric: PerformanceMetric | None = PerformanceMetric(metadata.primary_metric)
        except ValueError:
            metric = None
        info = ModelInfo(
            task=Task(metadata.task.value),
            baseline=metadata.baseline,
            primary_metric=metric,
            baseline_performance=metadata.primary_metric_value if metric is not None else None,
            trained_at_ms=metadata.created_at_ms,
        )
        self._found[key] = info
        return info

    def residual_baseline_of(self, model_name: str, version: str) -> Baseline | None:
        """A regressor's training residual baseline; None when unknown or never recorded."""
        info = self.get(model_name, version)
        return info.baseline.residual if info is not None else None

    def task_of(self, model_name: str, version: str) -> Task:
        """The version's task; classification when the store does not know the version."""
        info = self.get(model_name, version)
        return info.task if info is not None else Task.CLASSIFICATION
