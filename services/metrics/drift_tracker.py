"""Drift and the confidence-based estimate from `predictions`, against each version's baseline.

Per (model, version, route) the last N predictions' baselined features and scores are kept in
a count window; a snapshot turns each into PSI/KS/JS/Wasserstein rows (drift_metrics) and,
for classifiers, the CBPE figures of those unlabelled predictions (performance_metrics).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.drift import ModelDrift, model_drift
from safeloop.services.metrics.estimation import estimate_performance
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.model_source import ModelInfoSource
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.rows import RowContext, drift_rows, estimate_rows
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, CountWindow

SCORE_COLUMN = "__score__"


class DriftTracker:
    """Count windows of baselined values; versions without a baseline are skipped (counted)."""

    def __init__(self, models: ModelInfoSource, window_rows: int) -> None:
        self._models = models
        self.window_rows = window_rows
        self._windows: dict[WindowKey, CountWindow] = {}
        self._features: dict[WindowKey, tuple[str, ...]] = {}
        self.unbaselined = 0

    def add(self, events: Sequence[PredictionEvent]) -> None:
        grouped: dict[WindowKey, list[PredictionEvent]] = defaultdict(list)
        for event in events:
            if event.error is None:
                grouped[WindowKey(event.model_name, event.model_version, event.route)].append(event)
        for key, group in grouped.items():
            window = self._window(key)
            if window is None:
                self.unbaselined += len(group)
                continue
            window.append(self._columns(key, group))

    def drift(self, key: WindowKey) -> ModelDrift | None:
        """The key's current drift, None without a baseline or predictions."""
        window = self._windows.get(key)
        info = self._models.get(key.model_name, key.model_version)
        if window is None or info is None or len(window) == 0:
            return None
        view = window.view()
        features = {name: view[name] for name in self._features[key]}
        return model_drift(info.baseline, features, view[SCORE_COLUMN])

    def tracked(self) -> list[WindowKey]:
        return list(self._windows)

    def rows(self) -> tuple[list[MetricRow], list[MetricRow]]:
        """(drift rows, CBPE estimate rows) of every window with predictions."""
        drift: list[MetricRow] = []
        estimates: list[MetricRow] = []
        label = {"window": f"count_{self.window_rows}"}
        for key, window in self._windows.items():
            if len(window) == 0:
                continue
            view = window.view()
            stamps = view[TIMESTAMP_COLUMN]
            context = RowContext(key, int(stamps.min()), int(stamps.max()), label)
            found = self.drift(key)
            if found is not None:
                drift += drift_rows(context, found)
            info = self._models.get(key.model_name, key.model_version)
            if info is not None and info.task is Task.CLASSIFICATION and key.route != Route.SHADOW:
                scores = view[SCORE_COLUMN]
                scores = np.clip(scores[~np.isnan(scores)], 0.0, 1.0)
                estimates += estimate_rows(context, estimate_performance(scores))
        return drift, estimates

    def _window(self, key: WindowKey) -> CountWindow | None:
        window = self._windows.get(key)
        if window is not None:
            return window
        info = self._models.get(key.model_name, key.model_version)
        if info is None:
            return None
        names = tuple(sorted(info.baseline.features))
        columns: dict[str, type[np.generic]] = {name: np.float64 for name in (*names, SCORE_COLUMN)}
        columns[TIMESTAMP_COLUMN] = np.int64
        self._features[key] = names
        window = self._windows[key] = CountWindow(self.window_rows, columns)
        return window

    def _columns(
        self, key: WindowKey, events: list[PredictionEvent]
    ) -> dict[str, npt.NDArray[Any]]:
        count = len(events)
        nan = math.nan
        batch: dict[str, npt.NDArray[Any]] = {
            TIMESTAMP_COLUMN: np.fromiter((e.timestamp for e in events), np.int64, count),
            SCORE_COLUMN: np.fromiter(
                (nan if e.prediction is None else e.prediction for e in events), np.float64, count
            ),
        }
        for name in self._features[key]:
            batch[name] = np.fromiter(
                (e.features.get(name, nan) for e in events), np.float64, count
            )
        return batch
