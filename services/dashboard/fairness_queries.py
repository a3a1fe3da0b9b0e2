"""The dashboard's SQL for fairness views: serving and label figures per group of one segment
key (a protected attribute such as `gender` or `country`), per version and route.

Groups come from the `segments` map of `predictions` and `feedback`; rows without the key
belong to no group and are left out. The key is a bound value, never part of the text. Ranges
beyond a day read the hourly rollup `segment_hours_agg` (schemas/clickhouse/024).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from safeloop.services.dashboard.queries import HOURS, Query, Scope, bind

# Binary classifiers predict the positive class from this score (services/metrics uses 0.5).
THRESHOLD: Final = 0.5
MAX_GROUPS: Final = 2000
_FIGURE_SEPARATOR: Final = ",\n               "  # one figure a line in the logged SQL


def segment_keys(scope: Scope) -> Query:
    """The segment keys the model's predictions in the range carry, most used first."""
    return bind(
        "segment_keys",
        """
        SELECT key, count() AS requests
        FROM predictions
        ARRAY JOIN mapKeys(segments) AS key
        WHERE model_name = {model:String}
          AND timestamp >= {since:DateTime64(3, 'UTC')}
          AND timestamp <= {until:DateTime64(3, 'UTC')}
        GROUP BY key
        ORDER BY requests DESC, key
        LIMIT 100
        """,
        scope.parameters(),
    )


class Source(Enum):
    """Where the per-group figures are read from."""

    RAW = "raw"  # predictions and feedback: exact edges, the newest version of each label
    HOURS = "hours"  # segment_hours_agg: whole hours, a week in thousands of rows


def source_of(scope: Scope) -> Source:
    """The hourly rollup beyond a day (a week of raw rows took over 15 s), else the raw rows."""
    return Source.HOURS if scope.rollup is HOURS else Source.RAW


@dataclass(frozen=True)
class Rows:
    """The rows one group query reads (fixed SQL, never user input; values are bound): the
    relation, the filter to the model, key and range, and the version, route and segment."""

    relation: str
    condition: str
    columns: str


@dataclass(frozen=True)
class GroupFigures:
    """What one group query counts: each figure's expression over its raw rows. The hourly
    rollup holds each figure as a column of the same name, summed over the hours."""

    name: str
    figures: tuple[tuple[str, str], ...]
    raw: Rows

    @property
    def counted(self) -> str:
        """The figure a group must have some of: a rollup row may hold only the other query's."""
        return self.figures[0][0]


_HOURLY = Rows(
    relation="segment_hours_agg",
    condition="""model_name = {model:String} AND segment_key = {key:String}
          AND hour >= toStartOfHour({since:DateTime('UTC')}) AND hour <= {until:DateTime('UTC')}""",
    columns="model_version, route, segment_value AS segment",
)

SERVING: Final = GroupFigures(
    "group_serving",
    (("requests", "count()"), ("errors", "countIf(error IS NOT NULL)")),
    Rows(
        relation="predictions",
        condition="""model_name = {model:String} AND mapContains(segments, {key:String})
          AND timestamp >= {since:DateTime64(3, 'UTC')}
          AND timestamp <= {until:DateTime64(3, 'UTC')}""",
        columns="model_version, route, segments[{key:String}] AS segment",
    ),
)

# Binary confusion cells at THRESHOLD, exact matches (multi-class), absolute and squared errors
# (regression): the counts every task's figures are made of. The raw rows are the stream join's
# pairs, by prediction time, the newest version of each pair picked per (prediction_id, route)
# among the range's rows (all versions of a pair share its prediction time): FINAL would merge
# the whole partition, as `feedback` is sorted by prediction_id. Labels after the join window
# (the feedback_late view) are left out: that view pairs every outcome ever received, and over
# 10M predictions this query then ran past the dashboard's 15 s limit.
LABELS: Final = GroupFigures(
    "group_labels",
    (
        ("labelled", "count()"),
        ("tp", "countIf(newest.3 >= {threshold:Float64} AND newest.4 = 1)"),
        ("fp", "countIf(newest.3 >= {threshold:Float64} AND newest.4 != 1)"),
        ("fn", "countIf(newest.3 < {threshold:Float64} AND newest.4 = 1)"),
        ("exact", "countIf(newest.3 = newest.4)"),
        ("abs_error_sum", "sum(abs(newest.3 - newest.4))"),
        ("squared_error_sum", "sum(pow(newest.3 - newest.4, 2))"),
    ),
    Rows(
        relation="""(
            -- A tuple, so that a newest version without a label is not skipped for an older.
            SELECT route,
                   argMax((model_version, segments[{key:String}], prediction, ground_truth,
                           status), emitted_at) AS newest
            FROM feedback
            WHERE model_name = {model:String} AND mapContains(segments, {key:String})
              AND prediction_timestamp >= {since:DateTime64(3, 'UTC')}
              AND prediction_timestamp <= {until:DateTime64(3, 'UTC')}
            GROUP BY prediction_id, route
        )""",
        condition="newest.5 = 'joined' AND newest.3 IS NOT NULL AND newest.4 IS NOT NULL",
        columns="newest.1 AS model_version, route, newest.2 AS segment",
    ),
)


def group_query(query: GroupFigures, scope: Scope, key: str, source: Source) -> Query:
    """`query`'s figures per version, route and group of `key`, read from `source` (the
    rollup's query is named with `_hours`; in-window label corrections count again there,
    see schemas/clickhouse/024_segment_hours.sql)."""
    if source is Source.HOURS:
        rows, name, having = _HOURLY, f"{query.name}_hours", f"HAVING {query.counted} > 0"
        selected = [f"sum({column}) AS {column}" for column, _ in query.figures]
    else:
        rows, name, having = query.raw, query.name, ""
        selected = [f"{expression} AS {column}" for column, expression in query.figures]
    figures = _FIGURE_SEPARATOR.join(selected)
    sql = f"""
        SELECT {rows.columns},
               {figures}
        FROM {rows.relation}
        WHERE {rows.condition}
        GROUP BY model_version, route, segment
        {having}
        ORDER BY model_version, route, segment
        LIMIT {{groups:UInt32}}
    """  # noqa: S608 - relations, columns and figures are the constants above; values are bound
    values = {**scope.parameters(), "key": key, "threshold": THRESHOLD, "groups": MAX_GROUPS}
    return bind(name, sql, values)


def group_serving(scope: Scope, key: str, source: Source | None = None) -> Query:
    """Requests and failed requests per version, route and group of `key`, from `source`
    (by default the scope's: `source_of`)."""
    return group_query(SERVING, scope, key, source or source_of(scope))


def group_labels(scope: Scope, key: str, source: Source | None = None) -> Query:
    """Labelled pairs per version, route and group of `key` with LABELS' counts, from `source`
    (by default the scope's: `source_of`)."""
    return group_query(LABELS, scope, key, source or source_of(scope))


def model_task(scope: Scope) -> Query:
    """Whether the model's windows in the range hold multi-class or regression figures."""
    return bind(
        "model_task",
        """
        SELECT countIf(metric = 'class_count') AS multiclass, countIf(metric = 'mae') AS regression
        FROM window_metrics
        WHERE model_name = {model:String} AND source = 'performance'
          AND metric IN ('class_count', 'mae')
          AND window_start >= {since:DateTime('UTC')} AND window_start <= {until:DateTime('UTC')}
        """,
        scope.parameters(),
    )
