"""Prometheus text for the worker's /metrics endpoint, and the periodic log line."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from safeloop.infra.kafka.dead_letters import DeadLetterCounts
from safeloop.infra.prometheus import CallbackGauge, CallbackKind, Labels, Registry
from safeloop.streams.join import JoinCounters
from safeloop.streams.sink import SinkStats

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
    # source topic -> records consumed off their home partition and re-routed
    rerouted: Mapping[str, int] = field(default_factory=dict)
    buffered_rows: int = 0
    # Assigned source partitions whose lag cannot be read yet (nothing fetched from them).
    lag_unknown_partitions: int = 0
    # Changelog entries restored into the local store, and the seconds their recoveries took.
    restored_entries: int = 0
    restore_seconds: float = 0.0
    # The process's RocksDB memory: its one block cache (memtables charged to it included) and
    # the memtables alone.
    rocksdb_block_cache_bytes: int = 0
    rocksdb_memtable_bytes: int = 0


Read = Callable[[], Mapping[Labels, float]]


def stream_registry(snapshot: StreamSnapshot) -> Registry:
    """A registry whose every metric reads `snapshot` when rendered."""
    registry = Registry()
    join = snapshot.join
    sink = snapshot.sink

    def add(
        name: str, kind: CallbackKind, help_text: str, read: Read, labels: tuple[str, ...] = ()
    ) -> None:
        registry.register(CallbackGauge(name, help_text, read, labels, kind))

    def one(value: float) -> Read:
        return lambda: {(): value}

    def per_partition(sizes: Mapping[int, int]) -> Read:
        return lambda: {(str(p),): v for p, v in sizes.items()}

    add(
        "safeloop_stream_lag",
        "gauge",
        "Messages per partition not yet in ClickHouse.",
        lambda: {(t, str(p)): v for (t, p), v in snapshot.lag.items()},
        ("topic", "partition"),
    )
    add(
        "safeloop_stream_consumed_total",
        "counter",
        "Records consumed per topic.",
        lambda: {(t,): v for t, v in snapshot.consumed.items()},
        ("topic",),
    )
    add(
        "safeloop_stream_rerouted_total",
        "counter",
        "Records consumed off their prediction_id's home partition and re-routed, per topic.",
        lambda: {(t,): v for t, v in snapshot.rerouted.items()},
        ("topic",),
    )
    add(
        "safeloop_join_joined_total",
        "counter",
        "Feedback rows emitted as joined.",
        one(join.joined),
    )
    add(
        "safeloop_join_expired_total",
        "counter",
        "Predictions expired unmatched.",
        one(join.expired),
    )
    add(
        "safeloop_join_corrections_total",
        "counter",
        "Outcomes replacing older ones.",
        one(join.corrections),
    )
    add(
        "safeloop_join_late_outcomes_total",
        "counter",
        "Outcomes after their prediction's window (stored in outcomes, paired by feedback_late).",
        one(join.late_outcomes),
    )
    add(
        "safeloop_join_early_outcomes_total",
        "counter",
        "Outcomes that came before their prediction and were kept to wait for it.",
        one(join.early_outcomes),
    )
    add(
        "safeloop_join_early_outcomes_dropped_total",
        "counter",
        "Early outcomes whose prediction did not come within SAFELOOP_EARLY_OUTCOME_WAIT_MS.",
        one(join.early_outcomes_dropped),
    )
    add(
        "safeloop_join_duplicate_predictions_total",
        "counter",
        "Predictions seen again.",
        one(join.duplicate_predictions),
    )
    add(
        "safeloop_join_stale_outcomes_total",
        "counter",
        "Outcomes older than the one kept.",
        one(join.stale_outcomes),
    )
    add(
        "safeloop_join_pending",
        "gauge",
        "Prediction ids in the join state: waiting for an outcome, or closed and remembered "
        "for the early-outcome wait.",
        per_partition(snapshot.pending_predictions),
        ("partition",),
    )
    add(
        "safeloop_join_early_outcomes",
        "gauge",
        "Outcomes waiting for a prediction.",
        per_partition(snapshot.early_outcomes),
        ("partition",),
    )
    add(
        "safeloop_dead_letters_total",
        "counter",
        "Inputs sent to the dead-letter topic.",
        lambda: {(t, r): v for (t, r), v in snapshot.dead_letters.by_topic_reason.items()},
        ("topic", "reason"),
    )
    add("safeloop_sink_batches_total", "counter", "Batches ClickHouse accepted.", one(sink.batches))
    add("safeloop_sink_rows_total", "counter", "Rows ClickHouse accepted.", one(sink.rows))
    add(
        "safeloop_sink_retries_total",
        "counter",
        "Failed insert attempts retried.",
        one(sink.retries),
    )
    add(
        "safeloop_sink_replayed_rows_total",
        "counter",
        "Rows of replayed input found in ClickHouse already, so not inserted again.",
        one(sink.replayed_rows),
    )
    add(
        "safeloop_sink_checked_batches_total",
        "counter",
        "Batches looked up in ClickHouse before insert (replays after a restart or rebalance).",
        one(sink.checked_batches),
    )
    add(
        "safeloop_sink_consecutive_failures",
        "gauge",
        "Failed attempts of steps still retrying.",
        one(sink.consecutive_failures),
    )
    add(
        "safeloop_sink_buffered_rows",
        "gauge",
        "Rows waiting for a flush.",
        one(snapshot.buffered_rows),
    )
    add(
        "safeloop_sink_flush_seconds_total",
        "counter",
        "Time spent in flushes ClickHouse accepted (over safeloop_sink_batches_total: the mean).",
        one(sink.flush_ms_total / 1000.0),
    )
    add(
        "safeloop_sink_last_flush_seconds",
        "gauge",
        "Duration of the last flush.",
        one(sink.last_flush_ms / 1000.0),
    )
    add(
        "safeloop_stream_lag_unknown_partitions",
        "gauge",
        "Assigned source partitions whose lag cannot be read yet.",
        one(snapshot.lag_unknown_partitions),
    )
    add(
        "safeloop_stream_restored_entries_total",
        "counter",
        "Changelog entries restored into the local join state (table recovery).",
        one(snapshot.restored_entries),
    )
    add(
        "safeloop_stream_restore_seconds_total",
        "counter",
        "Seconds from the start of each table recovery to its last entry restored, summed.",
        one(snapshot.restore_seconds),
    )
    add(
        "safeloop_stream_rocksdb_block_cache_bytes",
        "gauge",
        "The process's RocksDB block cache, its memtables charged to it included.",
        one(snapshot.rocksdb_block_cache_bytes),
    )
    add(
        "safeloop_stream_rocksdb_memtable_bytes",
        "gauge",
        "The process's RocksDB memtables, all join-table partitions together.",
        one(snapshot.rocksdb_memtable_bytes),
    )
    return registry


def render_prometheus(snapshot: StreamSnapshot) -> str:
    """The snapshot in the Prometheus text exposition format."""
    return stream_registry(snapshot).render()


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
