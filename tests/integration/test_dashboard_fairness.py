"""The fairness view against the real ClickHouse engine: rows with segments inserted (joined
labels, corrected ones, late ones it leaves out), the API's per-group figures and gaps checked
against a brute-force computation over the same rows."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.services.dashboard import fairness_queries
from safeloop.services.dashboard.app import create_app
from safeloop.services.dashboard.queries import Scope
from safeloop.services.dashboard.reader import Reader

pytestmark = pytest.mark.integration


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)


# Reset when the rows are written (module fixture): a full run collects this module long
# before it runs it, and the queries ask for recent ranges.
NOW = _now()
MIN_SAMPLE = 40
# Group -> (requests, chance of a failed request, chance of a wrong answer); SE is too small.
GROUPS = {"DE": (300, 0.01, 0.10), "FR": (200, 0.05, 0.30), "IT": (120, 0.02, 0.20)}
SMALL = {"SE": (12, 0.5, 0.9)}
PREDICTION_COLUMNS = ["prediction_id", "model_name", "model_version", "route", "timestamp"]
PREDICTION_COLUMNS += ["prediction", "error", "segments"]
FEEDBACK_COLUMNS = ["prediction_id", "model_name", "model_version", "route", "prediction"]
FEEDBACK_COLUMNS += ["ground_truth", "prediction_timestamp", "status", "emitted_at", "segments"]


@dataclass
class Pair:
    """One request as inserted, and its label (newest version) if it has one."""

    model: str
    version: str
    route: str
    group: str | None
    failed: bool
    prediction: float
    truth: float | None
    # Labelled after the join window: in feedback_late only, which the view leaves out.
    late: bool = False


def _story(rng: random.Random) -> list[Pair]:
    pairs = []
    for model, version, route in [
        ("fraud", "v1", "production"),
        ("fraud", "v2", "canary"),
        ("price", "r1", "production"),
    ]:
        for group, (n, fail, wrong) in {**GROUPS, **SMALL, None: (50, 0.0, 0.0)}.items():
            if version == "v2":
                n //= 2  # the canary sees fewer requests
            for _ in range(n):
                failed = rng.random() < fail
                if model == "price":
                    truth = rng.uniform(10, 20)
                    prediction = truth + rng.gauss(0, 1 + 4 * wrong)
                else:
                    truth = float(rng.random() < 0.4)
                    right = rng.random() >= wrong
                    p = rng.uniform(0.5, 1.0) if (truth == 1) == right else rng.uniform(0, 0.49)
                    prediction = p
                labelled = not failed and rng.random() < 0.7
                pairs.append(
                    Pair(
                        model,
                        version,
                        route,
                        group,
                        failed,
                        prediction,
                        truth if labelled else None,
                        late=labelled and rng.random() < 0.1,
                    )
                )
    return pairs


def _insert(settings: Settings, pairs: list[Pair]) -> None:
    predictions: list[list[Any]] = []
    feedback: list[list[Any]] = []
    outcomes: list[list[Any]] = []
    for i, pair in enumerate(pairs):
        stamp = NOW - timedelta(seconds=i % 600)
        segments = {} if pair.group is None else {"country": pair.group, "tenant": f"t{i % 3}"}
        pid = f"p{i}"
        common = [pid, pair.model, pair.version, pair.route]
        error = "timeout" if pair.failed else None
        predictions.append(
            [*common, stamp, None if pair.failed else pair.prediction, error, segments]
        )
        if pair.truth is None:
            continue
        later = stamp + timedelta(seconds=5)
        if pair.late:
            # A label after the join window: no feedback row, the feedback_late view pairs it.
            outcomes.append([pid, pair.truth, later, "labels"])
            continue
        if i % 7 == 0:
            # A first version of the pair with the opposite label, corrected later (FINAL).
            wrong = 1.0 - pair.truth if pair.model == "fraud" else pair.truth + 50
            feedback.append([*common, pair.prediction, wrong, stamp, "joined", stamp, segments])
        feedback.append([*common, pair.prediction, pair.truth, stamp, "joined", later, segments])
    with closing(clickhouse_client(settings)) as client:
        client.insert("predictions", predictions, column_names=PREDICTION_COLUMNS)
        client.insert("feedback", feedback, column_names=FEEDBACK_COLUMNS)
        client.insert(
            "outcomes",
            outcomes,
            column_names=["prediction_id", "ground_truth", "timestamp", "source"],
        )
        # The regressor's metrics windows say what task it is.
        client.insert(
            "performance_metrics",
            [["price", "r1", "production", NOW - timedelta(minutes=1), NOW, "mae", 1.0, 10]],
            column_names=[
                "model_name",
                "model_version",
                "route",
                "window_start",
                "window_end",
                "metric",
                "value",
                "sample_count",
            ],
        )


@pytest.fixture(scope="module")
def story(stack: Any) -> Iterator[tuple[Settings, list[Pair]]]:
    global NOW
    NOW = _now()
    settings: Settings = stack.fresh("fairness")
    pairs = _story(random.Random(11))
    _insert(settings, pairs)
    yield settings, pairs


def api(settings: Settings, path: str) -> Any:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(Reader(settings)))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            return await client.get(path)

    response = asyncio.run(run())
    assert response.status_code == 200, response.text
    return response.json()


def _expected(pairs: list[Pair], model: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Brute force: every figure of every (series, group) straight from the inserted pairs."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for version, route in sorted({(p.version, p.route) for p in pairs if p.model == model}):
        name = f"{version} ({route})"
        for group in sorted({p.group for p in pairs if p.group is not None}):
            rows = [p for p in pairs if (p.model, p.version, p.group) == (model, version, group)]
            labelled = [p for p in rows if p.truth is not None and not p.late]
            figures: dict[str, Any] = {
                "requests": len(rows),
                "errors": sum(p.failed for p in rows),
                "labelled": len(labelled),
                "error_rate": sum(p.failed for p in rows) / len(rows),
            }
            if model == "price":
                errors = [p.prediction - (p.truth or 0.0) for p in labelled]
                figures["mae"] = sum(abs(e) for e in errors) / len(errors)
                figures["rmse"] = math.sqrt(sum(e * e for e in errors) / len(errors))
            else:
                hits = [(p.prediction >= 0.5, p.truth == 1) for p in labelled]
                tp = sum(a and b for a, b in hits)
                fp = sum(a and not b for a, b in hits)
                fn = sum(b and not a for a, b in hits)
                figures["accuracy"] = sum(a == b for a, b in hits) / len(hits)
                figures["f1"] = 2 * tp / (2 * tp + fp + fn)
            out[(name, group)] = figures
    return out


def _expected_gap(
    expected: dict[tuple[str, str], dict[str, Any]], name: str, figure: str, basis: str
) -> tuple[float, str, str]:
    values = {
        g: f[figure] for (n, g), f in expected.items() if n == name and f[basis] >= MIN_SAMPLE
    }
    higher_is_better = figure in ("accuracy", "f1")
    best = (max if higher_is_better else min)(values, key=lambda g: values[g])
    worst = (min if higher_is_better else max)(values, key=lambda g: values[g])
    return abs(values[best] - values[worst]), best, worst


@pytest.mark.parametrize(
    ("model", "figures"),
    [("fraud", ["error_rate", "accuracy", "f1"]), ("price", ["error_rate", "mae", "rmse"])],
)
def test_fairness_matches_a_brute_force_computation(
    story: tuple[Settings, list[Pair]], model: str, figures: list[str]
) -> None:
    settings, pairs = story
    assert api(settings, f"/api/segments?model={model}&minutes=30")["keys"] == [
        "country",
        "tenant",
    ]
    view = api(
        settings, f"/api/fairness?model={model}&minutes=30&key=country&min_sample={MIN_SAMPLE}"
    )
    assert [f["name"] for f in view["figures"]] == figures
    assert view["task"] == ("regression" if model == "price" else "classification")
    expected = _expected(pairs, model)
    got = {(s["name"], g["group"]): g for s in view["series"] for g in s["groups"]}
    # Rows without the key are in no group.
    assert set(got) == set(expected)
    for key, want in expected.items():
        for name, value in want.items():
            assert got[key][name] == pytest.approx(value), (key, name)
        assert got[key]["requests_enough"] == (want["requests"] >= MIN_SAMPLE)
        assert got[key]["labelled_enough"] == (want["labelled"] >= MIN_SAMPLE)
    assert got[(view["series"][0]["name"], "SE")]["requests_enough"] is False
    for series in view["series"]:
        for figure in view["figures"]:
            gap = series["gaps"][figure["name"]]
            want_gap, best, worst = _expected_gap(
                expected, series["name"], figure["name"], figure["basis"]
            )
            assert gap["gap"] == pytest.approx(want_gap), (series["name"], figure["name"])
            assert (gap["best"], gap["worst"]) == (best, worst)
            assert "SE" not in (gap["best"], gap["worst"])


def test_an_unknown_key_has_no_groups(story: tuple[Settings, list[Pair]]) -> None:
    settings, _ = story
    view = api(settings, "/api/fairness?model=fraud&minutes=30&key=gender'--")
    assert view["series"] == []


def test_a_week_is_read_from_the_hourly_rollup(story: tuple[Settings, list[Pair]]) -> None:
    """Beyond a day the view reads segment_hours_agg: serving figures are the brute force's;
    label counts also count each in-window correction's superseded version (see 024)."""
    settings, pairs = story
    week = 7 * 24 * 60
    scope = Scope.last("fraud", week)
    assert fairness_queries.group_serving(scope, "country").name == "group_serving_hours"
    assert fairness_queries.group_labels(scope, "country").name == "group_labels_hours"
    view = api(settings, f"/api/fairness?model=fraud&minutes={week}&key=country&min_sample=1")
    got = {(s["name"], g["group"]): g for s in view["series"] for g in s["groups"]}
    expected = _expected(pairs, "fraud")
    assert set(got) == set(expected)
    corrected: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(pairs):
        if pair.model == "fraud" and pair.group and pair.truth is not None and not pair.late:
            key = (f"{pair.version} ({pair.route})", pair.group)
            corrected[key] = corrected.get(key, 0) + (i % 7 == 0)
    for key, want in expected.items():
        assert got[key]["requests"] == want["requests"], key
        assert got[key]["errors"] == want["errors"], key
        assert got[key]["error_rate"] == pytest.approx(want["error_rate"]), key
        assert got[key]["labelled"] == want["labelled"] + corrected.get(key, 0), key
