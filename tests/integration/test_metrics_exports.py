"""`safeloop export labelling-queue` and `export training-window` against ClickHouse."""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path

import pytest
from _metrics_harness import MODEL, metrics_settings, settings_env

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.settings import Settings
from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, PredictionEvent, Route
from safeloop.schemas.tables import FEEDBACK, PREDICTIONS
from safeloop.services.cli.main import main

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@pytest.fixture
def settings(stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:  # type: ignore[no-untyped-def]
    settings = metrics_settings(stack.fresh("exports"), tmp_path / "models")
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    return settings


def test_exports(settings: Settings, tmp_path: Path) -> None:
    rng = random.Random(1)
    now_ms = time.time_ns() // 1_000_000
    predictions, feedback = [], []
    for index in range(200):
        confidence = 0.5 + rng.random() / 2
        features = {"age": rng.gauss(0, 1), "income": 40.0 if index == 7 else rng.gauss(0, 1)}
        event = PredictionEvent(
            f"p{index}", MODEL, "v1", now_ms - index * DAY_MS // 10, features, confidence,
            confidence, 1.0, Route.PRODUCTION, "r", f"k{index}", 1,
        )  # fmt: skip
        predictions.append(event)
        if index % 2 == 0:
            feedback.append(
                FeedbackRecord(
                    event.prediction_id,
                    MODEL,
                    "v1",
                    Route.PRODUCTION,
                    "r",
                    features,
                    confidence,
                    confidence,
                    event.timestamp,
                    FeedbackStatus.JOINED,
                    1.0,
                    event.timestamp + 1000,
                    1000,
                    "test",
                    now_ms,
                )
            )
    client = clickhouse_client(settings)
    insert_idempotent(client, PREDICTIONS, PREDICTIONS.rows(predictions))
    insert_idempotent(client, FEEDBACK, FEEDBACK.rows(feedback))

    queue_file = tmp_path / "queue.csv"
    assert main(["export", "labelling-queue", "--limit", "10", "--out", str(queue_file)]) == 0
    queue = list(csv.DictReader(queue_file.read_text().splitlines()))
    assert len(queue) == 10
    labelled = {f.prediction_id for f in feedback}
    assert not labelled & {row["prediction_id"] for row in queue}
    # The far-out-of-distribution prediction ranks first.
    assert queue[0]["prediction_id"] == "p7"
    assert queue[0]["reason"] == "out_of_distribution"

    window_file = tmp_path / "window.csv"
    argv = ["export", "training-window", MODEL, "--half-life-days", "1", "--out", str(window_file)]
    assert main(argv) == 0
    rows = list(csv.DictReader(window_file.read_text().splitlines()))
    assert len(rows) == 100
    weights = {row["prediction_id"]: float(row["weight"]) for row in rows}
    # p0 is about now (weight ~1), p20 two days old (~0.25).
    assert weights["p0"] == pytest.approx(1.0, abs=0.01)
    assert weights["p20"] == pytest.approx(0.25, abs=0.01)
    assert "feature_age" in rows[0]
