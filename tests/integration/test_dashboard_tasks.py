"""The dashboard's multi-class and regression views over rows the metrics core wrote."""

from __future__ import annotations

import asyncio
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.settings import Settings
from safeloop.schemas.events import Route
from safeloop.schemas.tables import PERFORMANCE_METRICS
from safeloop.services.dashboard.app import create_app
from safeloop.services.dashboard.reader import Reader
from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.multiclass import probability_columns
from safeloop.services.metrics.performance import Task, performance_snapshot
from safeloop.services.metrics.rows import RowContext, performance_rows

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000) - 60_000


# Reset when the rows are written (module fixture): a full run collects this module long
# before it runs it, and the queries ask for the last hour.
NOW_MS = _now_ms()
TRUTH = [0, 0, 1, 1, 2, 2, 2]
PREDICTED = [0, 1, 1, 1, 2, 0, 2]
PROBABILITIES = [
    [0.8, 0.1, 0.1],
    [0.3, 0.6, 0.1],
    [0.1, 0.8, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.2, 0.7],
    [0.5, 0.2, 0.3],
    [0.2, 0.1, 0.7],
]


def _rows(model: str, snapshot: Any, start_ms: int, end_ms: int) -> list[Any]:
    context = RowContext(
        WindowKey(model, "v1", Route.PRODUCTION), start_ms, end_ms, {"window": "time_3600000ms"}
    )
    return performance_rows(context, snapshot)


@pytest.fixture(scope="module")
def dash(stack: Any) -> Settings:
    global NOW_MS
    NOW_MS = _now_ms()
    settings: Settings = stack.fresh("dashtask")
    truth = np.array(TRUTH, dtype=float)
    columns = probability_columns(TRUTH, PROBABILITIES)
    # An older window with every row right: the view must show the newest one only.
    older = performance_snapshot(Task.MULTICLASS, truth, truth)
    newest = performance_snapshot(
        Task.MULTICLASS, np.array(PREDICTED, dtype=float), truth, probabilities=columns
    )
    rng = np.random.default_rng(3)
    actual = rng.normal(10.0, 2.0, 200)
    predicted = actual - rng.normal(1.0, 0.5, 200)
    regression = performance_snapshot(
        Task.REGRESSION,
        predicted,
        actual,
        residual_baseline=Baseline.from_training_sample(rng.normal(0.0, 0.5, 1_000)),
    )
    rows = [
        *_rows("species", older, NOW_MS - 120_000, NOW_MS - 60_000),
        *_rows("species", newest, NOW_MS - 60_000, NOW_MS),
        *_rows("price", regression, NOW_MS - 60_000, NOW_MS),
    ]
    with closing(clickhouse_client(settings)) as client:
        insert_idempotent(client, PERFORMANCE_METRICS, PERFORMANCE_METRICS.rows(rows))
    return settings


def api(settings: Settings, path: str) -> Any:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(Reader(settings)))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            return await client.get(path)

    response = asyncio.run(run())
    assert response.status_code == 200, response.text
    return response.json()


def test_the_multiclass_view_shows_the_newest_confusion_matrix_and_classes(
    dash: Settings,
) -> None:
    data = api(dash, "/api/task?model=species&minutes=60")
    assert data["task"] == "multiclass"
    [series] = data["series"]
    assert series["name"] == "v1 (production)"
    assert series["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    by_class = {c["class"]: c for c in series["classes"]}
    assert by_class[0]["precision"] == pytest.approx(0.5)
    assert by_class[1]["recall"] == pytest.approx(1.0)
    assert by_class[2]["support"] == 3
    assert by_class[2]["f1"] == pytest.approx(0.8)
    summary = series["summary"]
    assert summary["accuracy"] == pytest.approx(5 / 7)
    assert summary["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert summary["log_loss"] is not None and summary["log_loss"] > 0


def test_the_regression_view_shows_errors_and_residual_drift(dash: Settings) -> None:
    data = api(dash, "/api/task?model=price&minutes=60")
    assert data["task"] == "regression"
    [series] = data["series"]
    summary = series["summary"]
    assert summary["mae"] == pytest.approx(1.0, abs=0.15)
    assert summary["residual_mean"] == pytest.approx(1.0, abs=0.15)
    assert summary["residual_psi"] > 1.0
    assert "confusion" not in series


def test_series_chart_the_task_figures_and_binary_models_have_no_task(dash: Settings) -> None:
    metrics = api(dash, "/api/series?model=species&minutes=60")["metrics"]
    assert {"macro_f1", "micro_f1", "log_loss"} <= set(metrics)
    assert "mae" in api(dash, "/api/series?model=price&minutes=60")["metrics"]
    assert api(dash, "/api/task?model=fraud&minutes=60") == {"task": None, "series": []}
