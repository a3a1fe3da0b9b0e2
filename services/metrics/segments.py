"""Per-segment figures: a row counts once in each segment it belongs to (country=BR, device=ios),
and every segment's figures come from one grouped numpy reduction, not a loop over segments.

Rows arrive "long": one entry per (row, segment key) the row carries, with the segment as a
small integer code (`SegmentCodes`). Percentiles interpolate between order statistics as
numpy's default `percentile` does (and `latency.percentiles`), within each group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from safeloop.services.metrics._arrays import BoolArray, FloatArray, IntArray, as_float
from safeloop.services.metrics.exceptions import InvalidInputError

SEGMENT_COLUMN: Final = "segment"
_LATENCY_QUANTILES = np.array([0.50, 0.95, 0.99])


class SegmentCodes:
    """(segment key, value) pairs interned as small integers, first seen first numbered."""

    __slots__ = ("_by_key", "_pairs")

    def __init__(self) -> None:
        # key -> value -> code: the hot loops look up a key's dict once per key, no tuples.
        self._by_key: dict[str, dict[str, int]] = {}
        self._pairs: list[tuple[str, str]] = []

    def code(self, key: str, value: str) -> int:
        values = self.values_of(key)
        found = values.get(value)
        if found is None:
            found = values[value] = len(self._pairs)
            self._pairs.append((key, value))
        return found

    def values_of(self, key: str) -> dict[str, int]:
        """value -> code of one key (a live view: `code` adds to it)."""
        values = self._by_key.get(key)
        if values is None:
            values = self._by_key[key] = {}
        return values

    def pair(self, code: int) -> tuple[str, str]:
        """The (key, value) of a code this instance handed out."""
        return self._pairs[code]

    def label(self, code: int) -> str:
        """`key=value`, as verdicts name a segment."""
        key, value = self._pairs[code]
        return f"{key}={value}"

    def __len__(self) -> int:
        return len(self._pairs)


def explode(
    segments: Sequence[Mapping[str, str]], codes: SegmentCodes
) -> tuple[IntArray, IntArray]:
    """(row index, segment code) for each (row, segment key) pair; rows without segments
    contribute nothing."""
    rows: list[int] = []
    found: list[int] = []
    for index, row_segments in enumerate(segments):
        if row_segments:
            for key, value in row_segments.items():
                code = codes.values_of(key).get(value)
                rows.append(index)
                found.append(codes.code(key, value) if code is None else code)
    return np.array(rows, dtype=np.int64), np.array(found, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Groups:
    """Rows grouped by segment code: the codes present (ascending), each row's group index
    and each group's size."""

    codes: IntArray
    index: IntArray
    sizes: IntArray

    @classmethod
    def of(cls, codes: IntArray) -> Groups:
        present, index = np.unique(np.asarray(codes, dtype=np.int64), return_inverse=True)
        sizes = np.bincount(index, minlength=present.shape[0]).astype(np.int64)
        return cls(present, index.astype(np.int64), sizes)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def count(self, mask: BoolArray) -> IntArray:
        """How many rows of each group have `mask` set."""
        return np.bincount(self.index[mask], minlength=len(self)).astype(np.int64)

    def total(self, values: FloatArray) -> FloatArray:
        """Each group's sum of `values`."""
        return np.bincount(self.index, weights=values, minlength=len(self)).astype(np.float64)

    def minimum(self, values: IntArray) -> IntArray:
        out = np.full(len(self), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(out, self.index, values)
        return out

    def maximum(self, values: IntArray) -> IntArray:
        out = np.full(len(self), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(out, self.index, values)
        return out

    def quantiles(self, values: FloatArray, quantiles: FloatArray) -> FloatArray:
        """(groups, quantiles) of each group's finite values; NaN for a group without any."""
        data = as_float(values, "values")
        finite = np.isfinite(data)
        index, data = self.index[finite], data[finite]
        sizes = np.bincount(index, minlength=len(self))
        # Sorted by group, then by value: each group's order statistics are one slice.
        ordered = data[np.lexsort((data, index))]
        starts = np.cumsum(sizes) - sizes
        out = np.full((len(self), quantiles.shape[0]), np.nan)
        has = sizes > 0
        if not bool(has.any()):
            return out
        rank = quantiles[None, :] * (sizes[has, None] - 1)
        below = rank.astype(np.int64)
        above = np.minimum(below + 1, sizes[has, None] - 1)
        low = ordered[starts[has, None] + below]
        high = ordered[starts[has, None] + above]
        out[has] = low + (high - low) * (rank - below)
        return out


@dataclass(frozen=True, slots=True)
class SegmentHealth:
    """Health of every segment present, aligned with `codes`; latencies NaN when none."""

    codes: IntArray
    request_count: IntArray
    error_count: IntArray
    client_error_count: IntArray
    latency_ms: FloatArray  # (segments, 3): p50, p95, p99
    window_start_ms: IntArray
    window_end_ms: IntArray

    @property
    def error_rate(self) -> FloatArray:
        return self.error_count / np.maximum(self.request_count, 1)


def segment_health(
    codes: IntArray,
    timestamp_ms: IntArray,
    latency_ms: FloatArray,
    error: BoolArray,
    client_error: BoolArray,
) -> SegmentHealth:
    """Request and error counts, latency percentiles and time span per segment code."""
    _aligned(codes, timestamp_ms, latency_ms, error, client_error)
    groups = Groups.of(codes)
    stamps = np.asarray(timestamp_ms, dtype=np.int64)
    return SegmentHealth(
        codes=groups.codes,
        request_count=groups.sizes,
        error_count=groups.count(np.asarray(error, dtype=np.bool_)),
        client_error_count=groups.count(np.asarray(client_error, dtype=np.bool_)),
        latency_ms=groups.quantiles(latency_ms, _LATENCY_QUANTILES),
        window_start_ms=groups.minimum(stamps),
        window_end_ms=groups.maximum(stamps),
    )


@dataclass(frozen=True, slots=True)
class SegmentPerformance:
    """Label-based figures of every segment present, aligned with `codes`.

    `correct_count` counts right answers (classification: score on the label's side of the
    threshold; multi-class: the true class had the top probability); regression leaves it 0
    and fills the absolute and squared error sums instead. Unlabelled rows count in
    `row_count` only.
    """

    codes: IntArray
    row_count: IntArray
    labelled_count: IntArray
    correct_count: IntArray
    absolute_error_sum: FloatArray
    squared_error_sum: FloatArray
    window_start_ms: IntArray
    window_end_ms: IntArray

    @property
    def accuracy(self) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                self.labelled_count > 0, self.correct_count / self.labelled_count, np.nan
            )

    @property
    def mae(self) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                self.labelled_count > 0, self.absolute_error_sum / self.labelled_count, np.nan
            )

    @property
    def rmse(self) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                self.labelled_count > 0,
                np.sqrt(self.squared_error_sum / self.labelled_count),
                np.nan,
            )


def correct_answers(
    score: FloatArray,
    ground_truth: FloatArray,
    true_class_probability: FloatArray,
    top_probability: FloatArray,
    threshold: float = 0.5,
) -> BoolArray:
    """Per row: a right answer (binary by `threshold`, multi-class by the top probability)."""
    with np.errstate(invalid="ignore"):
        binary = (score >= threshold) == (ground_truth >= 0.5)
        multiclass = true_class_probability >= top_probability
    has_classes = ~np.isnan(top_probability)
    result: BoolArray = np.where(has_classes, multiclass, binary)
    return result


def segment_performance(
    codes: IntArray,
    timestamp_ms: IntArray,
    score: FloatArray,
    ground_truth: FloatArray,
    correct: BoolArray,
) -> SegmentPerformance:
    """Labelled counts, right answers and error sums per segment code."""
    _aligned(codes, timestamp_ms, score, ground_truth, correct)
    groups = Groups.of(codes)
    labelled = ~(np.isnan(ground_truth) | np.isnan(score))
    errors = np.where(labelled, score - ground_truth, 0.0)
    stamps = np.asarray(timestamp_ms, dtype=np.int64)
    return SegmentPerformance(
        codes=groups.codes,
        row_count=groups.sizes,
        labelled_count=groups.count(labelled),
        correct_count=groups.count(labelled & np.asarray(correct, dtype=np.bool_)),
        absolute_error_sum=groups.total(np.abs(errors)),
        squared_error_sum=groups.total(errors * errors),
        window_start_ms=groups.minimum(stamps),
        window_end_ms=groups.maximum(stamps),
    )


def _aligned(codes: IntArray, *columns: object) -> None:
    length = np.asarray(codes).shape[0]
    for column in columns:
        if np.asarray(column).shape[:1] != (length,):
            raise InvalidInputError(
                f"segment columns must have {length} rows, got {np.asarray(column).shape}"
            )


@dataclass(frozen=True, slots=True)
class DenseCounts:
    """Per code 0..size-1 (a `SegmentCodes` numbering): rows, rows with a flag, and the
    count, mean and sample variance of a value (NaN values left out)."""

    rows: IntArray
    flagged: IntArray
    value_count: IntArray
    value_mean: FloatArray
    value_variance: FloatArray


def dense_counts(codes: IntArray, flag: BoolArray, values: FloatArray, size: int) -> DenseCounts:
    """Bincount reductions by segment code: O(rows + size), no sorting."""
    _aligned(codes, flag, values)
    codes = np.asarray(codes, dtype=np.int64)
    data = as_float(values, "values")
    finite = np.isfinite(data)
    rows = np.bincount(codes, minlength=size).astype(np.int64)
    flagged = np.bincount(codes[np.asarray(flag, dtype=np.bool_)], minlength=size)
    kept, data = codes[finite], data[finite]
    count = np.bincount(kept, minlength=size).astype(np.float64)
    total = np.bincount(kept, weights=data, minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total / count, 0.0)
        # Sum of squared deviations, one pass over the rows: sum((x - mean_of_its_group)^2).
        deviations = data - mean[kept]
        squares = np.bincount(kept, weights=deviations * deviations, minlength=size)
        variance = np.where(count > 1, squares / (count - 1), 0.0)
    return DenseCounts(rows, flagged.astype(np.int64), count.astype(np.int64), mean, variance)
