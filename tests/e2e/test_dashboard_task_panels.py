"""The multi-class and regression panels in headless Chromium, over windows the metrics core
wrote for a 3-class model and a regressor (an hour of one-minute windows each)."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_dashboard_browser import CHROMIUM, _browser, _dashboard, _points

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.tables import PERFORMANCE_METRICS, PREDICTIONS, MetricRow
from safeloop.services.metrics.baseline import Baseline
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.multiclass import probability_columns
from safeloop.services.metrics.performance import Task, performance_snapshot
from safeloop.services.metrics.rows import RowContext, performance_rows

MULTICLASS_CHARTS = ["chart-multiclass", "chart-logloss", "chart-confusion"]
REGRESSION_CHARTS = ["chart-regression", "chart-r2", "chart-residuals"]


def _windows(now: datetime) -> tuple[list[MetricRow], list[PredictionEvent]]:
    rng = np.random.default_rng(1)
    residuals = Baseline.from_training_sample(rng.normal(0.0, 1.0, 2_000))
    rows: list[MetricRow] = []
    events: list[PredictionEvent] = []
    for minute in range(60):
        end = now - timedelta(minutes=minute)
        end_ms = int(end.timestamp() * 1000)
        window = {"window": "time_3600000ms"}
        logits = rng.normal(0.0, 1.5, (200, 3))
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        truth = np.array([rng.choice(3, p=p) for p in probabilities], dtype=float)
        snapshot = performance_snapshot(
            Task.MULTICLASS,
            probabilities.argmax(axis=1).astype(float),
            truth,
            probabilities=probability_columns(truth, probabilities),
        )
        key = WindowKey("species", "v1", Route.PRODUCTION)
        rows += performance_rows(RowContext(key, end_ms - 60_000, end_ms, window), snapshot)
        actual = rng.normal(20.0, 4.0, 200)
        shift = 0.0 if minute > 20 else 1.5  # the regressor's errors drift in the last 20 min
        regression = performance_snapshot(
            Task.REGRESSION,
            actual - rng.normal(shift, 1.0, 200),
            actual,
            residual_baseline=residuals,
        )
        key = WindowKey("price", "v1", Route.PRODUCTION)
        rows += performance_rows(RowContext(key, end_ms - 60_000, end_ms, window), regression)
        for model in ("species", "price"):
            events.append(
                PredictionEvent(
                    prediction_id=f"{model}-{minute}",
                    model_name=model,
                    model_version="v1",
                    timestamp=end_ms - 30_000,
                    features={"x": 1.0},
                    prediction=1.0,
                    confidence=None,
                    latency_ms=2.0,
                    route=Route.PRODUCTION,
                    replica_id="replica-0",
                    routing_key="k",
                    routing_hash_version=1,
                )
            )
    return rows, events


@pytest.fixture(scope="module")
def task_dashboard(stack: Any) -> Any:
    settings = stack.fresh("dashtasks")
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    metric_rows, events = _windows(now)
    with closing(clickhouse_client(settings)) as client:
        insert_idempotent(client, PREDICTIONS, PREDICTIONS.rows(events))
        insert_idempotent(client, PERFORMANCE_METRICS, PERFORMANCE_METRICS.rows(metric_rows))
    with _dashboard(settings) as url:
        yield url


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")
def test_multiclass_and_regression_panels_draw(task_dashboard: str, artifacts_dir: Path) -> None:
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # A loaded machine can take a while to serve plotly.js to a fresh browser.
        page.goto(task_dashboard + "?model=species", timeout=120_000)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        page.wait_for_function(
            "ids => ids.every(id => (document.getElementById(id).data || []).length > 0)",
            arg=MULTICLASS_CHARTS,
            timeout=30_000,
        )
        assert page.locator("body").get_attribute("data-task") == "multiclass"
        assert page.locator("#regression-panels").is_hidden()
        points = {chart: _points(page, chart) for chart in MULTICLASS_CHARTS}
        assert points["chart-multiclass"] >= 100 and points["chart-logloss"] >= 50, points
        cells = page.evaluate("() => document.getElementById('chart-confusion').data[0].z")
        assert len(cells) == 3 and sum(sum(row) for row in cells) == 200
        assert page.locator("#class-table tbody tr").count() == 3
        assert page.locator("#multiclass-summary tbody tr").count() == 1
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts_dir / "dashboard-multiclass.png"), full_page=True)

        page.select_option("#model", "price")
        page.wait_for_function(
            "ids => ids.every(id => (document.getElementById(id).data || []).length > 0)",
            arg=REGRESSION_CHARTS,
            timeout=30_000,
        )
        assert page.locator("body").get_attribute("data-task") == "regression"
        assert page.locator("#multiclass-panels").is_hidden()
        points = {chart: _points(page, chart) for chart in REGRESSION_CHARTS}
        assert all(n >= 50 for n in points.values()), points
        assert page.locator("#regression-table tbody tr").count() == 1
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts_dir / "dashboard-regression.png"), full_page=True)
        assert page.locator(".error:not(:empty)").count() == 0
        assert not errors, errors
