"""What `safeloop metrics run` exposes on `GET /metrics`, named and labelled in one place.

Every figure is owned by the loop (its counts, the consumers', the guard's, the rollout
controller's) and read at scrape time, so the loop pays nothing for being scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from safeloop.infra.prometheus import CallbackGauge, CallbackKind, Labels, Registry
from safeloop.services.monitor.consumer import ConsumerCounts, EventConsumer
from safeloop.services.monitor.service import MetricsService

Read = Callable[[], Mapping[Labels, float]]


def metrics_registry(service: MetricsService) -> Registry:
    """A registry whose every metric reads `service` when rendered."""
    registry = Registry()
    consumers: tuple[EventConsumer[Any], ...] = (service.predictions, service.feedback)

    def add(
        name: str,
        help_text: str,
        read: Read,
        labels: tuple[str, ...] = (),
        kind: CallbackKind = "counter",
    ) -> None:
        registry.register(CallbackGauge(name, help_text, read, labels, kind))

    def one(read: Callable[[], float]) -> Read:
        return lambda: {(): read()}

    def per_topic(read: Callable[[ConsumerCounts], int]) -> Read:
        return lambda: {(consumer.topic,): read(consumer.counts) for consumer in consumers}

    add(
        "safeloop_metrics_records_consumed_total",
        "Records read per topic, decodable or not.",
        per_topic(lambda counts: counts.records),
        ("topic",),
    )
    add(
        "safeloop_metrics_events_consumed_total",
        "Events decoded (and valid) per topic.",
        per_topic(lambda counts: counts.events),
        ("topic",),
    )
    add(
        "safeloop_metrics_dead_letters_total",
        "Records that failed to decode or validate, sent to the dead-letter topic.",
        per_topic(lambda counts: counts.dead_lettered),
        ("topic",),
    )
    add(
        "safeloop_metrics_dead_letter_failures_total",
        "Dead letters that could not be sent or were not acknowledged.",
        per_topic(lambda counts: counts.dead_letter_failures),
        ("topic",),
    )
    add(
        "safeloop_metrics_offset_commits_total",
        "Offset commits after a written snapshot, per topic.",
        per_topic(lambda counts: counts.commits),
        ("topic",),
    )
    add(
        "safeloop_metrics_offset_commit_failures_total",
        "Offset commits that failed (those records are read again after a restart).",
        per_topic(lambda counts: counts.commit_failures),
        ("topic",),
    )
    add(
        "safeloop_metrics_lag_probe_failures_total",
        "Lag probes that failed (partition not fetched yet, or the broker away), per topic.",
        per_topic(lambda counts: counts.lag_unknown),
        ("topic",),
    )
    add(
        "safeloop_metrics_partitions_kept_total",
        "Partitions a rebalance gave straight back, resumed with their windows (no re-read).",
        per_topic(lambda counts: counts.partitions_kept),
        ("topic",),
    )
    add(
        "safeloop_metrics_assigned_partitions",
        "Partitions the consumer group currently assigns to this process, per topic.",
        lambda: {(c.topic,): len(c.membership.partitions) for c in consumers},
        ("topic",),
        "gauge",
    )
    add(
        "safeloop_metrics_consumer_lag",
        "Records per partition not yet read (cached high watermark - position).",
        lambda: {
            (c.topic, str(partition)): lag for c in consumers for partition, lag in c.lag.items()
        },
        ("topic", "partition"),
        "gauge",
    )
    counts = service.counts
    add(
        "safeloop_metrics_snapshots_written_total",
        "Snapshots whose rows were inserted into ClickHouse (offsets committed after).",
        one(lambda: counts.snapshots),
    )
    add(
        "safeloop_metrics_snapshot_failures_total",
        "Snapshot inserts that failed; offsets stay uncommitted, the next snapshot retries.",
        one(lambda: counts.snapshot_failures),
    )
    add(
        "safeloop_metrics_snapshots_deferred_total",
        "Snapshots postponed because the previous insert was still running.",
        one(lambda: counts.snapshots_skipped),
    )
    add(
        "safeloop_metrics_rows_written_total",
        "Metric rows inserted into ClickHouse.",
        one(lambda: counts.rows_written),
    )

    def snapshot_age() -> Mapping[Labels, float]:
        written_at = service.loop.snapshot_written_at
        return {} if written_at is None else {(): time.monotonic() - written_at}

    add(
        "safeloop_metrics_last_snapshot_age_seconds",
        "Seconds since the last snapshot was written (absent before the first).",
        snapshot_age,
        kind="gauge",
    )
    add(
        "safeloop_metrics_control_log_pending",
        "Audit rows of issued commands waiting for ClickHouse (retried every snapshot).",
        one(lambda: service.issuer.unlogged),
        kind="gauge",
    )
    add(
        "safeloop_metrics_control_log_caught_up_total",
        "Commands a previous judge published but did not audit, written by this one.",
        one(lambda: counts.audit_caught_up),
    )
    guard = service.guard
    add(
        "safeloop_metrics_guard_verdicts_total",
        "Canary judgements of the central guard, by verdict.",
        lambda: {(kind.value,): n for kind, n in guard.verdicts.items()},
        ("kind",),
    )
    add(
        "safeloop_metrics_rollbacks_total",
        "Rollbacks the central guard published.",
        one(lambda: guard.rollbacks),
    )
    add(
        "safeloop_metrics_rollback_failures_total",
        "Rollbacks the central guard could not publish (retried).",
        one(lambda: guard.rollback_failures),
    )
    add(
        "safeloop_metrics_guard_earlier_run_rows_dropped_total",
        "Canary requests dropped as an earlier run's once the same version was canaried again.",
        one(lambda: guard.earlier_run_rows_dropped),
    )
    add(
        "safeloop_metrics_commands_issued_total",
        "Signed control commands this process published (guard and rollouts).",
        one(lambda: service.issuer.issued),
    )
    rollouts = service.rollouts
    add(
        "safeloop_metrics_rollout_transitions_total",
        "Rollout transitions, by the phase they led to.",
        lambda: {(phase.value,): n for phase, n in rollouts.transitions.items()},
        ("phase",),
    )
    add(
        "safeloop_metrics_retraining_decisions_total",
        "Retraining decisions published and stored, by urgency.",
        lambda: {(u.value,): n for u, n in counts.decisions_by_urgency.items()},
        ("urgency",),
    )
    add(
        "safeloop_metrics_loop_errors_total",
        "Loop iterations that raised (logged, then the loop went on).",
        one(lambda: counts.loop_errors),
    )

    def loop_age() -> Mapping[Labels, float]:
        iterated_at = service.loop.iterated_at
        return {} if iterated_at is None else {(): time.monotonic() - iterated_at}

    add(
        "safeloop_metrics_last_iteration_age_seconds",
        "Seconds since the loop last completed an iteration.",
        loop_age,
        kind="gauge",
    )
    return registry
