"""Health from `predictions`: count and time windows per (model, version, route) -> rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from safeloop.schemas.events import PredictionEvent
from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.columns import health_batch
from safeloop.services.metrics.health import HEALTH_COLUMNS, HealthSnapshot, health_of_window
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.rows import RowContext, health_rows
from safeloop.services.metrics.windows import CountWindow, TimeWindow

COUNT_SUFFIX = "_last_n"


def suffixed(rows: list[MetricRow], suffix: str) -> list[MetricRow]:
    """The rows with `suffix` appended to every metric name."""
    return [dataclasses.replace(row, metric=row.metric + suffix) for row in rows]


class HealthTracker:
    """Every prediction lands in the key's last-N window and its last-T window.

    Time-window rows keep the plain metric names; count-window rows are named
    `<metric>_last_n` (the tables deduplicate on metric and bounds, and both windows often
    share their bounds). Labels say which window: window=time_<T>ms or window=count_<N>.
    """

    def __init__(self, window_rows: int, window_span_ms: int, max_rows: int = 1 << 20) -> None:
        self.window_rows = window_rows
        self.window_span_ms = window_span_ms
        self._count = KeyedWindows(lambda: CountWindow(window_rows, HEALTH_COLUMNS))
        self._time = KeyedWindows(lambda: TimeWindow(window_span_ms, HEALTH_COLUMNS, max_rows))

    def add(self, events: Sequence[PredictionEvent]) -> None:
        if not events:
            return
        keys, batch = health_batch(events)
        self._count.append(keys, batch)
        self._time.append(keys, batch)

    def keys(self) -> list[WindowKey]:
        return [key for key, _ in self._count]

    def count_snapshot(self, key: WindowKey) -> HealthSnapshot:
        return health_of_window(self._count.window(key).view())

    def rows(self, now_ms: int) -> list[MetricRow]:
        """Rows of every non-empty window, the time windows first advanced to `now_ms`."""
        rows: list[MetricRow] = []
        count_label = {"window": f"count_{self.window_rows}"}
        time_label = {"window": f"time_{self.window_span_ms}ms"}
        for key, count_window in self._count:
            snapshot = health_of_window(count_window.view())
            rows += suffixed(_rows(key, snapshot, count_label), COUNT_SUFFIX)
        for key, time_window in self._time:
            time_window.advance(now_ms)
            snapshot = health_of_window(time_window.view(), self.window_span_ms)
            rows += _rows(key, snapshot, time_label)
        return rows


def _rows(key: WindowKey, snapshot: HealthSnapshot, labels: dict[str, str]) -> list[MetricRow]:
    if snapshot.window_start_ms is None or snapshot.window_end_ms is None:
        return []
    context = RowContext(key, snapshot.window_start_ms, snapshot.window_end_ms, labels)
    return health_rows(context, snapshot)
