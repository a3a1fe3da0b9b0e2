"""Health and performance per segment: for each (model, version, route, segment key) the last N
(request, segment) rows, and one grouped reduction per window at snapshot time -> rows.

A segment with fewer than `min_sample` requests (labelled rows, for performance figures) in
the window gets no row: its figures would be noise. Rows go to `segment_metrics`, named like
the whole population's (`error_rate`, `latency_p99_ms`, `accuracy`, ...) with the segment in
`segment_key` / `segment_value`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from safeloop.schemas.events import FeedbackRecord, PredictionEvent, Route
from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.columns import ScoreConvention, feedback_batch
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.segments import (
    SEGMENT_COLUMN,
    SegmentCodes,
    correct_answers,
    segment_health,
    segment_performance,
)
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, Columns, CountWindow

TaskOf = Callable[[str, str], Task]

SEGMENT_HEALTH_COLUMNS: Final = {
    TIMESTAMP_COLUMN: np.int64,
    SEGMENT_COLUMN: np.int64,
    "latency_ms": np.float64,
    "error": np.bool_,
    "client_error": np.bool_,
}
SEGMENT_FEEDBACK_COLUMNS: Final = {
    TIMESTAMP_COLUMN: np.int64,
    SEGMENT_COLUMN: np.int64,
    "score": np.float64,
    "ground_truth": np.float64,
    "correct": np.bool_,
}


@dataclass(frozen=True, slots=True)
class SegmentWindowKey:
    """One segment key of one model version on one route (its values share a window)."""

    model_name: str
    model_version: str
    route: Route
    segment_key: str


class SegmentTracker:
    """Per-segment windows fed by the same batches as the health and performance trackers."""

    def __init__(self, task_of: TaskOf, window_rows: int, min_sample: int) -> None:
        self._task_of = task_of
        self.window_rows = window_rows
        self.min_sample = min_sample
        self._codes = SegmentCodes()
        self._slots: dict[tuple[str, str, Route], dict[str, tuple[int, dict[str, int]]]] = {}
        self._keys: list[SegmentWindowKey] = []
        self._health: dict[int, CountWindow] = {}
        self._feedback: dict[int, CountWindow] = {}

    def add_predictions(self, events: Sequence[PredictionEvent]) -> None:
        rows, groups, codes = self._explode(events)
        if rows.shape[0] == 0:
            return
        picked = [events[i] for i in np.unique(rows).tolist()]
        at = np.searchsorted(np.unique(rows), rows)
        count = len(picked)
        batch = {
            TIMESTAMP_COLUMN: np.fromiter((e.timestamp for e in picked), np.int64, count)[at],
            SEGMENT_COLUMN: codes,
            "latency_ms": np.fromiter((e.latency_ms for e in picked), np.float64, count)[at],
            "error": np.fromiter((e.server_error for e in picked), np.bool_, count)[at],
            "client_error": np.fromiter((e.client_error for e in picked), np.bool_, count)[at],
        }
        self._append(self._health, SEGMENT_HEALTH_COLUMNS, groups, batch)

    def add_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        rows, groups, codes = self._explode(records)
        if rows.shape[0] == 0:
            return
        unique = np.unique(rows)
        picked = [records[i] for i in unique.tolist()]
        at = np.searchsorted(unique, rows)
        # PROBABILITY and VALUE both read `prediction` as is: right for either task.
        _, columns = feedback_batch(picked, ScoreConvention.PROBABILITY)
        correct = correct_answers(
            columns["score"],
            columns["ground_truth"],
            columns["true_class_probability"],
            columns["top_probability"],
        )
        batch = {
            TIMESTAMP_COLUMN: columns[TIMESTAMP_COLUMN][at],
            SEGMENT_COLUMN: codes,
            "score": columns["score"][at],
            "ground_truth": columns["ground_truth"][at],
            "correct": correct[at],
        }
        self._append(self._feedback, SEGMENT_FEEDBACK_COLUMNS, groups, batch)

    def answers(self, model_name: str, version: str, route: Route) -> dict[str, tuple[int, int]]:
        """`key=value` -> (labelled rows, right answers) in each segment's feedback window."""
        out: dict[str, tuple[int, int]] = {}
        for group, _ in self._slots.get((model_name, version, route), {}).values():
            window = self._feedback.get(group)
            if window is None or len(window) == 0:
                continue
            view = window.view()
            figures = segment_performance(
                view[SEGMENT_COLUMN],
                view[TIMESTAMP_COLUMN],
                view["score"],
                view["ground_truth"],
                view["correct"],
            )
            for code, labelled, correct in zip(
                figures.codes.tolist(),
                figures.labelled_count.tolist(),
                figures.correct_count.tolist(),
                strict=True,
            ):
                out[self._codes.label(code)] = (labelled, correct)
        return out

    def keys(self) -> list[SegmentWindowKey]:
        return [self._keys[group] for group in sorted({*self._health, *self._feedback})]

    def rows(self) -> list[MetricRow]:
        """Rows of every segment with at least `min_sample` rows in its window."""
        rows: list[MetricRow] = []
        label = {"window": f"count_{self.window_rows}"}
        for group, window in self._health.items():
            rows += self._health_rows(self._keys[group], window.view(), label)
        for group, window in self._feedback.items():
            rows += self._performance_rows(self._keys[group], window.view(), label)
        return rows

    def _explode(
        self, items: Sequence[PredictionEvent | FeedbackRecord]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(item index, window group, segment code) per (item, segment key) pair."""
        rows: list[int] = []
        groups: list[int] = []
        codes: list[int] = []
        owner: tuple[str, str, Route] | None = None
        slots: dict[str, tuple[int, dict[str, int]]] = {}
        for index, item in enumerate(items):
            segments = item.segments
            if not segments:
                continue
            here = (item.model_name, item.model_version, item.route)
            if here != owner:
                # Batches come mostly from one model version and route: look it up on change.
                owner, slots = here, self._slots_of(here)
            for key, value in segments.items():
                slot = slots.get(key)
                if slot is None:
                    slot = slots[key] = self._new_slot(here, key)
                group, values = slot
                code = values.get(value)
                rows.append(index)
                groups.append(group)
                codes.append(self._codes.code(key, value) if code is None else code)
        return (
            np.array(rows, dtype=np.int64),
            np.array(groups, dtype=np.int64),
            np.array(codes, dtype=np.int64),
        )

    def _slots_of(self, owner: tuple[str, str, Route]) -> dict[str, tuple[int, dict[str, int]]]:
        """segment key -> (its window group, its value codes) for one model version and route."""
        slots = self._slots.get(owner)
        if slots is None:
            slots = self._slots[owner] = {}
        return slots

    def _new_slot(self, owner: tuple[str, str, Route], key: str) -> tuple[int, dict[str, int]]:
        group = len(self._keys)
        self._keys.append(SegmentWindowKey(*owner, key))
        return group, self._codes.values_of(key)

    def _append(
        self,
        windows: dict[int, CountWindow],
        column_types: dict[str, Any],
        groups: npt.NDArray[np.int64],
        batch: dict[str, npt.NDArray[Any]],
    ) -> None:
        # Stable: each group's rows stay in arrival order.
        order = np.argsort(groups, kind="stable")
        present, starts = np.unique(groups[order], return_index=True)
        ends = [*starts[1:].tolist(), order.shape[0]]
        for group, start, end in zip(present.tolist(), starts.tolist(), ends, strict=True):
            window = windows.get(group)
            if window is None:
                window = windows[group] = CountWindow(self.window_rows, column_types)
            picked = order[start:end]
            window.append({name: values[picked] for name, values in batch.items()})

    def _health_rows(
        self, key: SegmentWindowKey, view: Columns, labels: dict[str, str]
    ) -> list[MetricRow]:
        if view[TIMESTAMP_COLUMN].shape[0] == 0:
            return []
        health = segment_health(
            view[SEGMENT_COLUMN],
            view[TIMESTAMP_COLUMN],
            view["latency_ms"],
            view["error"],
            view["client_error"],
        )
        n = health.request_count
        figures = {
            "request_count": (n, n),
            "error_rate": (health.error_count / np.maximum(n, 1), n),
            "client_error_rate": (health.client_error_count / np.maximum(n, 1), n),
            "latency_p50_ms": (health.latency_ms[:, 0], n),
            "latency_p95_ms": (health.latency_ms[:, 1], n),
            "latency_p99_ms": (health.latency_ms[:, 2], n),
        }
        spans = _Spans(health.codes, n >= self.min_sample, health.window_start_ms,
                       health.window_end_ms)  # fmt: skip
        return self._rows(key, spans, figures, labels)

    def _performance_rows(
        self, key: SegmentWindowKey, view: Columns, labels: dict[str, str]
    ) -> list[MetricRow]:
        if view[TIMESTAMP_COLUMN].shape[0] == 0:
            return []
        figures = segment_performance(
            view[SEGMENT_COLUMN],
            view[TIMESTAMP_COLUMN],
            view["score"],
            view["ground_truth"],
            view["correct"],
        )
        labelled = figures.labelled_count
        chosen: dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.int64]]] = {
            "labelled_count": (labelled, labelled),
        }
        if self._task_of(key.model_name, key.model_version) is Task.REGRESSION:
            chosen["mae"] = (figures.mae, labelled)
            chosen["rmse"] = (figures.rmse, labelled)
        else:
            chosen["accuracy"] = (figures.accuracy, labelled)
        spans = _Spans(figures.codes, labelled >= self.min_sample, figures.window_start_ms,
                       figures.window_end_ms)  # fmt: skip
        return self._rows(key, spans, chosen, labels)

    def _rows(
        self,
        key: SegmentWindowKey,
        spans: _Spans,
        figures: dict[str, tuple[npt.NDArray[Any], npt.NDArray[np.int64]]],
        labels: dict[str, str],
    ) -> list[MetricRow]:
        kept = np.flatnonzero(spans.keep)
        if kept.shape[0] == 0:
            return []
        values = [self._codes.pair(code)[1] for code in spans.codes[kept].tolist()]
        starts, ends = spans.starts[kept].tolist(), spans.ends[kept].tolist()
        route = key.route.value
        rows: list[MetricRow] = []
        for metric, (figure, counts) in figures.items():
            for value, sample, segment, start, end in zip(
                figure[kept].tolist(), counts[kept].tolist(), values, starts, ends, strict=True
            ):
                if math.isnan(value):  # undefined (e.g. no finite latency): no row
                    continue
                rows.append(
                    MetricRow(
                        key.model_name,
                        key.model_version,
                        route,
                        start,
                        end,
                        metric,
                        float(value),
                        sample,
                        labels,
                        segment_key=key.segment_key,
                        segment_value=segment,
                    )
                )
        return rows


@dataclass(frozen=True, slots=True)
class _Spans:
    """The segments of one window: codes, which have enough rows, and their time spans."""

    codes: npt.NDArray[np.int64]
    keep: npt.NDArray[np.bool_]
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
