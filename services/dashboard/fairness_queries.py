"""The dashboard's SQL for fairness views: serving and label figures per group of one segment
key (a protected attribute such as `gender` or `country`), per version and route.

Groups come from the `segments` map of `predictions` and `feedback`; rows without the key
belong to no group and are left out. The key is a bound value, never part of the text. Ranges
beyond a day read the hourly rollup `segment_hours_agg` (schemas/clickhouse/024).
"""

from __future__ import annotations

from typing import Final

from safeloop.services.dashboard.queries import HOURS, Query, Scope, bind

# Binary classifiers predict the positive class from this score (services/metrics uses 0.5).
THRESHOLD: Final = 0.5
MAX_GROUPS: Final = 2000


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


def group_serving(scope: Scope, key: str) -> Query:
    """Requests and failed requests per version, route and group of `key`: from the hourly
    rollup beyond a day (a week of raw rows took over 15 s), else from the raw rows."""
    if scope.rollup is HOURS:
        return group_serving_hours(scope, key)
    return group_serving_scan(scope, key)


def group_labels(scope: Scope, key: str) -> Query:
    """Label counts per version, route and group of `key`: hourly rollup beyond a day."""
    if scope.rollup is HOURS:
        return group_labels_hours(scope, key)
    return group_labels_scan(scope, key)


def group_serving_hours(scope: Scope, key: str) -> Query:
    """`group_serving_scan`'s figures from `segment_hours_agg` (whole hours)."""
    return bind(
        "group_serving_hours",
        """
        SELECT model_version, route, segment_value AS segment,
               sum(requests) AS requests, sum(errors) AS errors
        FROM segment_hours_agg
        WHERE model_name = {model:String} AND segment_key = {key:String}
          AND hour >= toStartOfHour({since:DateTime('UTC')}) AND hour <= {until:DateTime('UTC')}
        GROUP BY model_version, route, segment
        HAVING requests > 0
        ORDER BY model_version, route, segment
        LIMIT {groups:UInt32}
        """,
        {**scope.parameters(), "key": key, "groups": MAX_GROUPS},
    )


def group_labels_hours(scope: Scope, key: str) -> Query:
    """`group_labels_scan`'s counts from `segment_hours_agg` (whole hours; an in-window label
    correction counts again there, see schemas/clickhouse/024_segment_hours.sql)."""
    return bind(
        "group_labels_hours",
        """
        SELECT model_version, route, segment_value AS segment,
               sum(labelled) AS labelled, sum(tp) AS tp, sum(fp) AS fp, sum(fn) AS fn,
               sum(exact) AS exact, sum(abs_error_sum) AS abs_error_sum,
               sum(squared_error_sum) AS squared_error_sum
        FROM segment_hours_agg
        WHERE model_name = {model:String} AND segment_key = {key:String}
          AND hour >= toStartOfHour({since:DateTime('UTC')}) AND hour <= {until:DateTime('UTC')}
        GROUP BY model_version, route, segment
        HAVING labelled > 0
        ORDER BY model_version, route, segment
        LIMIT {groups:UInt32}
        """,
        {**scope.parameters(), "key": key, "groups": MAX_GROUPS},
    )


def group_serving_scan(scope: Scope, key: str) -> Query:
    """Requests and failed requests per version, route and group of `key`, from `predictions`."""
    return bind(
        "group_serving",
        """
        SELECT model_version, route, segments[{key:String}] AS segment,
               count() AS requests, countIf(error IS NOT NULL) AS errors
        FROM predictions
        WHERE model_name = {model:String} AND mapContains(segments, {key:String})
          AND timestamp >= {since:DateTime64(3, 'UTC')}
          AND timestamp <= {until:DateTime64(3, 'UTC')}
        GROUP BY model_version, route, segment
        ORDER BY model_version, route, segment
        LIMIT {groups:UInt32}
        """,
        {**scope.parameters(), "key": key, "groups": MAX_GROUPS},
    )


def group_labels_scan(scope: Scope, key: str) -> Query:
    """Labelled pairs per version, route and group of `key`, with the counts every task's
    figures are made of: binary confusion cells at THRESHOLD, exact matches (multi-class),
    absolute and squared errors (regression). The stream join's pairs, by prediction time.

    The newest version of each pair is picked per (prediction_id, route) among the range's
    rows (all versions of a pair share its prediction time): FINAL would merge the whole
    partition, as `feedback` is sorted by prediction_id. Labels after the join window (the
    feedback_late view) are left out: that view pairs every outcome ever received, and over
    10M predictions this query then ran past the dashboard's 15 s limit.
    """
    return bind(
        "group_labels",
        """
        SELECT newest.1 AS model_version, route, newest.2 AS segment,
               count() AS labelled,
               countIf(newest.3 >= {threshold:Float64} AND newest.4 = 1) AS tp,
               countIf(newest.3 >= {threshold:Float64} AND newest.4 != 1) AS fp,
               countIf(newest.3 < {threshold:Float64} AND newest.4 = 1) AS fn,
               countIf(newest.3 = newest.4) AS exact,
               sum(abs(newest.3 - newest.4)) AS abs_error_sum,
               sum(pow(newest.3 - newest.4, 2)) AS squared_error_sum
        FROM
        (
            -- A tuple, so that a newest version without a label is not skipped for an older.
            SELECT route,
                   argMax((model_version, segments[{key:String}], prediction, ground_truth,
                           status), emitted_at) AS newest
            FROM feedback
            WHERE model_name = {model:String} AND mapContains(segments, {key:String})
              AND prediction_timestamp >= {since:DateTime64(3, 'UTC')}
              AND prediction_timestamp <= {until:DateTime64(3, 'UTC')}
            GROUP BY prediction_id, route
        )
        WHERE newest.5 = 'joined' AND newest.3 IS NOT NULL AND newest.4 IS NOT NULL
        GROUP BY model_version, route, segment
        ORDER BY model_version, route, segment
        LIMIT {groups:UInt32}
        """,
        {**scope.parameters(), "key": key, "threshold": THRESHOLD, "groups": MAX_GROUPS},
    )


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
