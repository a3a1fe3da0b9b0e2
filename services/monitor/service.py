"""`safeloop metrics run`: health, performance, drift, the central guard, rollouts and
retraining decisions in one process, on one thread, with ClickHouse writes off that thread.

The loop polls predictions (briefly blocking), feedback and the control topic; after every
batch the guard judges the canaries, so a breach is acted on within one poll of becoming
measurable. Windows survive restarts and rebalances: each assignment first re-reads the
partitions' recent past (`rebuild`: the health span of predictions, the performance span of
feedback, and at least the current step of every running rollout), and neither the guard nor
the rollouts judge before every consumer has rebuilt its windows. Partitions a rebalance gives
back, even after a lost session, keep their windows and are not re-read.

Several instances may share the group's partitions (`summary_exchange`): each publishes the
guard summaries of the partitions it reads; only the judge — the instance reading partition 0
of predictions, elected by the group protocol — checks the guard over all partitions, ticks
the rollouts and publishes retraining decisions, so no verdict is doubled.

At `snapshot_interval_ms` the windows become rows, which a worker thread inserts;
only once the insert succeeded are the offsets of everything those rows cover committed, without
waiting for the group coordinator's answer (a dead coordinator must not stop the guard).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaException, TopicPartition

from safeloop.infra.exceptions import ConsumerFencedError, WarehouseError
from safeloop.schemas.events import (
    ControlCommand,
    FeedbackRecord,
    PredictionEvent,
    RetrainingDecision,
    Route,
    Urgency,
)
from safeloop.schemas.tables import (
    DRIFT_METRICS,
    HEALTH_METRICS,
    PERFORMANCE_METRICS,
    SEGMENT_METRICS,
    MetricRow,
    Table,
)
from safeloop.services.alerts.alert import alert_for_decision, alerts_for_command
from safeloop.services.alerts.notifier import AlertNotifier
from safeloop.services.control.exceptions import ControlError
from safeloop.services.control.follower import ControlFollower
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.runner import CentralGuard
from safeloop.services.metrics.drift_tracker import DriftTracker
from safeloop.services.metrics.health_tracker import HealthTracker
from safeloop.services.metrics.performance import relative_drop
from safeloop.services.metrics.performance_tracker import PerformanceTracker
from safeloop.services.metrics.segment_tracker import SegmentTracker
from safeloop.services.monitor.consumer import EventConsumer
from safeloop.services.monitor.dead_letter_watch import DeadLetterWatch
from safeloop.services.monitor.model_info import ModelInfoCache
from safeloop.services.monitor.snapshot_retry import SnapshotRetry
from safeloop.services.monitor.summary_exchange import SummaryExchange
from safeloop.services.monitor.writer import MetricWriter
from safeloop.services.retraining.decision import decide
from safeloop.services.retraining.policy import RetrainingPolicy
from safeloop.services.retraining.publisher import RetrainingPublisher
from safeloop.services.rollout.controller import RolloutController
from safeloop.services.rollout.labels import LabelCounts

logger = logging.getLogger(__name__)


class Commit(Protocol):
    def __call__(self, positions: list[TopicPartition], *, wait: bool = True) -> None: ...


# The instance reading this partition of predictions is its group's judge.
JUDGE_PARTITION = 0


@dataclass(frozen=True)
class MetricsConfig:
    """Cadences and window sizes of the metrics process."""

    snapshot_interval_ms: int = 10_000
    health_window_rows: int = 10_000
    health_window_span_ms: int = 300_000
    performance_window_rows: int = 10_000
    performance_window_span_ms: int = 3_600_000
    drift_window_rows: int = 10_000
    guard_window_rows: int = 1_000
    # Partitions of predictions the guard's window is spread over (one share per partition).
    guard_partitions: int = 1
    guard_policy: GuardPolicy = field(default_factory=GuardPolicy)
    guard_enabled: bool = True
    rollout_tick_ms: int = 1_000
    # How often labels re-judge promotions made on estimates (a ClickHouse query each time).
    provisional_recheck_ms: int = 10_000
    retraining_interval_ms: int = 300_000
    retraining_policy: RetrainingPolicy = field(default_factory=RetrainingPolicy)
    # Every record of a batch is decoded and alive at once, and the allocators keep what a burst
    # grew: a catch-up after an outage in batches of 5,000 left a process ~5 MB larger for good
    # (500: 0.5 MB, in a micro test). Per-batch costs are small next to 500 records' decoding.
    poll_max_records: int = 500
    poll_timeout_ms: int = 20
    # Rebuild the windows on assignment by re-reading the topics' recent past (False: start
    # empty, as before rebuilds existed; the guard is then blind until the windows refill).
    rebuild_windows: bool = True
    # How far back a rebuild may reach for a long-running rollout step (bounds the re-read).
    rebuild_max_span_ms: int = 3_600_000
    # Rows a segment needs in its window (requests; labelled rows for performance) before its
    # figures are written to segment_metrics, and before the guard judges it.
    segment_min_sample: int = 100
    # Segments per model version and route that get drift rows (the largest first).
    drift_max_segments: int = 100


@dataclass
class MetricsCounts:
    """Totals since start."""

    snapshots: int = 0
    snapshots_skipped: int = 0
    snapshot_failures: int = 0
    rows_written: int = 0
    decisions: int = 0
    loop_errors: int = 0
    control_warm_up_failures: int = 0
    # Iterations whose judging (guard, rollout gates) waited for the windows to be rebuilt.
    judging_deferred: int = 0
    # Control commands a predecessor published but never audited, written by this judge.
    audit_caught_up: int = 0
    decisions_by_urgency: dict[Urgency, int] = field(
        default_factory=lambda: dict.fromkeys(Urgency, 0)
    )


@dataclass
class LoopState:
    """Whether the loop thread runs and when it last finished an iteration (for /healthz)."""

    running: bool = False
    # Monotonic times; None until the first iteration / the first written snapshot.
    iterated_at: float | None = None
    snapshot_written_at: float | None = None
    # When the control producer first delivered (its warm-up tombstone), and how long that
    # took: until then a rollback would wait for the producer, so the service is not ready.
    control_ready_at: float | None = None
    control_warm_up_s: float | None = None
    # Whether this instance judges (guard, rollouts, retraining) for its group.
    judge: bool = False


@dataclass
class _Snapshot:
    rows: dict[Table[MetricRow], list[MetricRow]]
    decisions: list[RetrainingDecision]
    positions: list[tuple[Commit, str, list[TopicPartition]]]
    future: Future[int] | None = None


class MetricsService:
    """Owns the trackers; `run(stop)` loops until `stop` is set, `step()` runs one iteration."""

    def __init__(
        self,
        config: MetricsConfig,
        *,
        predictions: EventConsumer[PredictionEvent],
        feedback: EventConsumer[FeedbackRecord],
        follower: ControlFollower,
        issuer: CommandIssuer,
        writer: MetricWriter,
        retraining: RetrainingPublisher,
        models: ModelInfoCache,
        alerts: AlertNotifier | None = None,
        dead_letter_watch: DeadLetterWatch | None = None,
        labels: LabelCounts | None = None,
        exchange: SummaryExchange | None = None,
    ) -> None:
        self.config = config
        self.exchange = exchange
        self.predictions = predictions
        self.feedback = feedback
        self.follower = follower
        self.issuer = issuer
        self.writer = writer
        self.retraining = retraining
        self.models = models
        self.alerts = alerts
        self.dead_letter_watch = dead_letter_watch
        if alerts is not None:
            issuer.listeners.append(self._alert_for_command)
        self.health = HealthTracker(config.health_window_rows, config.health_window_span_ms)
        self.performance = PerformanceTracker(
            models.task_of,
            config.performance_window_rows,
            config.performance_window_span_ms,
            residual_baseline_of=models.residual_baseline_of,
        )
        self.drift = DriftTracker(
            models,
            config.drift_window_rows,
            segment_min_sample=config.segment_min_sample,
            max_segments=config.drift_max_segments,
        )
        self.segments = SegmentTracker(
            models.task_of, config.health_window_rows, config.segment_min_sample
        )
        self.guard = CentralGuard(
            config.guard_policy,
            issuer,
            performance=self.performance,
            window_rows=config.guard_window_rows,
            partitions=config.guard_partitions,
            segment_min_sample=config.segment_min_sample,
            segment_answers=self.segments,
        )
        self.rollouts = RolloutController(
            issuer, models.task_of, labels, recheck_interval_ms=config.provisional_recheck_ms
        )
        # Resume rollouts in flight: the newest command of each model carries its state.
        for command in follower.view.latest.values():
            self.rollouts.on_command(command)
        if config.rebuild_windows:
            predictions.replay_from = lambda: self._replay_from_ms(config.health_window_span_ms)
            feedback.replay_from = lambda: self._replay_from_ms(config.performance_window_span_ms)
        self._rebuilt = False
        # A new judge checks once that its predecessor's last commands were audited.
        self._audit_catch_up_due = False
        self.counts = MetricsCounts()
        self.loop = LoopState()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="metrics-writer")
        self._inflight: _Snapshot | None = None
        # Set while `flush` runs: its commits wait for the coordinator's answer.
        self._flushing = False
        now = time.monotonic()
        self._last_snapshot = now
        self._snapshot_retry = SnapshotRetry(config.snapshot_interval_ms)
        self._last_tick = now
        self._last_retraining = now

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop`; a failing iteration is logged and counted, never fatal, except
        `ConsumerFencedError` (another instance runs with this one's instance id)."""
        logger.info("metrics running: %s", self.config)
        self.loop.running = True
        warm_up = threading.Thread(
            target=self._warm_up_control, args=(stop,), name="control-warm-up", daemon=True
        )
        warm_up.start()
        try:
            while not stop.is_set():
                try:
                    self.step()
                except ConsumerFencedError:
                    # Another instance took this one's place in the group: judging on would
                    # double its verdicts from windows nobody feeds.
                    logger.error("metrics stops: fenced out of its consumer group")
                    raise
                except Exception:
                    self.counts.loop_errors += 1
                    logger.exception("metrics loop iteration failed; continuing")
                    stop.wait(0.5)
                else:
                    self.loop.iterated_at = time.monotonic()
        finally:
            self.loop.running = False
            self.close()

    def _warm_up_control(self, stop: threading.Event) -> None:
        """Make the control producer able to deliver before saying ready (retried until then)."""
        while not stop.is_set():
            try:
                took_s = self.issuer.warm_up()
            except ControlError as exc:
                self.counts.control_warm_up_failures += 1
                logger.warning("control producer cannot deliver yet, retrying: %s", exc)
                stop.wait(0.5)
                continue
            self.loop.control_warm_up_s = took_s
            self.loop.control_ready_at = time.monotonic()
            logger.info("control producer delivers (warm-up took %.3fs)", took_s)
            return

    def step(self) -> None:
        config = self.config
        events = self.predictions.poll(config.poll_max_records, config.poll_timeout_ms / 1000)
        if events:
            self.health.add(events)
            self.segments.add_predictions(events)
            self.drift.add(events)
            self.guard.observe(events, self.predictions.last_partitions)
            self.rollouts.observe_predictions(events)
        records = self.feedback.poll(config.poll_max_records, 0.0)
        if records:
            self.performance.add(records)
            self.segments.add_feedback(records)
            self.rollouts.observe_feedback(records)
        for command in self.follower.poll(0.0):
            self.rollouts.on_command(command)
            if self.alerts is not None:
                # Others' commands (operators, other instances); our own come from the issuer.
                self._alert_for_command(command)
        others = self._exchange_summaries()
        judge = self.is_judge()
        if judge and not self.loop.judge:
            self._audit_catch_up_due = True
        self.loop.judge = judge
        rebuilt = self.rebuilt()
        if not rebuilt:
            self.counts.judging_deferred += 1
        elif judge and config.guard_enabled and (events or records or others or not self._rebuilt):
            others_summaries = (
                None if self.exchange is None else self.exchange.others(self._owned())
            )
            for decision in self.guard.check(others_summaries):
                if decision.command is not None:
                    # The rollout ends now, not when the command comes back from the topic:
                    # its gate must not send a second rollback in this same iteration.
                    self.rollouts.on_command(decision.command)
        self._rebuilt = rebuilt
        now = time.monotonic()
        if judge and rebuilt and (now - self._last_tick) * 1000 >= config.rollout_tick_ms:
            self._last_tick = now
            self.rollouts.tick(time.time_ns() // 1_000_000)
        self._finish_snapshot()
        if (now - self._last_snapshot) * 1000 >= self._snapshot_retry.delay_ms():
            self._last_snapshot = now
            self.snapshot()

    def is_judge(self) -> bool:
        """Alone, or reading the judge partition: this instance decides for its group."""
        return self.exchange is None or JUDGE_PARTITION in self._owned()

    def _owned(self) -> frozenset[int]:
        return self.predictions.membership.partitions

    def _exchange_summaries(self) -> int:
        """Publish this instance's guard summaries (when due); read the others'."""
        if self.exchange is None:
            return 0
        if self.predictions.membership.unassigned_at is None:
            # Not mid-rebalance: partitions it gives straight back keep their windows.
            self.guard.retain(self._owned())
        if self.exchange.due() and self.rebuilt():
            # Until rebuilt, the partitions' previous summaries on the topic are the better ones.
            self.exchange.publish(self.guard.summaries())
        return self.exchange.poll()

    def rebuilt(self) -> bool:
        """Whether every consumer's windows hold what was read before its assignment."""
        return self.predictions.rebuilt and self.feedback.rebuilt

    def _replay_from_ms(self, span_ms: int) -> int:
        """Re-read from `span_ms` ago, or from the start of the oldest running rollout step."""
        now_ms = time.time_ns() // 1_000_000
        oldest_ms = now_ms - max(span_ms, self.config.rebuild_max_span_ms)
        return max(oldest_ms, min([now_ms - span_ms, *self.rollouts.step_starts_ms()]))

    def snapshot(self) -> bool:
        """Hand the current windows' rows to the writer thread; False if one is still running."""
        if self._inflight is not None:
            self.counts.snapshots_skipped += 1
            return False
        now_ms = time.time_ns() // 1_000_000
        drift_rows, estimate_rows = self.drift.rows()
        rows = {
            HEALTH_METRICS: self.health.rows(now_ms),
            PERFORMANCE_METRICS: self.performance.rows(now_ms) + estimate_rows,
            DRIFT_METRICS: drift_rows,
            SEGMENT_METRICS: self.segments.rows(),
        }
        decisions: list[RetrainingDecision] = []
        retraining_due = (
            time.monotonic() - self._last_retraining
        ) * 1000 >= self.config.retraining_interval_ms
        if retraining_due and self.is_judge():
            self._last_retraining = time.monotonic()
            decisions = self.retraining_decisions(now_ms)
        positions: list[tuple[Commit, str, list[TopicPartition]]] = [
            (self.predictions.commit, self.predictions.name, self.predictions.positions()),
            (self.feedback.commit, self.feedback.name, self.feedback.positions()),
        ]
        snapshot = _Snapshot(rows, decisions, positions)
        snapshot.future = self._executor.submit(self._write, snapshot)
        self._inflight = snapshot
        self.issuer.retry_audit()
        if self._audit_catch_up_due and self.loop.judge:
            self._catch_up_audit()
        return True

    def _catch_up_audit(self) -> None:
        try:
            self.counts.audit_caught_up += self.issuer.catch_up_audit()
        except WarehouseError as exc:
            logger.warning("control_log catch-up deferred: %s", exc)
            return
        self._audit_catch_up_due = False

    def flush(self, timeout_s: float = 30.0) -> None:
        """Take a snapshot now and wait until it is written and committed."""
        deadline = time.monotonic() + timeout_s
        self._flushing = True
        try:
            while self._inflight is not None and time.monotonic() < deadline:
                self._finish_snapshot(wait_s=0.1)
            self.snapshot()
            while self._inflight is not None and time.monotonic() < deadline:
                self._finish_snapshot(wait_s=0.1)
        finally:
            self._flushing = False

    def retraining_decisions(self, now_ms: int) -> list[RetrainingDecision]:
        """One decision per production version with predictions, from drift and performance."""
        decisions = []
        for key in self.drift.tracked():
            if key.route is not Route.PRODUCTION:
                continue
            info = self.models.get(key.model_name, key.model_version)
            performance = self.performance.count_snapshot(key)
            drop = None
            labelled = 0
            if info is not None and performance is not None and info.primary_metric is not None:
                labelled = performance.labelled_count
                current = performance.metric(info.primary_metric)
                drop = relative_drop(info.baseline_performance, current, info.primary_metric)
            decisions.append(
                decide(
                    self.config.retraining_policy,
                    model_name=key.model_name,
                    model_version=key.model_version,
                    now_ms=now_ms,
                    drift=self.drift.drift(key),
                    performance_drop=drop,
                    labelled_count=labelled,
                    last_trained_ms=None if info is None else info.trained_at_ms,
                )
            )
        return decisions

    def close(self) -> None:
        self.flush(10.0)
        self._executor.shutdown(wait=True)
        if self.alerts is not None:
            self.alerts.close()
        self.predictions.close()
        self.feedback.close()
        self.follower.close()
        if self.exchange is not None:
            self.exchange.close()

    def _write(self, snapshot: _Snapshot) -> int:
        written = self.writer.write_all(snapshot.rows)
        self.retraining.publish(snapshot.decisions)
        if self.alerts is not None:
            for decision in snapshot.decisions:
                alert = alert_for_decision(decision)
                if alert is not None:
                    self.alerts.notify(alert)
            spike = self.dead_letter_watch.check() if self.dead_letter_watch else None
            if spike is not None:
                self.alerts.notify(spike)
        return written

    def _alert_for_command(self, command: ControlCommand) -> None:
        assert self.alerts is not None
        for alert in alerts_for_command(command):
            self.alerts.notify(alert)

    def _finish_snapshot(self, wait_s: float = 0.0) -> None:
        snapshot = self._inflight
        if snapshot is None or snapshot.future is None:
            return
        future = snapshot.future
        if not future.done():
            if wait_s <= 0:
                return
            wait([future], timeout=wait_s)
            if not future.done():
                return
        self._inflight = None
        error = future.exception()
        retry = self._snapshot_retry
        if error is not None:
            # Offsets stay uncommitted: after a restart these records are read again.
            self.counts.snapshot_failures += 1
            if retry.failed(time.monotonic()):
                logger.error(
                    "snapshot not written, offsets not committed (%d failed in a row; "
                    "next try in %.1f s): %s",
                    retry.failures,
                    retry.delay_ms() / 1000,
                    error,
                )
            return
        outage = retry.succeeded()
        if outage is not None:
            logger.warning(
                "snapshots written again after %d failed in a row over %.0f s",
                outage.failures,
                time.monotonic() - outage.since,
            )
        self.counts.snapshots += 1
        self.counts.rows_written += future.result()
        self.counts.decisions += len(snapshot.decisions)
        for decision in snapshot.decisions:
            self.counts.decisions_by_urgency[decision.urgency] += 1
        self.loop.snapshot_written_at = time.monotonic()
        for commit, name, positions in snapshot.positions:
            try:
                # The loop does not wait for the coordinator's answer; a flush does.
                commit(positions, wait=self._flushing)
            except KafkaException as exc:
                logger.warning("commit of %s offsets failed (re-read on restart): %s", name, exc)
