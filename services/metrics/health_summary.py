"""Mergeable health summaries: request and error counts plus a log-binned latency histogram.

A summary of a window can be added to the summary of any other window (another partition,
another instance) and the sum is the summary of the union, which is what lets several metrics
instances share a topic's partitions and still judge a canary on all of its traffic. Latency
quantiles come from the histogram: bins grow by `LATENCY_BIN_RATIO`, so a quantile is within
±1 % of the exact order statistic's value (and exact in rank).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics.health import HealthSnapshot
from safeloop.services.metrics.segments import Groups
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, Columns

LATENCY_BIN_RATIO = 1.02
# Bin 0 holds everything below the smallest edge; the last bin everything above the largest.
MIN_LATENCY_MS = 1e-3
MAX_LATENCY_MS = 1e7
_LOG_RATIO = math.log(LATENCY_BIN_RATIO)
LATENCY_BINS = math.ceil(math.log(MAX_LATENCY_MS / MIN_LATENCY_MS) / _LOG_RATIO) + 2
_QUANTILES = (0.50, 0.95, 0.99)


def _bin_values() -> npt.NDArray[np.float64]:
    exponents = np.arange(LATENCY_BINS, dtype=np.float64) - 0.5
    values = np.asarray(MIN_LATENCY_MS * LATENCY_BIN_RATIO**exponents, dtype=np.float64)
    values[0] = 0.0
    return values


# What each bin stands for: its geometric middle (0 for the underflow bin).
BIN_VALUES = _bin_values()


def histogram_quantiles(
    histograms: npt.NDArray[np.int64], quantile: float
) -> npt.NDArray[np.float64]:
    """One quantile of each row's histogram, read as `HealthSummary` reads it; NaN if empty."""
    cumulative = np.cumsum(histograms, axis=1)
    total = cumulative[:, -1] if histograms.shape[1] else np.zeros(histograms.shape[0])
    ranks = np.floor(quantile * (total - 1)) + 1
    found = np.count_nonzero(cumulative < ranks[:, None], axis=1)
    values = BIN_VALUES[np.minimum(found, LATENCY_BINS - 1)]
    return np.where(total > 0, values, np.nan)


def slower_counts(
    histograms: npt.NDArray[np.int64], limits_ms: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Per row, the requests whose bin stands for more than that row's limit (NaN: none)."""
    above = BIN_VALUES[None, :] > np.nan_to_num(limits_ms, nan=np.inf)[:, None]
    return np.asarray((histograms * above).sum(axis=1), dtype=np.int64)


def latency_bin_index(latency_ms: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The bin of each value (finite values only: filter first)."""
    scaled = np.log(np.maximum(latency_ms, MIN_LATENCY_MS * 0.5) / MIN_LATENCY_MS) / _LOG_RATIO
    return np.clip(np.floor(scaled).astype(np.int64) + 1, 0, LATENCY_BINS - 1)


def latency_bins(latency_ms: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Counts per latency bin of the finite values."""
    index = latency_bin_index(latency_ms[np.isfinite(latency_ms)])
    return np.bincount(index, minlength=LATENCY_BINS).astype(np.int64)


def _bin_value(index: int) -> float:
    """The value a bin stands for: its geometric middle (0 for the underflow bin)."""
    if index <= 0:
        return 0.0
    return float(MIN_LATENCY_MS * LATENCY_BIN_RATIO ** (index - 1 + 0.5))


@dataclass(frozen=True, slots=True)
class HealthSummary:
    """Counts, time bounds and the latency histogram of some requests; `+` merges two.

    `segments` holds the same per segment (`key=value` -> summary) of the requests that carry
    segments, so the guard can judge segments on every instance's traffic too.
    """

    request_count: int
    error_count: int
    client_error_count: int
    start_ms: int | None
    end_ms: int | None
    latency: npt.NDArray[np.int64]
    segments: Mapping[str, HealthSummary] = field(default_factory=dict)

    @staticmethod
    def empty() -> HealthSummary:
        return HealthSummary(0, 0, 0, None, None, np.zeros(LATENCY_BINS, dtype=np.int64))

    @staticmethod
    def of_window(view: Columns) -> HealthSummary:
        """The summary of a window holding `HEALTH_COLUMNS`."""
        stamps = view[TIMESTAMP_COLUMN]
        count = int(stamps.shape[0])
        if count == 0:
            return HealthSummary.empty()
        return HealthSummary(
            count,
            int(np.count_nonzero(view["error"])),
            int(np.count_nonzero(view["client_error"])),
            int(stamps.min()),
            int(stamps.max()),
            latency_bins(np.asarray(view["latency_ms"], dtype=np.float64)),
        )

    def __add__(self, other: HealthSummary) -> HealthSummary:
        return HealthSummary(
            self.request_count + other.request_count,
            self.error_count + other.error_count,
            self.client_error_count + other.client_error_count,
            _bound(min, self.start_ms, other.start_ms),
            _bound(max, self.end_ms, other.end_ms),
            self.latency + other.latency,
            _merged(self.segments, other.segments),
        )

    def with_segments(self, segments: Mapping[str, HealthSummary]) -> HealthSummary:
        return HealthSummary(
            self.request_count,
            self.error_count,
            self.client_error_count,
            self.start_ms,
            self.end_ms,
            self.latency,
            segments,
        )

    def snapshot(self) -> HealthSnapshot:
        """The `HealthSnapshot` the guard judges, quantiles read off the histogram."""
        count = self.request_count
        p50, p95, p99 = self._quantiles()
        rate = None
        if self.start_ms is not None and self.end_ms is not None and self.end_ms > self.start_ms:
            rate = count * 1000.0 / (self.end_ms - self.start_ms)
        return HealthSnapshot(
            request_count=count,
            error_count=self.error_count,
            error_rate=self.error_count / count if count else None,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            requests_per_s=rate,
            window_start_ms=self.start_ms,
            window_end_ms=self.end_ms,
            client_error_count=self.client_error_count,
            client_error_rate=self.client_error_count / count if count else None,
        )

    def _quantiles(self) -> tuple[float | None, float | None, float | None]:
        total = int(self.latency.sum())
        if total == 0:
            return None, None, None
        cumulative = np.cumsum(self.latency)
        # The bin of the order statistic at rank q * (n - 1), as `latency.percentiles` ranks.
        ranks = [math.floor(q * (total - 1)) + 1 for q in _QUANTILES]
        found = np.searchsorted(cumulative, ranks, side="left")
        p50, p95, p99 = (_bin_value(int(index)) for index in found)
        return p50, p95, p99

    def to_json(self) -> dict[str, Any]:
        nonzero = np.flatnonzero(self.latency)
        out: dict[str, Any] = {
            "n": self.request_count,
            "e": self.error_count,
            "c": self.client_error_count,
            "s": self.start_ms,
            "t": self.end_ms,
            "b": [[int(i), int(self.latency[i])] for i in nonzero],
        }
        if self.segments:
            # Optional: a reader from before segments ignores it, and reads none when absent.
            out["g"] = {label: summary.to_json() for label, summary in self.segments.items()}
        return out

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> HealthSummary:
        latency = np.zeros(LATENCY_BINS, dtype=np.int64)
        for index, count in raw["b"]:
            latency[int(index)] = int(count)
        start, end = raw.get("s"), raw.get("t")
        segments = {
            str(label): HealthSummary.from_json(summary)
            for label, summary in raw.get("g", {}).items()
        }
        return HealthSummary(
            int(raw["n"]),
            int(raw["e"]),
            int(raw["c"]),
            None if start is None else int(start),
            None if end is None else int(end),
            latency,
            segments,
        )


def segment_summaries(
    codes: npt.NDArray[np.int64],
    timestamp_ms: npt.NDArray[np.int64],
    latency_ms: npt.NDArray[np.float64],
    error: npt.NDArray[np.bool_],
    client_error: npt.NDArray[np.bool_],
) -> dict[int, HealthSummary]:
    """Segment code -> the summary of its rows, from one grouped reduction (no loop over rows)."""
    if codes.shape[0] == 0:
        return {}
    groups = Groups.of(codes)
    stamps = np.asarray(timestamp_ms, dtype=np.int64)
    latency = np.asarray(latency_ms, dtype=np.float64)
    finite = np.isfinite(latency)
    # One bincount over (group, bin) pairs fills every group's histogram at once.
    cells = groups.index[finite] * LATENCY_BINS + latency_bin_index(latency[finite])
    histograms = np.bincount(cells, minlength=len(groups) * LATENCY_BINS).astype(np.int64)
    histograms = histograms.reshape(len(groups), LATENCY_BINS)
    errors = groups.count(np.asarray(error, dtype=np.bool_))
    client_errors = groups.count(np.asarray(client_error, dtype=np.bool_))
    starts, ends = groups.minimum(stamps), groups.maximum(stamps)
    return {
        int(code): HealthSummary(
            int(groups.sizes[i]),
            int(errors[i]),
            int(client_errors[i]),
            int(starts[i]),
            int(ends[i]),
            histograms[i],
        )
        for i, code in enumerate(groups.codes.tolist())
    }


def _merged(
    a: Mapping[str, HealthSummary], b: Mapping[str, HealthSummary]
) -> Mapping[str, HealthSummary]:
    if not b:
        return a
    if not a:
        return b
    out = dict(a)
    for label, summary in b.items():
        found = out.get(label)
        out[label] = summary if found is None else found + summary
    return out


def _bound(pick: Any, a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return int(pick(a, b))
