"""Where prediction events go: a Protocol the request path calls without ever waiting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from safeloop.schemas.events import PredictionEvent


@dataclass(frozen=True, slots=True)
class SinkStats:
    """Counters since start: accepted for sending, confirmed by the broker, and dropped."""

    accepted: int = 0
    delivered: int = 0
    dropped_buffer_full: int = 0
    delivery_failed: int = 0


class EventSink(Protocol):
    def publish(self, event: PredictionEvent) -> None:
        """Hand the event over and return at once; a full buffer drops it and counts the drop."""
        ...

    def stats(self) -> SinkStats: ...


class NullSink:
    """Accepts and forgets every event (benchmarks, replicas run without Kafka)."""

    def __init__(self) -> None:
        self._accepted = 0

    def publish(self, event: PredictionEvent) -> None:
        self._accepted += 1

    def stats(self) -> SinkStats:
        return SinkStats(accepted=self._accepted, delivered=self._accepted)
