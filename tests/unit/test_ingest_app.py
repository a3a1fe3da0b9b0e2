"""The HTTP ingest over a fake producer: per-record results, 413, tokens, delivery, bind rule."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from _fake_producer import FakeProducer
from starlette.types import ASGIApp

from safeloop.infra.settings import Secret
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.services.publishing.exceptions import IngestBindError
from safeloop.services.publishing.ingest_app import IngestConfig, create_app
from safeloop.services.publishing.ingest_bind import check_ingest_bind

CONFIG = IngestConfig("u.outcomes", "u.predictions", Secret(""), max_body_bytes=2000)


def call(app: ASGIApp, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(send())


def test_outcomes_are_answered_per_record_and_only_valid_ones_are_published() -> None:
    producer = FakeProducer()
    app = create_app(CONFIG, producer)  # type: ignore[arg-type]
    batch = [
        {"prediction_id": "a", "ground_truth": 1, "source": "crm"},
        {"prediction_id": "b", "ground_truth": "NaN"},
        {"ground_truth": 0},
    ]
    response = call(app, "POST", "/outcomes", json=batch)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert body["results"][0] == {"index": 0, "status": "accepted", "prediction_id": "a"}
    assert body["results"][1]["reason"] == "ground_truth: must be a finite number"
    assert body["results"][2]["reason"] == "prediction_id: is missing"
    (message,) = producer.delivered
    assert (message.topic(), message.key()) == ("u.outcomes", b"a")
    assert OUTCOME_CODEC.decode(message.value()).source == "crm"


def test_predictions_accept_the_wrapped_form_and_return_generated_ids() -> None:
    producer = FakeProducer()
    app = create_app(CONFIG, producer)  # type: ignore[arg-type]
    batch = {"predictions": [{"model_name": "churn", "model_version": "v1", "prediction": 0.3}]}
    body = call(app, "POST", "/predictions", json=batch).json()
    pid = body["results"][0]["prediction_id"]
    event = PREDICTION_CODEC.decode(producer.delivered[0].value())
    assert (event.prediction_id, event.replica_id, producer.delivered[0].topic()) == (
        pid,
        "http-ingest",
        "u.predictions",
    )


def test_bodies_over_the_limit_get_413_and_nothing_is_published() -> None:
    producer = FakeProducer()
    app = create_app(CONFIG, producer)  # type: ignore[arg-type]
    big = [{"prediction_id": f"p{i}", "ground_truth": 1} for i in range(100)]
    assert call(app, "POST", "/outcomes", json=big).status_code == 413
    # Without a Content-Length (chunked), the limit holds while reading.
    chunks = [json.dumps(big).encode()[i : i + 500] for i in range(0, 4000, 500)]

    async def stream() -> Any:
        for chunk in chunks:
            yield chunk

    response = call(app, "POST", "/outcomes", content=stream())
    assert response.status_code == 413
    assert producer.delivered == []


def test_malformed_bodies_are_400() -> None:
    app = create_app(CONFIG, FakeProducer())  # type: ignore[arg-type]
    assert call(app, "POST", "/outcomes", content=b"{nope").status_code == 400
    assert call(app, "POST", "/outcomes", json={"rows": []}).status_code == 400


def test_a_configured_token_is_required_on_posts() -> None:
    config = IngestConfig("o", "p", Secret("s3cret"))
    app = create_app(config, FakeProducer())  # type: ignore[arg-type]
    batch = [{"prediction_id": "a", "ground_truth": 1}]
    assert call(app, "POST", "/outcomes", json=batch).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert call(app, "POST", "/outcomes", json=batch, headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret"}
    assert call(app, "POST", "/outcomes", json=batch, headers=right).status_code == 200
    assert call(app, "GET", "/healthz").json() == {"status": "ok"}


def test_an_unconfirmed_delivery_is_503_so_the_client_retries() -> None:
    producer = FakeProducer()
    producer.fail_with = "broker down"
    app = create_app(CONFIG, producer)  # type: ignore[arg-type]
    response = call(app, "POST", "/outcomes", json=[{"prediction_id": "a", "ground_truth": 1}])
    assert response.status_code == 503
    assert "retry" in response.json()["error"]


def test_metrics_count_requests_and_records() -> None:
    app = create_app(CONFIG, FakeProducer())  # type: ignore[arg-type]
    call(app, "POST", "/outcomes", json=[{"prediction_id": "a", "ground_truth": 1}, {}])
    text = call(app, "GET", "/metrics").text
    assert 'safeloop_ingest_records_total{kind="outcomes",result="accepted"} 1' in text
    assert 'safeloop_ingest_records_total{kind="outcomes",result="rejected"} 1' in text
    assert 'safeloop_ingest_requests_total{endpoint="outcomes",status="200"} 1' in text


def test_binding_beyond_loopback_needs_a_token() -> None:
    check_ingest_bind("127.0.0.1", Secret(""))
    check_ingest_bind("::1", Secret(""))
    check_ingest_bind("0.0.0.0", Secret("t"))
    with pytest.raises(IngestBindError, match="SAFELOOP_INGEST_TOKEN"):
        check_ingest_bind("0.0.0.0", Secret(""))
