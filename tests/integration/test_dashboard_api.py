"""The dashboard views and JSON API against the real ClickHouse endpoint, with a few rows."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver import Client

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.schemas.tables import (
    CONTROL_LOG,
    DRIFT_METRICS,
    FEEDBACK,
    OUTCOMES,
    PERFORMANCE_METRICS,
    PREDICTIONS,
    RETRAINING_STEPS,
)
from safeloop.services.dashboard.app import create_app
from safeloop.services.dashboard.exceptions import QueryFailedError
from safeloop.services.dashboard.queries import Query
from safeloop.services.dashboard.reader import Reader

GRAFANA_JSON = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "dashboards"


def _now() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None) - timedelta(minutes=1)


# Reset when the rows are written (module fixture): the queries ask for the last 30 minutes,
# and a full run collects this module long before it runs it.
NOW = _now()
# computed_at set by hand: two versions of one figure, the later one is what the views show.
METRIC_COLUMNS = [*(c for c in PERFORMANCE_METRICS.columns if c != "labels"), "computed_at"]
# The rows below are written as a writer from before segments would (the column's default: {}).
PREDICTION_COLUMNS = [c for c in PREDICTIONS.columns if c != "segments"]
FEEDBACK_COLUMNS = [c for c in FEEDBACK.columns if c != "segments"]


def _predictions() -> list[list[Any]]:
    rows = []
    for i in range(40):  # two minutes: 30 production (4 failed), 10 canary with slow answers
        route, version = ("canary", "v2") if i % 4 == 0 else ("production", "v1")
        minute = NOW - timedelta(minutes=i % 2)
        error = "timeout" if route == "production" and i % 10 == 1 else None
        latency = 50.0 + i if route == "canary" else 5.0 + i % 3
        confidence = 0.5 + i / 100
        rows.append(
            [
                f"p{i}",
                "fraud",
                version,
                minute + timedelta(seconds=i),
                {"amount": i},
                confidence,
                confidence,
                latency,
                route,
                "replica-1",
                f"k{i}",
                1,
                error,
                None if error is None else "server",
                [],
            ]
        )
    rows.append(
        [
            *("p0", "fraud", "v1s", NOW, {"amount": 0.0}, 0.9, 0.9, 7.0, "shadow", "r", "k0", 1),
            *(None, None, []),
        ]
    )
    return rows


def _feedback(client: Client) -> None:
    # p2..p9 joined (production, minute NOW-... by i % 2); p0 has a label too, via outcomes.
    rows = []
    for i in range(2, 10):
        stamp = NOW - timedelta(minutes=i % 2) + timedelta(seconds=i)
        version, route = ("v2", "canary") if i % 4 == 0 else ("v1", "production")
        rows.append(
            [
                f"p{i}",
                "fraud",
                version,
                route,
                "replica-1",
                {},
                0.6,
                0.6,
                stamp,
                "joined",
                1.0,
                stamp + timedelta(seconds=5),
                5000,
                "labels",
                stamp + timedelta(seconds=5),
                [],
            ]
        )
    client.insert(
        "feedback",
        rows,
        column_names=FEEDBACK_COLUMNS,
    )
    client.insert(
        "outcomes",
        [[f"p{i}", 1.0, NOW, "labels"] for i in (0, *range(2, 10))],
        column_names=OUTCOMES.columns,
    )


def _metrics(client: Client) -> None:
    start, end = NOW - timedelta(minutes=1), NOW
    old, new = NOW - timedelta(seconds=30), NOW
    perf = [
        ["fraud", "v1", "production", start, end, "accuracy", 0.5, 8, old],
        ["fraud", "v1", "production", start, end, "accuracy", 0.875, 8, new],  # recomputed
        ["fraud", "v1", "production", start, end, "f1", 0.8, 8, new],
        ["fraud", "v1", "production", start, end, "roc_auc", 0.9, 8, new],
        ["fraud", "v1s", "shadow", start, end, "shadow_agreement_rate", 0.95, 20, new],
    ]
    for b, (n, predicted, observed) in enumerate([(4, 0.15, 0.25), (6, 0.85, 0.8)]):
        name = f"reliability_bin_{b * 9:02d}"
        perf += [
            ["fraud", "v1", "production", start, end, f"{name}_count", n, n, new],
            ["fraud", "v1", "production", start, end, f"{name}_mean_predicted", predicted, n, new],
            ["fraud", "v1", "production", start, end, f"{name}_observed_rate", observed, n, new],
        ]
    client.insert("performance_metrics", perf, column_names=METRIC_COLUMNS)
    drift = [
        ["fraud", "v1", "production", start, end, "psi", "amount", 0.4, 100, {"band": "major"}],
        ["fraud", "v1", "production", start, end, "psi", "age", 0.05, 100, {}],
        ["fraud", "v1", "production", start, end, "ks", "age", 0.5, 100, {}],
    ]
    # As a writer from before per-segment drift would (no segment columns: they default to '').
    columns = [c for c in DRIFT_METRICS.columns if c not in ("segment_key", "segment_value")]
    client.insert("drift_metrics", drift, column_names=columns)


def _control(client: Client) -> None:
    steps = [
        (9, "set_canary", "v2", 500, "canary starts at 5 %"),
        (5, "set_canary", "v2", 2500, "healthy: step 2"),
        (2, "rollback", None, 0, "error rate 0.12 above 0.05"),
    ]
    rows = [
        [
            "command",
            f"c{seq}",
            "fraud",
            kind,
            seq,
            NOW - timedelta(minutes=minutes_ago),
            "guard",
            reason,
            "v1",
            version,
            basis_points,
            True,
            "v1s",
            True,
            False,
            None,
            {},
            {},
            "k1",
            "sig",
            {"step": str(seq)},
        ]
        for seq, (minutes_ago, kind, version, basis_points, reason) in enumerate(steps, start=1)
    ]
    client.insert(
        "control_log",
        rows,
        column_names=CONTROL_LOG.columns,
    )
    client.insert(
        "retraining_decisions",
        [
            [
                "d1",
                "fraud",
                "v1",
                NOW,
                True,
                "elevated",
                "amount drifted",
                0.4,
                0.1,
                ["amount"],
            ]
        ],
        column_names=[
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
        ],
    )
    state = (
        '{"lineage": {"decision_id": "d1", "half_life_ms": "86400000", "training_rows": "480",'
        ' "train_from_ms": "0", "evaluation_to_ms": "1"}}'
    )
    client.insert(
        "retraining_steps",
        [
            ["d1", "fraud", "v1", "", "received", 0, NOW, "safeloop-retrain", "asked", "{}"],
            ["d1", "fraud", "v1", "v1-r1", "registered", 1, NOW, "safeloop-retrain", "ok", state],
        ],
        column_names=RETRAINING_STEPS.columns,
    )


@pytest.fixture(scope="module")
def dash(stack: Any) -> Iterator[Settings]:
    global NOW
    NOW = _now()
    settings: Settings = stack.fresh("dash")
    with closing(clickhouse_client(settings)) as client:
        client.insert("predictions", _predictions(), column_names=PREDICTION_COLUMNS)
        _feedback(client)
        _metrics(client)
        _control(client)
    yield settings


def rows(settings: Settings, sql: str) -> list[dict[str, Any]]:
    with closing(clickhouse_client(settings)) as client:
        result = client.query(sql)
        return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


def api(settings: Settings, path: str) -> Any:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(Reader(settings)))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            return await client.get(path)

    response = asyncio.run(run())
    assert response.status_code == 200, response.text
    return response.json()


def test_serving_minutes_materialise_traffic_errors_and_latency(dash: Settings) -> None:
    got = rows(
        dash,
        "SELECT route, sum(requests) AS n, sum(errors) AS e, max(latency_p99_ms) AS "
        "p99 FROM serving_minutes WHERE model_name = 'fraud' GROUP BY route "
        "ORDER BY route",
    )
    by_route = {r["route"]: r for r in got}
    assert by_route["production"]["n"] == 30
    assert by_route["production"]["e"] == 4
    assert by_route["canary"]["n"] == 10
    assert by_route["canary"]["p99"] > 50
    assert by_route["shadow"]["n"] == 1


def test_labels_are_counted_by_prediction_minute(dash: Settings) -> None:
    got = rows(
        dash,
        "SELECT sum(labelled) AS l, sum(requests) AS n FROM serving_minutes "
        "WHERE model_name = 'fraud' AND route = 'production'",
    )
    assert got == [{"l": 6, "n": 30}]


def test_window_views_keep_the_newest_computation_and_band_drift(dash: Settings) -> None:
    got = rows(dash, "SELECT value FROM window_metrics WHERE metric = 'accuracy'")
    assert got == [{"value": 0.875}]
    bands = rows(
        dash, "SELECT feature, band FROM drift_features WHERE metric = 'psi' ORDER BY feature"
    )
    assert bands == [{"feature": "age", "band": "stable"}, {"feature": "amount", "band": "major"}]
    events = rows(dash, "SELECT kind, canary_percent FROM control_events ORDER BY sequence")
    assert [e["canary_percent"] for e in events] == [5.0, 25.0, 0.0]


def test_models_and_overview(dash: Settings) -> None:
    assert api(dash, "/api/models")["models"] == ["fraud"]
    overview = api(dash, "/api/overview?model=fraud&minutes=30")
    assert overview["config"]["kind"] == "rollback"
    assert overview["config"]["canary_version"] is None
    assert overview["config"]["shadow_version"] == "v1s"
    traffic = {(t["version"], t["route"]): t for t in overview["traffic"]}
    assert traffic[("v1", "production")]["requests"] == 30
    assert traffic[("v1", "production")]["error_rate"] == pytest.approx(4 / 30)
    assert [e["kind"] for e in overview["events"]] == ["rollback", "set_canary", "set_canary"]
    assert overview["events"][0]["reason"] == "error rate 0.12 above 0.05"


def test_series(dash: Settings) -> None:
    series = api(dash, "/api/series?model=fraud&minutes=30")
    serving = {s["name"]: s for s in series["serving"]}
    assert sum(serving["v1 (production)"]["requests"]) == 30
    assert all(p is not None for p in serving["v2 (canary)"]["p95"])
    assert series["metrics"]["accuracy"][0]["value"] == [0.875]
    assert series["metrics"]["shadow_agreement_rate"][0]["name"] == "v1s (shadow)"
    coverage = {c["name"]: c for c in series["coverage"]}
    assert max(coverage["v1 (production)"]["value"]) > 0
    assert series["canary"]["percent"] == [5.0, 25.0, 0.0, 0.0]


def test_quality_and_labelling_queue(dash: Settings) -> None:
    quality = api(dash, "/api/quality?model=fraud&minutes=30")
    (curve,) = quality["reliability"]
    assert curve["predicted"] == [0.15, 0.85]
    assert curve["count"] == [4, 6]
    assert [d["feature"] for d in quality["drift"]] == ["amount", "age"]
    assert quality["retraining"][0]["drifted_features"] == ["amount"]
    newest, oldest = quality["retraining_steps"]
    assert (newest["stage"], oldest["stage"]) == ("registered", "received")
    assert newest["candidate_version"] == "v1-r1"
    assert newest["lineage"]["half_life_ms"] == "86400000" and oldest["lineage"] == {}
    queue = api(dash, "/api/labelling?model=fraud")["items"]
    ids = [q["prediction_id"] for q in queue]
    labelled = {"p0", *(f"p{i}" for i in range(2, 10))}
    failed = {f"p{i}" for i in range(40) if i % 10 == 1 and i % 4 != 0}
    assert ids and not set(ids) & (labelled | failed)
    confidences = [q["confidence"] for q in queue]
    assert confidences == sorted(confidences)


def test_reader_is_read_only(dash: Settings) -> None:
    reader = Reader(dash)
    with pytest.raises(QueryFailedError, match=r"readonly|READONLY"):
        reader.rows(
            Query(
                "write",
                "INSERT INTO outcomes (prediction_id, ground_truth, "
                "timestamp, source) VALUES ('x', 1, now(), 's')",
            )
        )
    reader.close()


def test_grafana_panels_run_against_the_views(dash: Settings) -> None:
    import json

    board = json.loads((GRAFANA_JSON / "safeloop.json").read_text())
    sql = [t["rawSql"] for p in board["panels"] for t in p["targets"]]
    sql += [v["query"] for v in board["templating"]["list"]]
    sql += [a["target"]["rawSql"] for a in board["annotations"]["list"]]
    for text in sql:
        expanded = text.replace("${model}", "fraud").replace("$__interval_s", "60")
        expanded = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= now() - INTERVAL 1 HOUR", expanded)
        expanded = re.sub(
            r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(\1, INTERVAL 60 second)", expanded
        )
        assert "$" not in expanded, expanded
        got = rows(dash, expanded)
        assert got, text


def test_week_ranges_read_the_hourly_rollup(dash: Settings) -> None:
    hourly = rows(
        dash,
        "SELECT sum(requests) AS n, sum(labelled) AS l FROM serving_hours_agg "
        "WHERE model_name = 'fraud'",
    )
    assert hourly == [{"n": 41, "l": 8}]
    series = api(dash, "/api/series?model=fraud&minutes=10080")
    assert series["step_seconds"] == 3600
    serving = {s["name"]: s for s in series["serving"]}
    assert sum(serving["v1 (production)"]["requests"]) == 30
    overview = api(dash, "/api/overview?model=fraud&minutes=10080")
    assert sum(t["requests"] for t in overview["traffic"]) == 41
