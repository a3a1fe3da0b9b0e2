"""Drift and the confidence-based estimate from `predictions`, against each version's baseline.

Per (model, version, route) the last N predictions' baselined features and scores are kept in
a count window; a snapshot turns each into PSI/KS/JS/Wasserstein rows (drift_metrics) and,
for classifiers, the CBPE figures of those unlabelled predictions (performance_metrics).

Predictions carrying segments (a model's segment_keys) also go, per segment key, into a window
of the last N that carry it, with the value as a code: memory is bounded by the window size
and the number of segment keys, not by how many values appear. A snapshot writes drift rows for
each segment with at least `segment_min_sample` rows in its window (the `max_segments` largest
per model version and route), with `segment_key` / `segment_value` set.
"""

from __future__ import annotations

import dataclasses
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
from safeloop.services.metrics.segments import SEGMENT_COLUMN, Groups, SegmentCodes
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, Columns, CountWindow

SCORE_COLUMN = "__score__"


class DriftTracker:
    """Count windows of baselined values; versions without a baseline are skipped (counted)."""

    def __init__(
        self,
        models: ModelInfoSource,
        window_rows: int,
        *,
        segment_min_sample: int = 100,
        max_segments: int = 100,
    ) -> None:
        self._models = models
        self.window_rows = window_rows
        self.segment_min_sample = segment_min_sample
        self.max_segments = max_segments
        self._windows: dict[WindowKey, CountWindow] = {}
        self._features: dict[WindowKey, tuple[str, ...]] = {}
        # (key, segment key) -> the last rows carrying that segment key, values as codes.
        self._segment_windows: dict[tuple[WindowKey, str], CountWindow] = {}
        self._codes = SegmentCodes()
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
            batch = self._columns(key, group)
            window.append(batch)
            self._add_segments(key, group, batch)

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

    def segment_rows(self) -> list[MetricRow]:
        """Drift rows of every segment with `segment_min_sample` rows in its window, at most
        `max_segments` (the largest) per model version and route."""
        label = {"window": f"count_{self.window_rows}"}
        candidates: dict[WindowKey, list[tuple[int, str, str, Columns]]] = defaultdict(list)
        for (key, segment_key), window in self._segment_windows.items():
            if len(window) == 0:
                continue
            view = window.view()
            groups = Groups.of(view[SEGMENT_COLUMN])
            # Each group's rows as one slice (stable: arrival order kept).
            order = np.argsort(groups.index, kind="stable")
            starts = np.cumsum(groups.sizes) - groups.sizes
            for i in np.flatnonzero(groups.sizes >= self.segment_min_sample).tolist():
                rows = order[starts[i] : starts[i] + groups.sizes[i]]
                value = self._codes.pair(int(groups.codes[i]))[1]
                picked = {name: column[rows] for name, column in view.items()}
                candidates[key].append((int(groups.sizes[i]), segment_key, value, picked))
        out: list[MetricRow] = []
        for key, found in candidates.items():
            info = self._models.get(key.model_name, key.model_version)
            if info is None:
                continue
            # The largest segments first; ties by name, so the cap keeps the same ones.
            found.sort(key=lambda item: (-item[0], item[1], item[2]))
            for _, segment_key, value, view in found[: self.max_segments]:
                features = {name: view[name] for name in self._features[key]}
                drift = model_drift(info.baseline, features, view[SCORE_COLUMN])
                stamps = view[TIMESTAMP_COLUMN]
                context = RowContext(key, int(stamps.min()), int(stamps.max()), label)
                out += [
                    dataclasses.replace(row, segment_key=segment_key, segment_value=value)
                    for row in drift_rows(context, drift)
                ]
        return out

    def rows(self) -> tuple[list[MetricRow], list[MetricRow]]:
        """(drift rows, CBPE estimate rows) of every window with predictions; the drift rows
        include each eligible segment's (`segment_rows`)."""
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
        return drift + self.segment_rows(), estimates

    def _add_segments(
        self, key: WindowKey, events: list[PredictionEvent], batch: dict[str, npt.NDArray[Any]]
    ) -> None:
        picked: dict[str, tuple[list[int], list[int]]] = {}
        for index, event in enumerate(events):
            for segment_key, value in event.segments.items():
                found = picked.get(segment_key)
                if found is None:
                    found = picked[segment_key] = ([], [])
                found[0].append(index)
                found[1].append(self._codes.code(segment_key, value))
        for segment_key, (rows, codes) in picked.items():
            window = self._segment_windows.get((key, segment_key))
            if window is None:
                columns: dict[str, Any] = {name: np.float64 for name in self._features[key]}
                columns[SCORE_COLUMN] = np.float64
                columns[TIMESTAMP_COLUMN] = np.int64
                columns[SEGMENT_COLUMN] = np.int64
                window = self._segment_windows[key, segment_key] = CountWindow(
                    self.window_rows, columns
                )
            at = np.asarray(rows, dtype=np.int64)
            window.append(
                {
                    **{name: column[at] for name, column in batch.items()},
                    SEGMENT_COLUMN: np.asarray(codes, dtype=np.int64),
                }
            )

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
