"""Sliding windows by count and by time over columnar numpy buffers, with batch appends.

Both windows keep their rows contiguous so that `view()` returns numpy views, not copies:
rows are appended at the end of an over-allocated buffer and the live rows are moved back to
the front only when the end is reached, which makes appends amortised O(1) per row.
A view stays valid until the next append to its window; copy it to keep it longer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics.exceptions import InvalidInputError

Columns = Mapping[str, npt.NDArray[Any]]
ColumnTypes = Mapping[str, npt.DTypeLike]

TIMESTAMP_COLUMN = "timestamp_ms"


class Window(Protocol):
    """What the snapshot code needs from any window."""

    def append(self, batch: Mapping[str, npt.ArrayLike]) -> None:
        """Add a batch of rows, one array per column, all of the same length."""
        ...

    def view(self) -> Columns:
        """Read-only views of the rows currently in the window."""
        ...

    def __len__(self) -> int:
        """Rows currently in the window."""
        ...


class _Buffer:
    """Named columns over one shared row range [start, end) of over-allocated arrays."""

    __slots__ = ("_arrays", "end", "start")

    def __init__(self, column_types: ColumnTypes, allocated: int) -> None:
        if not column_types:
            raise InvalidInputError("a window needs at least one column")
        self._arrays: dict[str, npt.NDArray[Any]] = {
            name: np.empty(allocated, dtype=dtype) for name, dtype in column_types.items()
        }
        self.start = 0
        self.end = 0

    @property
    def allocated(self) -> int:
        return int(next(iter(self._arrays.values())).shape[0])

    def column(self, name: str) -> npt.NDArray[Any]:
        return self._arrays[name]

    def coerce(self, batch: Mapping[str, npt.ArrayLike]) -> tuple[dict[str, npt.NDArray[Any]], int]:
        """Check the batch has exactly our columns, equally long, and cast to our dtypes."""
        if batch.keys() != self._arrays.keys():
            missing = sorted(self._arrays.keys() - batch.keys())
            extra = sorted(batch.keys() - self._arrays.keys())
            raise InvalidInputError(f"batch columns differ: missing {missing}, unexpected {extra}")
        coerced = {
            name: np.asarray(batch[name], dtype=array.dtype) for name, array in self._arrays.items()
        }
        lengths = {array.shape for array in coerced.values()}
        if len(lengths) != 1 or len(next(iter(lengths))) != 1:
            raise InvalidInputError(f"batch columns must be 1-D and equally long, got {lengths}")
        return coerced, next(iter(coerced.values())).shape[0]

    def reserve(self, keep_from: int, extra: int) -> None:
        """Make room for `extra` rows after `end`, keeping rows from `keep_from` onwards."""
        self.start = max(self.start, keep_from)
        if self.end + extra <= self.allocated:
            return
        live = self.end - self.start
        needed = live + extra
        if needed * 2 <= self.allocated:
            # Enough room once the live rows move to the front: compact in place.
            for array in self._arrays.values():
                array[:live] = array[self.start : self.end]
        else:
            allocated = max(16, 1 << (2 * needed - 1).bit_length())
            for name, array in self._arrays.items():
                grown = np.empty(allocated, dtype=array.dtype)
                grown[:live] = array[self.start : self.end]
                self._arrays[name] = grown
        self.start = 0
        self.end = live

    def write(self, at: int, batch: Mapping[str, npt.NDArray[Any]]) -> None:
        for name, array in self._arrays.items():
            values = batch[name]
            array[at : at + values.shape[0]] = values

    def view(self) -> Columns:
        views: dict[str, npt.NDArray[Any]] = {}
        for name, array in self._arrays.items():
            view = array[self.start : self.end]
            view.flags.writeable = False
            views[name] = view
        return views


class CountWindow:
    """The last `capacity` rows appended, in arrival order."""

    __slots__ = ("_buffer", "capacity")

    def __init__(self, capacity: int, column_types: ColumnTypes) -> None:
        if capacity < 1:
            raise InvalidInputError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._buffer = _Buffer(column_types, 2 * capacity)

    def append(self, batch: Mapping[str, npt.ArrayLike]) -> None:
        """Add rows; only the newest `capacity` of old + new rows stay."""
        columns, count = self._buffer.coerce(batch)
        if count == 0:
            return
        buffer = self._buffer
        if count >= self.capacity:
            tail = {name: values[count - self.capacity :] for name, values in columns.items()}
            buffer.start = buffer.end = 0
            buffer.write(0, tail)
            buffer.end = self.capacity
            return
        keep = min(buffer.end - buffer.start, self.capacity - count)
        buffer.reserve(buffer.end - keep, count)
        buffer.write(buffer.end, columns)
        buffer.end += count
        buffer.start = max(buffer.start, buffer.end - self.capacity)

    def view(self) -> Columns:
        """Read-only views of the window's rows, oldest first."""
        return self._buffer.view()

    def __len__(self) -> int:
        return self._buffer.end - self._buffer.start


class TimeWindow:
    """Rows whose `timestamp_ms` lies in (clock - span_ms, clock], kept sorted by time.

    The clock is the newest event time seen or the latest `advance(now_ms)`, whichever is later,
    so a quiet stream still empties its window. Rows arriving already older than the window are
    dropped and counted in `late_dropped`; past `max_rows` the oldest rows go and are counted in
    `overflow_dropped`, so memory stays bounded under any traffic.
    """

    __slots__ = ("_buffer", "clock_ms", "late_dropped", "max_rows", "overflow_dropped", "span_ms")

    def __init__(self, span_ms: int, column_types: ColumnTypes, max_rows: int = 1 << 20) -> None:
        if span_ms < 1:
            raise InvalidInputError(f"span_ms must be at least 1, got {span_ms}")
        if max_rows < 1:
            raise InvalidInputError(f"max_rows must be at least 1, got {max_rows}")
        if TIMESTAMP_COLUMN not in column_types:
            raise InvalidInputError(f"a time window needs a {TIMESTAMP_COLUMN!r} column")
        types = dict(column_types)
        types[TIMESTAMP_COLUMN] = np.int64
        self.span_ms = span_ms
        self.max_rows = max_rows
        self.clock_ms: int | None = None
        self.late_dropped = 0
        self.overflow_dropped = 0
        self._buffer = _Buffer(types, 1024)

    def append(self, batch: Mapping[str, npt.ArrayLike]) -> None:
        """Add rows in any time order; out-of-order rows are merged into place."""
        columns, count = self._buffer.coerce(batch)
        if count == 0:
            return
        stamps = columns[TIMESTAMP_COLUMN]
        newest = int(stamps.max())
        clock = newest if self.clock_ms is None else max(self.clock_ms, newest)
        fresh = stamps > clock - self.span_ms
        if not bool(fresh.all()):
            self.late_dropped += int(count - np.count_nonzero(fresh))
            columns = {name: values[fresh] for name, values in columns.items()}
            stamps = columns[TIMESTAMP_COLUMN]
            count = stamps.shape[0]
        if count > 1 and bool(np.any(stamps[1:] < stamps[:-1])):
            order = np.argsort(stamps, kind="stable")
            columns = {name: values[order] for name, values in columns.items()}
            stamps = columns[TIMESTAMP_COLUMN]
        self.clock_ms = clock
        self._insert_sorted(columns, stamps, count)
        self._evict()

    def advance(self, now_ms: int) -> None:
        """Move the clock forward (never back) and evict what fell out of the window."""
        if self.clock_ms is None or now_ms > self.clock_ms:
            self.clock_ms = now_ms
        self._evict()

    def view(self) -> Columns:
        """Read-only views of the window's rows, oldest first."""
        return self._buffer.view()

    def __len__(self) -> int:
        return self._buffer.end - self._buffer.start

    def _insert_sorted(
        self, columns: dict[str, npt.NDArray[Any]], stamps: npt.NDArray[np.int64], count: int
    ) -> None:
        if count == 0:
            return
        buffer = self._buffer
        buffer.reserve(buffer.start, count)
        held = buffer.column(TIMESTAMP_COLUMN)[buffer.start : buffer.end]
        if held.shape[0] == 0 or stamps[0] >= held[-1]:
            buffer.write(buffer.end, columns)
            buffer.end += count
            return
        # Late-but-in-window rows: re-sort only the tail they land in, usually a few rows.
        split = buffer.start + int(np.searchsorted(held, stamps[0], side="right"))
        merged_stamps = np.concatenate(
            (buffer.column(TIMESTAMP_COLUMN)[split : buffer.end], stamps)
        )
        order = np.argsort(merged_stamps, kind="stable")
        merged = {
            name: np.concatenate((buffer.column(name)[split : buffer.end], values))[order]
            for name, values in columns.items()
        }
        buffer.write(split, merged)
        buffer.end += count

    def _evict(self) -> None:
        buffer = self._buffer
        if self.clock_ms is None or buffer.end == buffer.start:
            return
        held = buffer.column(TIMESTAMP_COLUMN)[buffer.start : buffer.end]
        buffer.start += int(np.searchsorted(held, self.clock_ms - self.span_ms, side="right"))
        excess = buffer.end - buffer.start - self.max_rows
        if excess > 0:
            self.overflow_dropped += excess
            buffer.start += excess
