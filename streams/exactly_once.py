"""Exactly once for every reader: which flushes check their rows against ClickHouse first.

Each batch the sink flushes covers, per source (an input topic partition, or a partition's
expiry sweeps), a span of coordinates (input offsets, or expiry times in ms). Before a batch's
rows are inserted, the sink raises the source's mark in `stream_progress` to at least the
span's end (plus a lead, so most flushes need no mark write). After a restart or a rebalance
the marks are read back: rows derived from input at or below a mark may already be stored, so
such a batch is checked (rows looked up by their table's replay key, only the missing ones
inserted); beyond the marks nothing is looked up. The join flags a batch `suspect` when it
emitted again what its state says was emitted before (replayed input it already saw, whose
rows may or may not have reached ClickHouse); such a batch is checked whatever its offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from safeloop.schemas.tables import Row

# (source, partition)
SourceKey = tuple[str, int]

# The pseudo-source of expiry sweeps; its coordinates are expiry times in epoch ms.
EXPIRY_SOURCE = "expiry"

DEFAULT_OFFSET_LEAD = 10_000
DEFAULT_EXPIRY_LEAD_MS = 30_000


@dataclass(slots=True)
class Span:
    """Coordinates `first`..`last` (inclusive) of one source that a batch's rows derive from."""

    first: int
    last: int

    def widen(self, first: int, last: int) -> None:
        self.first = min(self.first, first)
        self.last = max(self.last, last)


def add_span(spans: dict[SourceKey, Span], source: SourceKey, first: int, last: int) -> None:
    """Widen `spans[source]` to cover `first`..`last`."""
    span = spans.get(source)
    if span is None:
        spans[source] = Span(first, last)
    else:
        span.widen(first, last)


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """What a flush does before its inserts: the marks to write, and whether to check rows."""

    marks: Mapping[SourceKey, int]
    check: bool


class ReplayGuard:
    """Per source, the marks read back after (re)assignment and those this process wrote."""

    def __init__(
        self,
        offset_lead: int = DEFAULT_OFFSET_LEAD,
        expiry_lead_ms: int = DEFAULT_EXPIRY_LEAD_MS,
    ) -> None:
        self.offset_lead = offset_lead
        self.expiry_lead_ms = expiry_lead_ms
        # Rows at or below these may be in ClickHouse from an earlier owner (or life) of a source.
        self.recovered: dict[SourceKey, int] = {}
        # Marks in ClickHouse from this process; writing lower ones again is useless.
        self.written: dict[SourceKey, int] = {}

    def recover(self, partitions: Collection[int], marks: Mapping[SourceKey, int]) -> None:
        """Take the marks read back for newly assigned `partitions` (absent: nothing stored)."""
        self.recovered = {k: v for k, v in self.recovered.items() if k[1] not in partitions}
        for source, mark in marks.items():
            if source[1] in partitions:
                self.recovered[source] = mark
                self.written[source] = max(self.written.get(source, mark), mark)

    def plan(self, spans: Mapping[SourceKey, Span], suspect: bool) -> FlushPlan:
        """The marks a batch covering `spans` must raise, and whether its rows are checked."""
        recovered = self.recovered
        check = suspect or any(
            span.first <= recovered.get(source, -1) for source, span in spans.items()
        )
        written = self.written
        marks = {
            source: span.last + self._lead(source[0])
            for source, span in spans.items()
            if span.last > written.get(source, -1)
        }
        return FlushPlan(marks, check)

    def wrote(self, marks: Mapping[SourceKey, int]) -> None:
        """Record that `marks` are in ClickHouse."""
        written = self.written
        for source, mark in marks.items():
            written[source] = max(written.get(source, mark), mark)

    def _lead(self, source: str) -> int:
        return self.expiry_lead_ms if source == EXPIRY_SOURCE else self.offset_lead


def unseen(
    rows: Iterable[Row],
    identity: Callable[[Row], tuple[object, ...]],
    stored: Collection[tuple[object, ...]],
) -> list[Row]:
    """`rows` whose identity is neither stored nor that of an earlier row of `rows`."""
    seen = set(stored)
    kept = []
    for row in rows:
        key = identity(row)
        if key in seen:
            continue
        seen.add(key)
        kept.append(row)
    return kept
