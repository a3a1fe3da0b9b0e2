"""A tiny typed metrics registry and the Prometheus text exposition format (0.0.4).

Counters, gauges, histograms and callback gauges (read at scrape time from whoever owns the
number); `Registry.render()` is the body of a `/metrics` response served with `CONTENT_TYPE`.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[str, ...]
CallbackKind = Literal["counter", "gauge"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)
    )
    return "{" + pairs + "}"


def _format_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> Iterable[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, labels: Labels = ()) -> float:
        return self._values.get(labels, 0.0)

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted(self._values.items())
        for labels, value in items:
            yield f"{self.name}{_format_labels(self.label_names, labels)} {_format_number(value)}"


class Gauge(Counter):
    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        with self._lock:
            self._values[labels] = value


class CallbackGauge(_Metric):
    """A gauge (or counter) read at scrape time from whoever owns the number."""

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], Mapping[Labels, float]],
        label_names: Sequence[str] = (),
        kind: CallbackKind = "gauge",
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.kind = kind
        self._read = read

    def samples(self) -> Iterable[str]:
        for labels, value in sorted(self._read().items()):
            yield f"{self.name}{_format_labels(self.label_names, labels)} {_format_number(value)}"


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, bounds: Sequence[float], label_names: Sequence[str] = ()
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(sorted(bounds))
        # Per label set: one count per bound plus the +Inf overflow, then sum and count.
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, labels: Labels, value: float) -> None:
        index = bisect_left(self.bounds, value)
        with self._lock:
            counts = self._counts.get(labels)
            if counts is None:
                counts = self._counts[labels] = [0] * (len(self.bounds) + 1)
                self._sums[labels] = 0.0
            counts[index] += 1
            self._sums[labels] += value

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted((labels, list(counts)) for labels, counts in self._counts.items())
            sums = dict(self._sums)
        bucket_names = (*self.label_names, "le")
        for labels, counts in items:
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += count
                label_text = _format_labels(bucket_names, (*labels, _format_number(bound)))
                yield f"{self.name}_bucket{label_text} {cumulative}"
            label_text = _format_labels(self.label_names, labels)
            yield f"{self.name}_sum{label_text} {_format_number(sums[labels])}"
            yield f"{self.name}_count{label_text} {cumulative}"


MetricT = TypeVar("MetricT", bound=_Metric)


class Registry:
    """The metrics one process exposes, rendered in registration order."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def register(self, metric: MetricT) -> MetricT:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
