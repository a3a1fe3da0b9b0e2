"""The guard's windows per segment: for each served (model, version, route) and segment key
(country, device), the last `rows` requests carrying that key, with their values as codes.

A request counts once under each of its segment keys, so every key's window covers about the
same recent requests as the (model, version, route) window of the whole population.
Summarising 1,000 segments costs tens of milliseconds (a latency histogram each), so a key's
segment summaries are recomputed at most every `refresh_ms`; the guard's per-segment verdicts
lag its overall ones by up to that much.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from safeloop.schemas.events import PredictionEvent
from safeloop.services.metrics.health_summary import HealthSummary, segment_summaries
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.segment_tracker import SEGMENT_HEALTH_COLUMNS
from safeloop.services.metrics.segments import SEGMENT_COLUMN, SegmentCodes
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, CountWindow


class SegmentWindows:
    """Count windows per (served key, segment key); summaries per `key=value` label."""

    def __init__(self, rows: int, codes: SegmentCodes, refresh_ms: int = 1_000) -> None:
        self._rows = rows
        self._codes = codes
        self._refresh_s = refresh_ms / 1000
        self._windows: dict[WindowKey, dict[str, CountWindow]] = {}
        # key -> (monotonic time computed, summaries); dropped when the key gets new rows
        # after `refresh_ms` has passed.
        self._cached: dict[WindowKey, tuple[float, dict[str, HealthSummary]]] = {}

    def append(self, keys: Sequence[WindowKey], events: Sequence[PredictionEvent]) -> None:
        """Fold the events (served by `keys`) that carry segments into their windows."""
        picked: dict[tuple[WindowKey, str], list[int]] = defaultdict(list)
        codes: dict[tuple[WindowKey, str], list[int]] = defaultdict(list)
        for index, (key, event) in enumerate(zip(keys, events, strict=True)):
            for segment_key, value in (event.segments or {}).items():
                picked[key, segment_key].append(index)
                codes[key, segment_key].append(self._codes.code(segment_key, value))
        if not picked:
            return
        count = len(events)
        stamps = np.fromiter((e.timestamp for e in events), np.int64, count)
        latency = np.fromiter((e.latency_ms for e in events), np.float64, count)
        error = np.fromiter((e.server_error for e in events), np.bool_, count)
        client_error = np.fromiter((e.client_error for e in events), np.bool_, count)
        for (key, segment_key), rows in picked.items():
            at = np.asarray(rows, dtype=np.int64)
            self._window(key, segment_key).append(
                {
                    TIMESTAMP_COLUMN: stamps[at],
                    SEGMENT_COLUMN: np.asarray(codes[key, segment_key], dtype=np.int64),
                    "latency_ms": latency[at],
                    "error": error[at],
                    "client_error": client_error[at],
                }
            )

    def summaries(self, key: WindowKey) -> dict[str, HealthSummary]:
        """`key=value` -> the summary of that segment's requests in the key's windows (as of
        at most `refresh_ms` ago)."""
        cached = self._cached.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._refresh_s:
            return cached[1]
        computed_at = time.monotonic()
        out: dict[str, HealthSummary] = {}
        for window in self._windows.get(key, {}).values():
            view = window.view()
            found = segment_summaries(
                view[SEGMENT_COLUMN],
                view[TIMESTAMP_COLUMN],
                view["latency_ms"],
                view["error"],
                view["client_error"],
            )
            for code, summary in found.items():
                out[self._codes.label(code)] = summary
        self._cached[key] = (computed_at, out)
        return out

    def discard(self, key: WindowKey) -> None:
        self._windows.pop(key, None)
        self._cached.pop(key, None)

    def _window(self, key: WindowKey, segment_key: str) -> CountWindow:
        by_segment_key = self._windows.get(key)
        if by_segment_key is None:
            by_segment_key = self._windows[key] = {}
        window = by_segment_key.get(segment_key)
        if window is None:
            window = by_segment_key[segment_key] = CountWindow(self._rows, SEGMENT_HEALTH_COLUMNS)
        return window
