"""Performance from `feedback`: count and time windows per (model, version, route) -> rows.

Beside the measured figures, each labelled window also gets the confidence-based estimate of
the same predictions and its error against what the labels showed (`cbpe_labelled_*` rows;
for multi-class windows the expected accuracy from each chosen class's probability).
Count-window rows are named `<metric>_last_n`, as in `health_tracker`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from safeloop.schemas.events import FeedbackRecord
from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.columns import ScoreConvention, feedback_batch
from safeloop.services.metrics.estimation import compare_estimate, estimate_performance
from safeloop.services.metrics.health_tracker import COUNT_SUFFIX, suffixed
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.multiclass_estimation import estimate_top_label_accuracy
from safeloop.services.metrics.performance import (
    FEEDBACK_COLUMNS,
    PerformanceSnapshot,
    Task,
    performance_of_window,
)
from safeloop.services.metrics.rows import (
    RowContext,
    accuracy_estimate_rows,
    estimate_rows,
    performance_rows,
)
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, Columns, CountWindow, TimeWindow

TaskOf = Callable[[str, str], Task]
# A regressor version's training residual baseline (residual drift), None when unknown.
ResidualBaselineOf = Callable[[str, str], Baseline | None]


class PerformanceTracker:
    """Feedback records (joined or expired) per key, in a last-N and a last-T window."""

    def __init__(
        self,
        task_of: TaskOf,
        window_rows: int,
        window_span_ms: int,
        max_rows: int = 1 << 20,
        residual_baseline_of: ResidualBaselineOf | None = None,
    ) -> None:
        self._task_of = task_of
        self._residual_baseline_of = residual_baseline_of
        self.window_rows = window_rows
        self.window_span_ms = window_span_ms
        self._count = KeyedWindows(lambda: CountWindow(window_rows, FEEDBACK_COLUMNS))
        self._time = KeyedWindows(lambda: TimeWindow(window_span_ms, FEEDBACK_COLUMNS, max_rows))

    def add(self, records: Sequence[FeedbackRecord]) -> None:
        if not records:
            return
        # PROBABILITY and VALUE both read `prediction` as is: right for either task.
        keys, batch = feedback_batch(records, ScoreConvention.PROBABILITY)
        self._count.append(keys, batch)
        self._time.append(keys, batch)

    def count_snapshot(self, key: WindowKey) -> PerformanceSnapshot | None:
        """The key's last-N figures, or None before any feedback for it."""
        if key not in {k for k, _ in self._count}:
            return None
        task = self._task_of(key.model_name, key.model_version)
        return performance_of_window(
            task, self._count.window(key).view(), residual_baseline=self._residuals(key, task)
        )

    def rows(self, now_ms: int) -> list[MetricRow]:
        rows: list[MetricRow] = []
        for key, count_window in self._count:
            label = f"count_{self.window_rows}"
            rows += suffixed(self._window_rows(key, count_window.view(), label), COUNT_SUFFIX)
        for key, time_window in self._time:
            time_window.advance(now_ms)
            label = f"time_{self.window_span_ms}ms"
            rows += self._window_rows(key, time_window.view(), label)
        return rows

    def _window_rows(self, key: WindowKey, view: Columns, label: str) -> list[MetricRow]:
        stamps = view[TIMESTAMP_COLUMN]
        if stamps.shape[0] == 0:
            return []
        task = self._task_of(key.model_name, key.model_version)
        snapshot = performance_of_window(task, view, residual_baseline=self._residuals(key, task))
        context = RowContext(key, int(stamps.min()), int(stamps.max()), {"window": label})
        rows = performance_rows(context, snapshot)
        measured = snapshot.classification
        if measured is not None and measured.count:
            scores = view["score"]
            labelled = ~(np.isnan(view["ground_truth"]) | np.isnan(scores))
            estimate = estimate_performance(np.clip(scores[labelled], 0.0, 1.0))
            comparison = compare_estimate(estimate, measured)
            # Named apart from the pre-label estimate of the same version (drift_tracker).
            rows += [
                dataclasses.replace(row, metric=row.metric.replace("cbpe_", "cbpe_labelled_", 1))
                for row in estimate_rows(context, estimate, comparison)
            ]
        multiclass = snapshot.multiclass
        if multiclass is not None and multiclass.count:
            top = view["top_probability"]
            labelled = ~(np.isnan(view["ground_truth"]) | np.isnan(top))
            accuracy = estimate_top_label_accuracy(np.clip(top[labelled], 0.0, 1.0))
            rows += accuracy_estimate_rows(context, accuracy, multiclass.accuracy)
        return rows

    def _residuals(self, key: WindowKey, task: Task) -> Baseline | None:
        if task is not Task.REGRESSION or self._residual_baseline_of is None:
            return None
        return self._residual_baseline_of(key.model_name, key.model_version)
