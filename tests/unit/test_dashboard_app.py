"""The dashboard app over a fake reader: routes, JSON errors, bad input, offline assets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from safeloop.infra.settings import Settings
from safeloop.services.dashboard.app import create_app
from safeloop.services.dashboard.exceptions import QueryFailedError
from safeloop.services.dashboard.queries import Query
from safeloop.services.dashboard.reader import Reader

T0 = datetime(2026, 1, 2, 12, 0)


class FakeReader(Reader):
    """Answers by query name; records every query it was asked to run."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]], fail: str = "") -> None:
        super().__init__(Settings())
        self.answers = answers
        self.fail = fail
        self.asked: list[Query] = []

    def rows(self, query: Query) -> list[dict[str, Any]]:
        self.asked.append(query)
        if query.name == self.fail:
            raise QueryFailedError(f"{query.name}: Code: 60. Unknown table")
        return self.answers.get(query.name, [])


def get(reader: Reader, path: str) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(reader))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            return await client.get(path)

    return asyncio.run(run())


def test_page_and_its_assets_are_served_locally() -> None:
    reader = FakeReader({})
    page = get(reader, "/")
    assert page.status_code == 200
    assert 'src="/vendor/plotly.min.js"' in page.text
    assert "cdn" not in page.text.lower()
    plotly = get(reader, "/vendor/plotly.min.js")
    assert plotly.status_code == 200
    assert len(plotly.content) > 1_000_000
    assert get(reader, "/static/app.js").status_code == 200


def test_models_lists_models_busiest_first() -> None:
    reader = FakeReader({"models": [{"model_name": "fraud", "requests": 9}]})
    assert get(reader, "/api/models?minutes=60").json() == {"models": ["fraud"]}


def test_extent_fits_the_range_to_the_models_data() -> None:
    earliest = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=30)
    reader = FakeReader({"data_extent": [{"found": 5, "earliest": earliest, "latest": earliest}]})
    answer = get(reader, "/api/extent?model=fraud").json()
    assert answer["model"] == "fraud"
    assert answer["minutes"] in (33, 34)  # 30 minutes and a tenth, the clock moving on
    assert reader.asked[0].parameters["model"] == "fraud"
    assert get(FakeReader({}), "/api/extent?model=fraud").json()["minutes"] == 60
    assert get(FakeReader({}), "/api/extent").status_code == 400


def test_series_shapes_every_panel() -> None:
    answers = {
        "serving_series": [
            {
                "bucket": T0,
                "model_version": "v1",
                "route": "production",
                "requests": 60,
                "errors": 3,
                "latency": [1.0, 2.0, 3.0],
                "labelled": 30,
            }
        ],
        "control_events": [
            {
                "issued_at": T0,
                "entry_type": "command",
                "kind": "rollback",
                "issuer": "guard",
                "reason": "error rate 0.2 > 0.05",
                "production_version": "v1",
                "canary_version": None,
                "canary_percent": 0.0,
                "canary_enabled": True,
                "shadow_version": None,
                "sequence": 3,
                "details": {},
            }
        ],
    }
    body = get(FakeReader(answers), "/api/series?model=fraud&minutes=60").json()
    assert body["step_seconds"] == 60
    assert body["serving"][0]["error_rate"] == [0.05]
    assert body["events"][0]["reason"] == "error rate 0.2 > 0.05"
    assert body["coverage"][0]["value"] == [0.5]
    assert body["metrics"] == {}


@pytest.mark.parametrize(
    "path",
    [
        "/api/series?minutes=60",
        "/api/series?model=fraud&minutes=abc",
        "/api/series?model=fraud&minutes=0",
        f"/api/overview?model={'x' * 201}",
    ],
)
def test_bad_input_is_a_400_with_a_message(path: str) -> None:
    reader = FakeReader({})
    response = get(reader, path)
    assert response.status_code == 400
    assert response.json()["error"]
    assert reader.asked == []


def test_a_failing_query_is_a_503_with_the_reason() -> None:
    response = get(FakeReader({}, fail="drift_table"), "/api/quality?model=fraud")
    assert response.status_code == 503
    assert response.json() == {"error": "drift_table: Code: 60. Unknown table"}


def test_user_values_travel_as_parameters() -> None:
    reader = FakeReader({})
    get(reader, "/api/labelling?model=a'b")
    (query,) = reader.asked
    assert query.parameters["model"] == "a'b"
    assert "a'b" not in query.sql
