"""Dashboard SQL: fixed text with bound placeholders, bucket widths, nothing formatted in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from safeloop.services.dashboard import queries
from safeloop.services.dashboard.queries import Query, Scope

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
PLACEHOLDER = re.compile(r"\{(\w+):[^}]+\}")
HOSTILE = "fraud'; DROP TABLE predictions; --"


def every_query(model: str = "fraud", minutes: int = 60) -> list[Query]:
    scope = Scope.last(model, minutes, now=NOW)
    return [
        queries.models(scope.since),
        queries.data_extent(model, scope.since),
        queries.traffic_mix(scope),
        queries.serving_config(model),
        queries.control_events(scope),
        queries.serving_series(scope),
        queries.window_series(scope),
        queries.reliability(scope),
        queries.drift_table(scope),
        queries.retraining(scope),
        queries.retraining_steps(scope),
        queries.labelling_queue(model, NOW - timedelta(minutes=15)),
        queries.pending_approvals("rollout_state", "awaiting_approval"),
    ]


@pytest.mark.parametrize("query", every_query(), ids=lambda q: q.name)
def test_every_placeholder_is_bound_and_every_value_used(query: Query) -> None:
    assert set(PLACEHOLDER.findall(query.sql)) == set(query.parameters)


def test_user_input_never_reaches_the_sql_text() -> None:
    for query in every_query(model=HOSTILE):
        assert HOSTILE not in query.sql
        assert "DROP" not in query.sql
        if "model" in query.parameters:
            assert query.parameters["model"] == HOSTILE


def test_query_text_does_not_depend_on_the_values() -> None:
    assert [q.sql for q in every_query("a", 15)] == [q.sql for q in every_query("b", 1440)]
    assert [q.sql for q in every_query("a", 1441)] == [q.sql for q in every_query("b", 10_080)]


def test_ranges_beyond_a_day_read_the_hourly_rollup() -> None:
    day = {q.name: q.sql for q in every_query(minutes=1440)}
    week = {q.name: q.sql for q in every_query(minutes=10_080)}
    for name in ("traffic_mix", "serving_series"):
        assert "FROM serving_minutes_agg" in day[name]
        assert "FROM serving_hours_agg" in week[name]
        assert "minute" not in week[name]


@pytest.mark.parametrize(
    ("minutes", "step"),
    [(1, 60), (60, 60), (240, 60), (360, 120), (1440, 360), (10_080, 3600), (44_640, 14_400)],
)
def test_buckets_are_whole_periods_for_about_240_points(minutes: int, step: int) -> None:
    scope = Scope.last("m", minutes, now=NOW)
    assert scope.step_seconds == step
    assert minutes * 60 / scope.step_seconds <= queries.TARGET_POINTS


def test_scope_parameters_are_naive_utc() -> None:
    scope = Scope.last("m", 30, now=datetime(2026, 1, 2, 13, 0, tzinfo=UTC))
    params = scope.parameters()
    assert params["until"] == datetime(2026, 1, 2, 13, 0)
    assert params["since"] == datetime(2026, 1, 2, 12, 30)
    assert params["since"].tzinfo is None


def test_queries_only_read() -> None:
    for query in every_query():
        assert re.match(r"\s*(SELECT|WITH)\b", query.sql)
        assert not re.search(r"\b(INSERT|ALTER|DROP|CREATE|TRUNCATE|OPTIMIZE)\b", query.sql)


def test_task_series_are_charted_and_task_figures_bind_the_scope() -> None:
    from datetime import UTC, datetime

    from safeloop.services.dashboard import queries, task_queries

    assert set(task_queries.TASK_SERIES) <= set(queries.PERFORMANCE_METRICS)
    scope = queries.Scope.last("species", 60, datetime(2026, 1, 1, tzinfo=UTC))
    query = task_queries.task_figures(scope)
    assert query.parameters["model"] == "species"
    assert list(query.parameters["figures"]) == list(task_queries.TASK_FIGURES)
