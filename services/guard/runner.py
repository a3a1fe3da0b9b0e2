"""The central rollback guard: the replicas' rules (`judge`) over every replica's traffic.

It watches `predictions` (and, through the performance tracker, `feedback`), keeps the last
`window_rows / partitions` requests per (model, version, route) of each partition (records are
spread evenly by prediction id, so together they are about the last `window_rows` requests,
and the replicas' local guards still never trip before this one), and judges each model's
current canary against its production version after every batch. The windows of each
partition become mergeable `HealthSummary`s, summed per (model, version, route) before
judging: with several metrics instances sharing the partitions, the judge adds the summaries
the others publish (`monitor/summary_exchange.py`) for the partitions it does not own, so every
instance count judges the same figures. Requests carrying segments (a model's segment_keys)
also fill per-segment windows whose summaries ride inside their key's summary (mergeable the
same way); a canary within every threshold overall is then judged per segment
(`segment_judge.py`), and a breach in one segment alone rolls it back with the segment named
in the command's details (`segment`). A breach publishes a signed ROLLBACK with the reason
and the figures in `details`, audited in `control_log`; its command id is derived from the
model, the canary and the config sequence it replaces, so two judges that both see the breach
during a rebalance publish the same command (replicas apply it once: a duplicate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig, PredictionEvent, Route
from safeloop.services.control.exceptions import ControlError
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.guard.judge import judge
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.segment_judge import Answers, judge_segments
from safeloop.services.guard.segment_windows import SegmentWindows
from safeloop.services.guard.verdict import GuardVerdict, VerdictKind
from safeloop.services.metrics.columns import health_batch
from safeloop.services.metrics.health import HEALTH_COLUMNS
from safeloop.services.metrics.health_summary import HealthSummary
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.performance import PerformanceMetric, PerformanceSnapshot
from safeloop.services.metrics.performance_tracker import PerformanceTracker
from safeloop.services.metrics.segments import SegmentCodes
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, CountWindow

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 1.0
# How far a replica's clock may trail the clock that signed the command starting a canary run:
# events older than the command by more than this belong to an earlier run of that version.
RUN_START_SLACK_MS = 10_000
# Events observed without a partition (tests, a single unpartitioned source).
NO_PARTITION = -1

PartitionSummaries = Mapping[int, Mapping[WindowKey, HealthSummary]]


class SegmentAnswers(Protocol):
    """Labelled rows and right answers per segment (the metrics service's SegmentTracker)."""

    def answers(self, model_name: str, version: str, route: Route) -> dict[str, tuple[int, int]]:
        """`key=value` -> (labelled rows, right answers)."""
        ...


def guard_command_id(model_name: str, canary_version: str, replaces_sequence: int) -> str:
    """The same rollback, decided twice, is the same command (replicas apply it once)."""
    text = f"guard-rollback|{model_name}|{canary_version}|{replaces_sequence}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """A rollback the guard issued (or tried to: `command` is None when publishing failed)."""

    model_name: str
    canary_version: str
    production_version: str
    verdict: GuardVerdict
    command: ControlCommand | None
    error: str | None = None


class CentralGuard:
    """Judges canaries on demand; `check` is cheap enough to run after every polled batch."""

    def __init__(
        self,
        policy: GuardPolicy,
        issuer: CommandIssuer,
        *,
        performance: PerformanceTracker | None = None,
        window_rows: int = 1_000,
        partitions: int = 1,
        segment_min_sample: int = 100,
        segment_refresh_ms: int = 1_000,
        segment_answers: SegmentAnswers | None = None,
    ) -> None:
        self.policy = policy
        self._issuer = issuer
        self._performance = performance
        self._window_rows = window_rows
        self._partition_rows = max(1, -(-window_rows // max(1, partitions)))
        # partition -> its windows
        self._windows: dict[int, KeyedWindows[CountWindow]] = {}
        # partition -> its per-segment windows (codes shared: labels are what merge)
        self._segment_windows: dict[int, SegmentWindows] = {}
        self._segment_codes = SegmentCodes()
        self.segment_min_sample = segment_min_sample
        self._segment_refresh_ms = segment_refresh_ms
        self._segment_answers = segment_answers
        self._failed_at: dict[str, float] = {}
        self.rollbacks = 0
        self.rollback_failures = 0
        # Canary judgements since start, by verdict kind.
        self.verdicts: dict[VerdictKind, int] = dict.fromkeys(VerdictKind, 0)
        # The newest judgement of each model's canary (segments judged and seen included).
        self.latest: dict[str, GuardVerdict] = {}
        # Canary keys this guard has seen configured: once no longer, their windows go (and
        # late events of that run with them).
        self._configured: set[WindowKey] = set()
        # Canary keys whose windows it keeps while it has never seen them configured (see
        # `_is_retired`); rows dropped when such a window turned out to be an earlier run's.
        self._held: set[WindowKey] = set()
        self.earlier_run_rows_dropped = 0

    def observe(
        self, events: Sequence[PredictionEvent], partitions: Sequence[int] | None = None
    ) -> None:
        """Fold a batch of predictions (read from `partitions`, one per event) into the windows.

        Shadows are skipped: their answers reach no user, so they cannot harm one.
        """
        if partitions is None:
            partitions = [NO_PARTITION] * len(events)
        by_partition: dict[int, list[PredictionEvent]] = defaultdict(list)
        for event, partition in zip(events, partitions, strict=True):
            if event.route is not Route.SHADOW:
                by_partition[partition].append(event)
        for partition, served in by_partition.items():
            keys, batch = health_batch(served)
            self._partition(partition).append(keys, batch)
            self._segments_of(partition).append(keys, served)

    def retain(self, partitions: frozenset[int]) -> None:
        """Forget the windows of partitions this instance no longer reads (their new owner
        rebuilds them)."""
        for partition in list(self._windows):
            if partition != NO_PARTITION and partition not in partitions:
                del self._windows[partition]
                self._segment_windows.pop(partition, None)

    def summaries(self) -> dict[int, dict[WindowKey, HealthSummary]]:
        """Partition -> the summary of each served key's window, stale canaries left out."""
        out: dict[int, dict[WindowKey, HealthSummary]] = {}
        for partition, windows in self._windows.items():
            segments = self._segments_of(partition)
            summaries = {}
            for key, _ in windows:
                if key.route is Route.CANARY and self._is_retired(key):
                    # Rolled back, promoted or replaced: a later retry of it starts clean.
                    windows.discard(key)
                    segments.discard(key)
                    continue
                # Read after `_is_retired`, which may have trimmed it (`_start_run`).
                window = windows.window(key)
                summary = HealthSummary.of_window(window.view())
                summaries[key] = summary.with_segments(segments.summaries(key))
            out[partition] = summaries
        return out

    def check(self, others: PartitionSummaries | None = None) -> list[GuardDecision]:
        """Judge every current canary over this instance's partitions plus `others` (the
        summaries other instances published for partitions this one does not read); roll
        back those in breach."""
        merged: dict[WindowKey, HealthSummary] = {}
        own = self.summaries()
        for partition, summaries in (others or {}).items():
            if partition in own:
                continue
            for key, summary in summaries.items():
                merged[key] = merged[key] + summary if key in merged else summary
        for summaries in own.values():
            for key, summary in summaries.items():
                merged[key] = merged[key] + summary if key in merged else summary
        decisions = []
        for key, canary in merged.items():
            if key.route is not Route.CANARY:
                continue
            config = self._issuer.config_of(key.model_name)
            if config is None or not _is_current_canary(config, key.model_version):
                continue
            production_key = WindowKey(key.model_name, config.production_version, Route.PRODUCTION)
            production = merged.get(production_key, HealthSummary.empty()).snapshot()
            canary_performance = production_performance = None
            if self._performance is not None and self.policy.max_performance_drop is not None:
                canary_performance = self._performance.count_snapshot(key)
                production_performance = self._performance.count_snapshot(production_key)
            verdict = judge(
                canary.snapshot(),
                production,
                self.policy,
                canary_performance,
                production_performance,
            )
            if verdict.kind is VerdictKind.HEALTHY and canary.segments:
                production_segments = merged.get(production_key, HealthSummary.empty()).segments
                found = judge_segments(
                    canary.segments,
                    production_segments,
                    self.policy,
                    self.segment_min_sample,
                    self._answers(key, production_key, canary_performance),
                )
                verdict = dataclasses.replace(
                    verdict,
                    kind=VerdictKind.BREACH if found.breaches else verdict.kind,
                    segment_breaches=found.breaches,
                    segments_judged=found.judged,
                    segments_seen=found.seen,
                )
            self.verdicts[verdict.kind] += 1
            self.latest[key.model_name] = verdict
            if verdict.kind is VerdictKind.BREACH and self._may_try(key.model_name):
                decisions.append(self._roll_back(key, config, verdict))
        return decisions

    def _partition(self, partition: int) -> KeyedWindows[CountWindow]:
        found = self._windows.get(partition)
        if found is None:
            rows = self._window_rows if partition == NO_PARTITION else self._partition_rows
            found = self._windows[partition] = KeyedWindows(
                lambda: CountWindow(rows, HEALTH_COLUMNS)
            )
        return found

    def _answers(
        self,
        canary: WindowKey,
        production: WindowKey,
        performance: PerformanceSnapshot | None,
    ) -> tuple[Answers, Answers] | None:
        """Both sides' labels per segment, when the canary is judged on accuracy (the figure
        segments have); labels come from this instance's feedback, as the overall rule's do."""
        source = self._segment_answers
        if source is None or performance is None:
            return None
        if self.policy.metric_for(performance.task) is not PerformanceMetric.ACCURACY:
            return None
        return (
            source.answers(canary.model_name, canary.model_version, canary.route),
            source.answers(production.model_name, production.model_version, production.route),
        )

    def _segments_of(self, partition: int) -> SegmentWindows:
        found = self._segment_windows.get(partition)
        if found is None:
            rows = self._window_rows if partition == NO_PARTITION else self._partition_rows
            found = self._segment_windows[partition] = SegmentWindows(
                rows, self._segment_codes, self._segment_refresh_ms
            )
        return found

    def _is_retired(self, key: WindowKey) -> bool:
        """A canary this guard saw configured that no longer is (each call records a canary
        found configured). One it never saw configured keeps its window: this process's view of
        the control topic may be behind the replicas (a control leader failover), and the events
        it would drop may be the breach's only evidence once the replicas' local guards stop
        routing to that canary. When such a held canary is configured, `_start_run` drops the
        rows that predate the command configuring it."""
        config = self._issuer.config_of(key.model_name)
        if config is not None and _is_current_canary(config, key.model_version):
            if key not in self._configured:
                self._configured.add(key)
                if key in self._held:
                    self._held.discard(key)
                    self._start_run(key)
            return False
        if key in self._configured:
            return True
        self._held.add(key)
        return False

    def _start_run(self, key: WindowKey) -> None:
        """Drop rows of `key` older than the command that made it the canary (less a clock
        slack): they are an earlier run's, e.g. replayed into a guard restarted after that run
        was rolled back, and must not count toward the new run's first verdict."""
        command = self._issuer.latest(key.model_name)
        if command is None or command.kind is not CommandKind.SET_CANARY:
            # Not the command that configured it (a flag changed since): when that run began is
            # unknown here, and keeping rows errs toward a rollback, not away from one.
            return
        since_ms = command.issued_at - RUN_START_SLACK_MS
        dropped = 0
        for partition, windows in self._windows.items():
            lost = windows.keep_rows(key, lambda rows: rows[TIMESTAMP_COLUMN] >= since_ms)
            if lost:
                # Segment windows keep no times: a trimmed key's segments start again.
                self._segments_of(partition).discard(key)
            dropped += lost
        if dropped:
            self.earlier_run_rows_dropped += dropped
            logger.info(
                "guard: %s rows of %s %s predate its canary command (sequence %s): earlier run",
                dropped,
                key.model_name,
                key.model_version,
                command.sequence,
            )

    def _discard(self, key: WindowKey) -> None:
        for windows in self._windows.values():
            windows.discard(key)
        for segments in self._segment_windows.values():
            segments.discard(key)

    def _may_try(self, model_name: str) -> bool:
        failed_at = self._failed_at.get(model_name)
        return failed_at is None or time.monotonic() - failed_at >= RETRY_AFTER_FAILURE_S

    def _roll_back(
        self, key: WindowKey, config: ModelConfig, verdict: GuardVerdict
    ) -> GuardDecision:
        canary, production = key.model_version, config.production_version
        details = {
            **verdict.numbers(),
            "canary_version": canary,
            "production_version": production,
            "decided_by": "central_guard",
        }

        def change(current: ModelConfig) -> ModelConfig:
            return dataclasses.replace(current, canary_version=None, canary_basis_points=0)

        reason = f"rollback guard: {verdict.reason}"
        latest = self._issuer.latest(key.model_name)
        replaces = 0 if latest is None else latest.sequence
        try:
            command = self._issuer.issue(
                key.model_name,
                CommandKind.ROLLBACK,
                change,
                reason=reason,
                details=details,
                command_id=guard_command_id(key.model_name, canary, replaces),
            )
        except ControlError as exc:
            self._failed_at[key.model_name] = time.monotonic()
            self.rollback_failures += 1
            logger.error(
                "rollback of %s canary %s not published, retrying: %s", key.model_name, canary, exc
            )
            return GuardDecision(key.model_name, canary, production, verdict, None, str(exc))
        self._failed_at.pop(key.model_name, None)
        self._discard(key)
        self.rollbacks += 1
        logger.warning(
            "rolled back %s canary %s (sequence %s): %s",
            key.model_name,
            canary,
            command.sequence,
            verdict.reason,
        )
        return GuardDecision(key.model_name, canary, production, verdict, command)


def _is_current_canary(config: ModelConfig, version: str) -> bool:
    return config.canary_version == version and config.canary_basis_points > 0
