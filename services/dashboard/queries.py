"""The dashboard's SQL: fixed statements over the views of schemas/clickhouse/05x, values bound
as clickhouse-connect server-side parameters (never formatted into the text)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

# About this many points per series, whatever the range: rollup rows merge into wider buckets.
TARGET_POINTS: Final = 240
# The reliability diagram shows current calibration: the windows of the range's last hour.
RELIABILITY_MINUTES: Final = 60

# Figures charted from window_metrics (health + performance tables).
PERFORMANCE_METRICS: Final = (
    "accuracy",
    "f1",
    "roc_auc",
    "label_coverage",
    "expected_calibration_error",
    "shadow_agreement_rate",
    # Multi-class and regression models (services/dashboard/task_queries.TASK_SERIES).
    "macro_f1",
    "micro_f1",
    "log_loss",
    "mae",
    "rmse",
    "r2",
    "residual_psi",
    "residual_mean",
)


@dataclass(frozen=True)
class Query:
    """One statement and the values bound to its `{name:Type}` placeholders."""

    name: str
    sql: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


_PLACEHOLDER = re.compile(r"\{(\w+):[^}]+\}")


def bind(name: str, sql: str, values: Mapping[str, Any]) -> Query:
    """A Query with the values its `{name:Type}` placeholders use; a missing one is a bug."""
    used = set(_PLACEHOLDER.findall(sql))
    missing = used - set(values)
    if missing:
        raise KeyError(f"{name}: no value for {sorted(missing)}")
    return Query(name, sql, {key: values[key] for key in sorted(used)})


@dataclass(frozen=True)
class Rollup:
    """A pre-aggregated serving table and its time column (fixed names, never user input)."""

    table: str
    time_column: str
    seconds: int

    def range_filter(self) -> str:
        column = self.time_column
        return (
            f"{column} >= toStartOfInterval({{since:DateTime('UTC')}}, "
            f"toIntervalSecond({self.seconds})) AND {column} <= {{until:DateTime('UTC')}}"
        )


MINUTES: Final = Rollup("serving_minutes_agg", "minute", 60)
HOURS: Final = Rollup("serving_hours_agg", "hour", 3600)
HOURLY_AFTER_SECONDS: Final = 24 * 3600


@dataclass(frozen=True)
class Scope:
    """Which model and time range a page shows."""

    model: str
    since: datetime
    until: datetime

    @classmethod
    def last(cls, model: str, minutes: int, now: datetime | None = None) -> Scope:
        until = (now or datetime.now(UTC)).astimezone(UTC)
        return cls(model, until - timedelta(minutes=minutes), until)

    @property
    def rollup(self) -> Rollup:
        """Minute rows up to a day, hour rows beyond (a week is then 168 rows per series)."""
        span = (self.until - self.since).total_seconds()
        return MINUTES if span <= HOURLY_AFTER_SECONDS else HOURS

    @property
    def step_seconds(self) -> int:
        """Bucket width: whole rollup periods, wide enough for about TARGET_POINTS buckets."""
        period = self.rollup.seconds
        span = max((self.until - self.since).total_seconds(), period)
        return max(1, math.ceil(span / TARGET_POINTS / period)) * period

    def parameters(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "since": self.since.replace(tzinfo=None),
            "until": self.until.replace(tzinfo=None),
            "step": self.step_seconds,
        }


def models(since: datetime) -> Query:
    """Models with traffic since `since`, busiest first, plus models only seen in control."""
    return bind(
        "models",
        """
        SELECT model_name, sum(requests) AS requests
        FROM
        (
            SELECT model_name, sum(requests) AS requests
            FROM serving_minutes_agg
            WHERE minute >= {since:DateTime('UTC')}
            GROUP BY model_name
            UNION ALL
            SELECT DISTINCT model_name, toUInt64(0) AS requests FROM control_events
        )
        GROUP BY model_name
        ORDER BY requests DESC, model_name
        LIMIT 100
        """,
        {"since": since.astimezone(UTC).replace(tzinfo=None)},
    )


def data_extent(model: str, since: datetime) -> Query:
    """The first and last moment the model has serving rows or control entries since `since`:
    what the default range is fitted to."""
    return bind(
        "data_extent",
        """
        SELECT count() AS found, min(t) AS earliest, max(t) AS latest
        FROM
        (
            SELECT minute AS t FROM serving_minutes_agg
            WHERE model_name = {model:String} AND minute >= {since:DateTime('UTC')}
            UNION ALL
            SELECT toDateTime(issued_at, 'UTC') AS t FROM control_events
            WHERE model_name = {model:String} AND issued_at >= {since:DateTime('UTC')}
        )
        """,
        {"model": model, "since": since.astimezone(UTC).replace(tzinfo=None)},
    )


def traffic_mix(scope: Scope) -> Query:
    """Requests, errors and latency per version and route over the whole range."""
    rollup = scope.rollup
    sql = f"""
        SELECT
            model_version,
            route,
            sum(requests) AS requests,
            sum(errors) AS errors,
            quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms) AS latency,
            max({rollup.time_column}) AS last_seen
        FROM {rollup.table}
        WHERE model_name = {{model:String}} AND {rollup.range_filter()}
        GROUP BY model_version, route
        HAVING requests > 0
        ORDER BY route, model_version
    """  # noqa: S608 - table and column names are Rollup constants; values are bound
    return bind("traffic_mix", sql, scope.parameters())


def serving_config(model: str) -> Query:
    """The newest broadcast command: what replicas are serving now (decisions as fallback)."""
    return bind(
        "serving_config",
        """
        SELECT issued_at, kind, issuer, reason, production_version, canary_version,
               canary_percent, canary_enabled, shadow_version, shadow_enabled, kill_switch,
               sequence, details
        FROM control_events
        WHERE model_name = {model:String} AND entry_type != 'refusal'
        ORDER BY entry_type = 'command' DESC, issued_at DESC, sequence DESC
        LIMIT 1
        """,
        {"model": model},
    )


def control_events(scope: Scope, limit: int = 200) -> Query:
    """Every control entry in the range, newest first, with its reason."""
    return bind(
        "control_events",
        """
        SELECT issued_at, entry_type, kind, issuer, reason, production_version,
               canary_version, canary_percent, canary_enabled, shadow_version, sequence, details
        FROM control_events
        WHERE model_name = {model:String}
          -- a rollout row restates the command published beside it; show the command once
          AND entry_type != 'rollout'
          AND issued_at >= {since:DateTime('UTC')} AND issued_at <= {until:DateTime('UTC')}
        ORDER BY issued_at DESC, sequence DESC
        LIMIT {limit:UInt32}
        """,
        {**scope.parameters(), "limit": limit},
    )


def serving_series(scope: Scope) -> Query:
    """Traffic, errors, latency percentiles and labels per version, route and bucket."""
    rollup = scope.rollup
    sql = f"""
        SELECT
            toStartOfInterval({rollup.time_column}, toIntervalSecond({{step:UInt32}})) AS bucket,
            model_version,
            route,
            sum(requests) AS requests,
            sum(errors) AS errors,
            quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms) AS latency,
            sum(labelled) AS labelled
        FROM {rollup.table}
        WHERE model_name = {{model:String}} AND {rollup.range_filter()}
        GROUP BY bucket, model_version, route
        ORDER BY model_version, route, bucket
    """  # noqa: S608 - table and column names are Rollup constants; values are bound
    return bind("serving_series", sql, scope.parameters())


def window_series(scope: Scope, metrics: Sequence[str] = PERFORMANCE_METRICS) -> Query:
    """Windowed figures (accuracy, F1, AUC, coverage, shadow agreement...) averaged per bucket."""
    return bind(
        "window_series",
        """
        SELECT
            toStartOfInterval(window_end, toIntervalSecond({step:UInt32})) AS bucket,
            model_version,
            route,
            metric,
            avg(value) AS value,
            sum(sample_count) AS sample_count
        FROM window_metrics
        WHERE model_name = {model:String} AND metric IN {metrics:Array(String)}
          AND window_start >= {since:DateTime('UTC')} AND window_start <= {until:DateTime('UTC')}
        GROUP BY bucket, model_version, route, metric
        ORDER BY metric, model_version, route, bucket
        """,
        {**scope.parameters(), "metrics": list(metrics)},
    )


def reliability(scope: Scope, recent_minutes: int = RELIABILITY_MINUTES) -> Query:
    """Reliability bins of the range's last `recent_minutes`, windows weighted by bin count.

    Bounded so the cost does not grow with the range: it is the current calibration.
    """
    return bind(
        "reliability",
        """
        SELECT
            model_version,
            route,
            bin,
            sum(n) AS count,
            sum(n * predicted) / sum(n) AS mean_predicted,
            sum(n * observed) / sum(n) AS observed_rate
        FROM
        (
            SELECT
                model_version,
                route,
                window_end,
                toUInt32(substring(metric, 17, 2)) AS bin,
                anyIf(value, endsWith(metric, '_count')) AS n,
                anyIf(value, endsWith(metric, '_mean_predicted')) AS predicted,
                anyIf(value, endsWith(metric, '_observed_rate')) AS observed
            FROM window_metrics
            WHERE model_name = {model:String} AND source = 'performance'
              AND startsWith(metric, 'reliability_bin_')
              AND window_start >= greatest({since:DateTime('UTC')},
                  {until:DateTime('UTC')} - toIntervalMinute({recent:UInt32}))
              AND window_start <= {until:DateTime('UTC')}
            GROUP BY model_version, route, window_end, bin
        )
        WHERE n > 0
        GROUP BY model_version, route, bin
        ORDER BY model_version, route, bin
        """,
        {**scope.parameters(), "recent": recent_minutes},
    )


def drift_table(scope: Scope) -> Query:
    """Newest PSI per feature and version in the range, with its band and the range's peak."""
    return bind(
        "drift_table",
        """
        SELECT
            feature,
            model_version,
            route,
            argMax(value, window_end) AS psi,
            argMax(band, window_end) AS band,
            max(value) AS max_psi,
            max(window_end) AS last_window_end,
            argMax(sample_count, window_end) AS sample_count
        FROM drift_features
        WHERE model_name = {model:String} AND metric = 'psi'
          AND window_start >= {since:DateTime('UTC')} AND window_start <= {until:DateTime('UTC')}
        GROUP BY feature, model_version, route
        ORDER BY psi DESC, feature
        LIMIT 500
        """,
        scope.parameters(),
    )


def retraining(scope: Scope, limit: int = 50) -> Query:
    """Retraining decisions in the range, newest first."""
    return bind(
        "retraining",
        """
        SELECT timestamp, model_version, should_retrain, urgency, reason, max_psi,
               performance_drop, drifted_features
        FROM retraining_events
        WHERE model_name = {model:String}
          AND timestamp >= {since:DateTime('UTC')} AND timestamp <= {until:DateTime('UTC')}
        ORDER BY timestamp DESC
        LIMIT {limit:UInt32}
        """,
        {**scope.parameters(), "limit": limit},
    )


def retraining_steps(scope: Scope, limit: int = 100) -> Query:
    """The retraining loop's steps in the range, newest first, with each candidate's lineage."""
    return bind(
        "retraining_steps",
        """
        SELECT timestamp, run_id, stage, step, base_version, candidate_version, actor, reason,
               JSONExtract(state, 'lineage', 'Map(String, String)') AS lineage
        FROM retraining_steps FINAL
        WHERE model_name = {model:String}
          AND timestamp >= {since:DateTime('UTC')} AND timestamp <= {until:DateTime('UTC')}
        ORDER BY timestamp DESC, step DESC
        LIMIT {limit:UInt32}
        """,
        {**scope.parameters(), "limit": limit},
    )


def labelling_queue(model: str, since: datetime, limit: int = 20) -> Query:
    """The least confident recent answers that have no outcome yet.

    Candidates come from the recent end of `predictions` (its key starts with model and
    time); the outcome check probes `outcomes` by prediction_id, its primary key.
    """
    return bind(
        "labelling_queue",
        """
        WITH candidates AS
        (
            SELECT prediction_id, model_version, route, timestamp, prediction, confidence
            FROM predictions
            WHERE model_name = {model:String} AND timestamp >= {since:DateTime64(3, 'UTC')}
              AND route != 'shadow' AND error IS NULL AND confidence IS NOT NULL
            ORDER BY confidence ASC, timestamp DESC
            LIMIT 1 BY prediction_id
            LIMIT {candidates:UInt32}
        )
        SELECT prediction_id, model_version, route, timestamp, prediction, confidence
        FROM candidates
        WHERE prediction_id NOT IN
        (
            SELECT prediction_id FROM outcomes
            WHERE prediction_id IN (SELECT prediction_id FROM candidates)
        )
        ORDER BY confidence ASC, timestamp DESC
        LIMIT {limit:UInt32}
        """,
        {
            "model": model,
            "since": since.astimezone(UTC).replace(tzinfo=None),
            "candidates": limit * 5,
            "limit": limit,
        },
    )


def pending_approvals(state_key: str, phase: str, limit: int = 100) -> Query:
    """Every model whose newest rollout transition left it waiting for a person, oldest first.

    Rollout rows carry the state after each transition as JSON under `state_key` (see
    services/rollout/persist.py); the newest one per model says where the rollout stands.
    """
    return bind(
        "pending_approvals",
        """
        SELECT model_name, last_issued_at AS issued_at, last_sequence AS sequence,
               last_details AS details
        FROM
        (
            SELECT model_name,
                   argMax(details, (issued_at, sequence)) AS last_details,
                   max(issued_at) AS last_issued_at,
                   argMax(sequence, (issued_at, sequence)) AS last_sequence
            FROM control_events
            WHERE entry_type = 'rollout'
            GROUP BY model_name
        )
        WHERE JSONExtractString(last_details[{state_key:String}], 'phase') = {phase:String}
        ORDER BY issued_at, model_name
        LIMIT {limit:UInt32}
        """,
        {"state_key": state_key, "phase": phase, "limit": limit},
    )
