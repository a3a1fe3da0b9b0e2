"""Prometheus text for the worker's /metrics endpoint, and the periodic log line."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from faust.sensors.monitor import Monitor

from streams.dead_letters import DeadLetterCounts
from streams.join import JoinCounters
from streams.sink import SinkStats

log = logging.getLogger(__name__)

# aiohttp adds the charset itself and refuses one inside content_type.
CONTENT_TYPE = "text/plain; version=0.0.4"


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """Everything /metrics reports, read at one moment."""

    join: JoinCounters
    sink: SinkStats
    dead_letters: DeadLetterCounts
    # (topic, partition) -> messages not yet in ClickHouse (high watermark - flushed offset)
    lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    # partition -> keys waiting
    pending_predictions: Mapping[int, int] = field(default_factory=dict)
    early_outcomes: Mapping[int, int] = field(default_factory=dict)
    consumed: Mapping[str, int] = field(default_factory=dict)
    buffered_rows: int = 0


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _label(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _labelled(name: str, samples: Iterable[tuple[Mapping[str, object], float]]) -> list[str]:
    lines = []
    for labels, value in samples:
        inner = ",".join(f"{key}={_label(val)}" for key, val in labels.items())
        lines.append(f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}")
    return lines


def render_prometheus(snapshot: StreamSnapshot) -> str:
    """The snapshot in the Prometheus text exposition format."""
    join = snapshot.join
    sink = snapshot.sink
    out: list[str] = []

    def simple(name: str, kind: str, help_text: str, value: float) -> None:
        out.extend(_family(name, kind, help_text))
        out.append(f"{name} {value:g}")

    out += _family("safeloop_stream_lag", "gauge", "Messages per partition not yet in ClickHouse.")
    out += _labelled(
        "safeloop_stream_lag",
        [({"topic": t, "partition": p}, v) for (t, p), v in sorted(snapshot.lag.items())],
    )
    out += _family("safeloop_stream_consumed_total", "counter", "Records consumed per topic.")
    out += _labelled(
        "safeloop_stream_consumed_total",
        [({"topic": t}, v) for t, v in sorted(snapshot.consumed.items())],
    )
    simple("safeloop_join_joined_total", "counter", "Feedback rows emitted as joined.", join.joined)
    simple("safeloop_join_expired_total", "counter", "Predictions expired unmatched.", join.expired)
    simple(
        "safeloop_join_corrections_total",
        "counter",
        "Outcomes replacing older ones.",
        join.corrections,
    )
    simple(
        "safeloop_join_late_outcomes_total",
        "counter",
        "Outcomes after their window closed.",
        join.late_outcomes,
    )
    simple(
        "safeloop_join_duplicate_predictions_total",
        "counter",
        "Predictions seen again.",
        join.duplicate_predictions,
    )
    simple(
        "safeloop_join_stale_outcomes_total",
        "counter",
        "Outcomes older than the one kept.",
        join.stale_outcomes,
    )
    out += _family("safeloop_join_pending", "gauge", "Predictions waiting for an outcome.")
    out += _labelled(
        "safeloop_join_pending",
        [({"partition": p}, v) for p, v in sorted(snapshot.pending_predictions.items())],
    )
    out += _family("safeloop_join_early_outcomes", "gauge", "Outcomes waiting for a prediction.")
    out += _labelled(
        "safeloop_join_early_outcomes",
        [({"partition": p}, v) for p, v in sorted(snapshot.early_outcomes.items())],
    )
    out += _family(
        "safeloop_dead_letters_total", "counter", "Inputs sent to the dead-letter topic."
    )
    out += _labelled(
        "safeloop_dead_letters_total",
        [
            ({"topic": t, "reason": r}, v)
            for (t, r), v in sorted(snapshot.dead_letters.by_topic_reason.items())
        ],
    )
    simple("safeloop_sink_batches_total", "counter", "Batches ClickHouse accepted.", sink.batches)
    simple("safeloop_sink_rows_total", "counter", "Rows ClickHouse accepted.", sink.rows)
    simple(
        "safeloop_sink_retries_total", "counter", "Failed insert attempts retried.", sink.retries
    )
    simple(
        "safeloop_sink_consecutive_failures",
        "gauge",
        "Failed attempts of steps still retrying.",
        sink.consecutive_failures,
    )
    simple(
        "safeloop_sink_buffered_rows", "gauge", "Rows waiting for a flush.", snapshot.buffered_rows
    )
    simple(
        "safeloop_sink_last_flush_seconds",
        "gauge",
        "Duration of the last flush.",
        sink.last_flush_ms / 1000.0,
    )
    return "\n".join(out) + "\n"


class RateLogger:
    """Logs throughput and health every `interval_s`, from the counters' deltas."""

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None

    def log(self, now_s: float, snapshot: StreamSnapshot) -> None:
        events = sum(snapshot.consumed.values())
        joined = snapshot.join.joined
        if self._last is not None:
            then, events_before, joined_before = self._last
            elapsed = max(now_s - then, 1e-9)
            log.info(
                "stream: %.0f events/s, %.0f joins/s, pending %s, expired %s, dead letters %s, "
                "lag %s, sink retries %s (consecutive failures %s)",
                (events - events_before) / elapsed,
                (joined - joined_before) / elapsed,
                sum(snapshot.pending_predictions.values()),
                snapshot.join.expired,
                snapshot.dead_letters.total,
                sum(snapshot.lag.values()),
                snapshot.sink.retries,
                snapshot.sink.consecutive_failures,
            )
        self._last = (now_s, events, joined)


class LeanMonitor(Monitor):
    """faust's Monitor without its per-message bookkeeping.

    faust calls the monitor four or five times for every message (in, stream in/out, out, end
    offset); nothing here reads those figures (the worker's /metrics are `StreamSnapshot`'s),
    and they cost several percent of the worker's CPU. Everything else stays faust's.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        # Kept: the aiokafka driver's "stream stopped processing" check reads it.
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        return None
