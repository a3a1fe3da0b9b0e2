"""The table registry: every ClickHouse table safeloop writes, with its columns, row and identity.

The columns are the DDL's in schemas/clickhouse/ less those the server fills (DEFAULT ...);
tests/unit/test_table_registry.py checks them against the DDL. A table's identity columns are
what makes a retried row the same row: they make the insert deduplication token, so a batch
sent again after a timeout or a crash is dropped by ClickHouse instead of doubled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Generic, TypeVar

from safeloop.schemas.events import (
    ControlCommand,
    DeadLetter,
    FaultInjection,
    FeedbackRecord,
    OutcomeEvent,
    PredictionEvent,
    RetrainingDecision,
)

T = TypeVar("T")
Row = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One figure of one window; `feature` is used by drift rows only ('' = model level)."""

    model_name: str
    model_version: str
    route: str
    window_start_ms: int
    window_end_ms: int
    metric: str
    value: float
    sample_count: int
    labels: Mapping[str, str] = field(default_factory=dict)
    feature: str = ""
    # Segment and drift rows ('' = the whole population): e.g. country, BR.
    segment_key: str = ""
    segment_value: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Column name -> value, timestamps still in epoch milliseconds."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "route": self.route,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            "metric": self.metric,
            "feature": self.feature,
            "value": self.value,
            "sample_count": self.sample_count,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True, slots=True)
class ReplayKey:
    """How a row emitted again by a replay is recognised among the rows a table holds.

    Stored rows are looked up by `lookup` (values of type `lookup_type`, the sorting key's
    leading column where it can be) and compared on `columns`, which leave out emission times:
    a replay emits the same row at another time. `millis` are DateTime64 columns that rows
    carry as epoch milliseconds.
    """

    lookup: str
    lookup_type: str
    columns: tuple[str, ...]
    millis: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Table(Generic[T]):
    """One table: its name, insert columns, how an item becomes a row, what identifies a row."""

    name: str
    columns: tuple[str, ...]
    build: Callable[[T], Row]
    identity_columns: tuple[str, ...]
    # None: rows of this table are not checked against what it holds (not written by a replay).
    replay: ReplayKey | None = None
    _identity_at: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _replay_at: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _lookup_at: int = field(init=False, repr=False, compare=False)
    # A row's identity values as a tuple, read in one C call (itemgetter of several indices).
    _identity_of: Callable[[Row], tuple[object, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [c for c in self.identity_columns if c not in self.columns]
        if missing:
            raise ValueError(f"{self.name}: identity columns {missing} are not columns")
        positions = tuple(self.columns.index(c) for c in self.identity_columns)
        object.__setattr__(self, "_identity_at", positions)
        # itemgetter of one index returns the value, not a tuple; of none, it cannot be built.
        getter = itemgetter(*positions) if len(positions) > 1 else _tuple_getter(positions)
        object.__setattr__(self, "_identity_of", getter)
        replay_columns = () if self.replay is None else (self.replay.lookup, *self.replay.columns)
        missing = [c for c in replay_columns if c not in self.columns]
        if missing:
            raise ValueError(f"{self.name}: replay key columns {missing} are not columns")
        replay_at = () if self.replay is None else self.replay.columns
        object.__setattr__(self, "_replay_at", tuple(self.columns.index(c) for c in replay_at))
        lookup_at = -1 if self.replay is None else self.columns.index(self.replay.lookup)
        object.__setattr__(self, "_lookup_at", lookup_at)

    def replay_identity(self, row: Row) -> tuple[object, ...]:
        """`row`'s values of the replay key's columns: equal for a row and its replay."""
        return tuple(row[i] for i in self._replay_at)

    def lookup_value(self, row: Row) -> object:
        """The value `row` is looked up by (its replay key's `lookup` column)."""
        if self._lookup_at < 0:
            raise ValueError(f"{self.name} has no replay key")
        return row[self._lookup_at]

    def rows(self, items: Iterable[T]) -> list[Row]:
        """The rows of `items`, in `columns` order (DateTime64 columns take epoch ms)."""
        build = self.build
        return [build(item) for item in items]

    def identity(self, row: Row) -> bytes:
        """What makes `row` the same row when it is sent again."""
        return repr(tuple(row[i] for i in self._identity_at)).encode()

    def dedup_token(self, rows: Sequence[Row]) -> str:
        """An insert deduplication token for exactly these rows, in this order."""
        # One repr of every row's identity tuple: the batch's hot path, in C but for the map.
        identities = repr(list(map(self._identity_of, rows))).encode()
        digest = hashlib.blake2b(identities, digest_size=16)
        return f"{self.name}-{digest.hexdigest()}-{len(rows)}"


def _tuple_getter(positions: tuple[int, ...]) -> Callable[[Row], tuple[object, ...]]:
    def identity_of(row: Row) -> tuple[object, ...]:
        return tuple(row[i] for i in positions)

    return identity_of


def _prediction_row(p: PredictionEvent) -> Row:
    return (
        p.prediction_id,
        p.model_name,
        p.model_version,
        p.timestamp,
        p.features,
        p.prediction,
        p.confidence,
        p.latency_ms,
        p.route.value,
        p.replica_id,
        p.routing_key,
        p.routing_hash_version,
        p.error,
        None if p.error_kind is None else p.error_kind.value,
        p.class_probabilities,
        p.segments,
    )


def _outcome_row(o: OutcomeEvent) -> Row:
    return (o.prediction_id, o.ground_truth, o.timestamp, o.source)


def _feedback_row(f: FeedbackRecord) -> Row:
    return (
        f.prediction_id,
        f.model_name,
        f.model_version,
        f.route.value,
        f.replica_id,
        f.features,
        f.prediction,
        f.confidence,
        f.prediction_timestamp,
        f.status.value,
        f.ground_truth,
        f.outcome_timestamp,
        f.label_delay_ms,
        f.outcome_source,
        f.emitted_at,
        f.class_probabilities,
        f.segments,
    )


def _dead_letter_row(d: DeadLetter) -> Row:
    return (
        d.source_topic,
        d.source_partition,
        d.source_offset,
        d.key,
        d.value,
        d.reason,
        d.error_type,
        d.timestamp,
        d.consumer,
    )


@dataclass(frozen=True, slots=True)
class ControlLogEntry:
    """A control_log row: a signed command, or a rollout's state after a transition."""

    command: ControlCommand
    entry_type: str


def _injection_map(injection: FaultInjection | None) -> dict[str, str]:
    if injection is None:
        return {}
    return {
        "version": injection.version,
        "error_rate": repr(injection.error_rate),
        "latency_ms": repr(injection.latency_ms),
        "until": str(injection.until),
    }


def _control_log_row(entry: ControlLogEntry) -> Row:
    command = entry.command
    config = command.config
    return (
        entry.entry_type,
        command.command_id,
        command.model_name,
        command.kind.value,
        command.sequence,
        command.issued_at,
        command.issuer,
        command.reason,
        config.production_version,
        config.canary_version,
        config.canary_basis_points,
        config.canary_enabled,
        config.shadow_version,
        config.shadow_enabled,
        config.kill_switch,
        config.fallback_version,
        dict(config.flags),
        _injection_map(config.injection),
        command.key_id,
        command.signature,
        dict(command.details),
    )


def _retraining_row(d: RetrainingDecision) -> Row:
    return (
        d.decision_id,
        d.model_name,
        d.model_version,
        d.timestamp,
        d.should_retrain,
        d.urgency.value,
        d.reason,
        d.max_psi,
        d.performance_drop,
        list(d.drifted_features),
    )


@dataclass(frozen=True, slots=True)
class RetrainingStep:
    """One transition of a retraining run; `state` is the run after it, as JSON (resumable)."""

    run_id: str
    model_name: str
    base_version: str
    candidate_version: str
    stage: str
    step: int
    timestamp_ms: int
    actor: str
    reason: str
    state: str


def _retraining_step_row(s: RetrainingStep) -> Row:
    return (
        s.run_id,
        s.model_name,
        s.base_version,
        s.candidate_version,
        s.stage,
        s.step,
        s.timestamp_ms,
        s.actor,
        s.reason,
        s.state,
    )


_METRIC_HEAD = ("model_name", "model_version", "route", "window_start", "window_end", "metric")
_METRIC_TAIL = ("value", "sample_count", "labels")


def _metric_row(row: MetricRow) -> Row:
    return (
        row.model_name,
        row.model_version,
        row.route,
        row.window_start_ms,
        row.window_end_ms,
        row.metric,
        row.value,
        row.sample_count,
        dict(row.labels),
    )


def _drift_row(row: MetricRow) -> Row:
    values = _metric_row(row)
    return (*values[:6], row.feature, row.segment_key, row.segment_value, *values[6:])


def _segment_metric_row(row: MetricRow) -> Row:
    values = _metric_row(row)
    return (*values[:6], row.segment_key, row.segment_value, *values[6:])


PREDICTIONS: Table[PredictionEvent] = Table(
    "predictions",
    (
        "prediction_id",
        "model_name",
        "model_version",
        "timestamp",
        "features",
        "prediction",
        "confidence",
        "latency_ms",
        "route",
        "replica_id",
        "routing_key",
        "routing_hash_version",
        "error",
        "error_kind",
        "class_probabilities",
        "segments",
    ),
    _prediction_row,
    identity_columns=("model_name", "model_version", "route", "timestamp", "prediction_id"),
    # One row per (prediction_id, route): a re-send with another timestamp (a client rebuilding
    # its event on retry) sorts elsewhere, so ReplacingMergeTree would keep both; the join flags
    # it as repeated and this key drops it, the first stored winning.
    replay=ReplayKey("prediction_id", "String", ("prediction_id", "route")),
)
OUTCOMES: Table[OutcomeEvent] = Table(
    "outcomes",
    ("prediction_id", "ground_truth", "timestamp", "source"),
    _outcome_row,
    identity_columns=("prediction_id", "timestamp", "source", "ground_truth"),
    replay=ReplayKey(
        "prediction_id",
        "String",
        ("prediction_id", "timestamp", "source", "ground_truth"),
        frozenset({"timestamp"}),
    ),
)
FEEDBACK: Table[FeedbackRecord] = Table(
    "feedback",
    (
        "prediction_id",
        "model_name",
        "model_version",
        "route",
        "replica_id",
        "features",
        "prediction",
        "confidence",
        "prediction_timestamp",
        "status",
        "ground_truth",
        "outcome_timestamp",
        "label_delay_ms",
        "outcome_source",
        "emitted_at",
        "class_probabilities",
        "segments",
    ),
    _feedback_row,
    # (prediction_id, route) is the row; status and emitted_at make each version of it.
    identity_columns=("prediction_id", "route", "status", "emitted_at"),
    # A replay emits the same version again later: its content, not emitted_at, recognises it.
    # A correction carries another outcome, so it stays a version of its own.
    replay=ReplayKey(
        "prediction_id",
        "String",
        (
            "prediction_id",
            "route",
            "status",
            "ground_truth",
            "outcome_timestamp",
            "outcome_source",
        ),
        frozenset({"outcome_timestamp"}),
    ),
)
DEAD_LETTERS: Table[DeadLetter] = Table(
    "dead_letters",
    (
        "source_topic",
        "source_partition",
        "source_offset",
        "key",
        "value",
        "reason",
        "error_type",
        "timestamp",
        "consumer",
    ),
    _dead_letter_row,
    identity_columns=("source_topic", "consumer", "source_partition", "source_offset"),
    # One input is one dead letter, whichever worker of the group replays it.
    replay=ReplayKey(
        "source_offset", "Int64", ("source_topic", "source_partition", "source_offset")
    ),
)
CONTROL_LOG: Table[ControlLogEntry] = Table(
    "control_log",
    (
        "entry_type",
        "command_id",
        "model_name",
        "kind",
        "sequence",
        "issued_at",
        "issuer",
        "reason",
        "production_version",
        "canary_version",
        "canary_basis_points",
        "canary_enabled",
        "shadow_version",
        "shadow_enabled",
        "kill_switch",
        "fallback_version",
        "flags",
        "injection",
        "key_id",
        "signature",
        "details",
    ),
    _control_log_row,
    identity_columns=("command_id", "entry_type"),
)
RETRAINING_DECISIONS: Table[RetrainingDecision] = Table(
    "retraining_decisions",
    (
        "decision_id",
        "model_name",
        "model_version",
        "timestamp",
        "should_retrain",
        "urgency",
        "reason",
        "max_psi",
        "performance_drop",
        "drifted_features",
    ),
    _retraining_row,
    identity_columns=("decision_id",),
)
RETRAINING_STEPS: Table[RetrainingStep] = Table(
    "retraining_steps",
    (
        "run_id",
        "model_name",
        "base_version",
        "candidate_version",
        "stage",
        "step",
        "timestamp",
        "actor",
        "reason",
        "state",
    ),
    _retraining_step_row,
    identity_columns=("run_id", "step"),
)


@dataclass(frozen=True, slots=True)
class ProgressMark:
    """A stream_progress row: derived rows of `source` at or below `mark` may be stored."""

    consumer_group: str
    source: str
    partition: int
    mark: int


def _progress_row(m: ProgressMark) -> Row:
    return (m.consumer_group, m.source, m.partition, m.mark)


STREAM_PROGRESS: Table[ProgressMark] = Table(
    "stream_progress",
    ("consumer_group", "source", "partition", "mark"),
    _progress_row,
    identity_columns=("consumer_group", "source", "partition", "mark"),
)
# Metric rows are re-computed figures: every column is part of what makes a row the same row.
HEALTH_METRICS: Table[MetricRow] = Table(
    "health_metrics",
    (*_METRIC_HEAD, *_METRIC_TAIL),
    _metric_row,
    identity_columns=(*_METRIC_HEAD, *_METRIC_TAIL),
)
PERFORMANCE_METRICS: Table[MetricRow] = Table(
    "performance_metrics",
    (*_METRIC_HEAD, *_METRIC_TAIL),
    _metric_row,
    identity_columns=(*_METRIC_HEAD, *_METRIC_TAIL),
)
_SEGMENT = ("segment_key", "segment_value")
# Drift rows of the whole population leave the segment empty (schemas/clickhouse/023).
DRIFT_METRICS: Table[MetricRow] = Table(
    "drift_metrics",
    (*_METRIC_HEAD, "feature", *_SEGMENT, *_METRIC_TAIL),
    _drift_row,
    identity_columns=(*_METRIC_HEAD, "feature", *_SEGMENT, *_METRIC_TAIL),
)
SEGMENT_METRICS: Table[MetricRow] = Table(
    "segment_metrics",
    (*_METRIC_HEAD, *_SEGMENT, *_METRIC_TAIL),
    _segment_metric_row,
    identity_columns=(*_METRIC_HEAD, *_SEGMENT, *_METRIC_TAIL),
)

# Every table the code writes, by name.
TABLES: Mapping[str, Table[Any]] = {
    table.name: table
    for table in (
        PREDICTIONS,
        OUTCOMES,
        FEEDBACK,
        DEAD_LETTERS,
        CONTROL_LOG,
        RETRAINING_DECISIONS,
        RETRAINING_STEPS,
        HEALTH_METRICS,
        PERFORMANCE_METRICS,
        DRIFT_METRICS,
        SEGMENT_METRICS,
        STREAM_PROGRESS,
    )
}
