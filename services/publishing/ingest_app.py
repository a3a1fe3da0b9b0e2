"""The HTTP ingest: `POST /outcomes` and `POST /predictions` take a JSON batch for other languages.

Each record is validated and answered on its own (accepted, or rejected with the reason); the
accepted ones are in Kafka (acknowledged by the brokers) before the answer is 200. A body over
the limit is answered 413 without being read whole; with a token configured every POST needs
`Authorization: Bearer <token>`. `/healthz` and Prometheus `/metrics` are open.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from safeloop.infra.exceptions import DeliveryError
from safeloop.infra.kafka.produce import ConfirmingProducer, produce_confirmed
from safeloop.infra.prometheus import CONTENT_TYPE, Counter, Registry
from safeloop.infra.settings import Secret
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.outcome_batch import OutcomeTuple, encode_outcomes
from safeloop.services.publishing.exceptions import InvalidRecordError
from safeloop.services.publishing.outcome_publisher import to_outcome_tuple
from safeloop.services.publishing.outcome_rows import OutcomeDefaults, prediction_id_of
from safeloop.services.publishing.prediction_rows import prediction_event
from safeloop.services.publishing.rejection import Rejection, rejection_of

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_SOURCE = "http-ingest"


@dataclass(frozen=True)
class IngestConfig:
    """Where records go and what the ingest accepts."""

    outcomes_topic: str
    predictions_topic: str
    token: Secret
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    default_source: str = DEFAULT_SOURCE
    replica_id: str = "http-ingest"


class _BodyTooLarge(Exception):  # noqa: N818 (local control flow, answered as 413)
    pass


class IngestMetrics:
    """Requests by endpoint and status; records by kind and result."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = self.registry.register(
            Counter(
                "safeloop_ingest_requests_total",
                "HTTP ingest requests by endpoint and status code.",
                ("endpoint", "status"),
            )
        )
        self.records = self.registry.register(
            Counter(
                "safeloop_ingest_records_total",
                "Records received by the HTTP ingest, accepted (in Kafka) or rejected.",
                ("kind", "result"),
            )
        )


def create_app(config: IngestConfig, producer: ConfirmingProducer) -> Starlette:
    """The ASGI app over one shared, thread-safe producer."""
    metrics = IngestMetrics()

    def authorized(request: Request) -> bool:
        if not config.token:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), config.token.value.encode()
        )

    async def read_batch(request: Request) -> tuple[list[Any] | None, Response | None]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_body_bytes:
            return None, _too_large(config.max_body_bytes)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > config.max_body_bytes:
                    raise _BodyTooLarge
        except _BodyTooLarge:
            return None, _too_large(config.max_body_bytes)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return None, _problem(400, f"body is not valid JSON: {exc}")
        return _records_of(payload, request.url.path.strip("/"))

    def endpoint(
        kind: str, accept: Callable[[list[Any]], tuple[list[tuple[bytes, bytes]], list[Any]]]
    ) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            response = await _handle(request)
            metrics.requests.inc((kind, str(response.status_code)))
            return response

        async def _handle(request: Request) -> Response:
            if not authorized(request):
                return _problem(401, "missing or wrong bearer token")
            records, failure = await read_batch(request)
            if failure is not None:
                return failure
            assert records is not None
            encoded, results = accept(records)
            topic = config.outcomes_topic if kind == "outcomes" else config.predictions_topic
            try:
                if encoded:
                    await run_in_threadpool(produce_confirmed, producer, topic, encoded)
            except DeliveryError as exc:
                log.warning("ingest could not deliver %s %s: %s", len(encoded), kind, exc)
                return _problem(503, f"Kafka did not confirm the batch, retry it: {exc}")
            rejected = sum(1 for r in results if r["status"] == "rejected")
            metrics.records.inc((kind, "accepted"), len(encoded))
            metrics.records.inc((kind, "rejected"), rejected)
            return JSONResponse(
                {"accepted": len(encoded), "rejected": rejected, "results": results}
            )

        return handle

    def accept_outcomes(records: list[Any]) -> tuple[list[tuple[bytes, bytes]], list[Any]]:
        now_ms = time.time_ns() // 1_000_000
        defaults = OutcomeDefaults(config.default_source, now_ms)
        valid: list[OutcomeTuple] = []
        results: list[Any] = []
        for index, record in enumerate(records):
            try:
                outcome = to_outcome_tuple(record, defaults, now_ms)
            except InvalidRecordError as exc:
                results.append(_rejected(rejection_of(exc, index, prediction_id_of(record))))
                continue
            valid.append(outcome)
            results.append({"index": index, "status": "accepted", "prediction_id": outcome[0]})
        values = encode_outcomes(valid)
        return [(o[0].encode(), v) for o, v in zip(valid, values, strict=True)], results

    def accept_predictions(records: list[Any]) -> tuple[list[tuple[bytes, bytes]], list[Any]]:
        now_ms = time.time_ns() // 1_000_000
        encoded: list[tuple[bytes, bytes]] = []
        results: list[Any] = []
        for index, record in enumerate(records):
            try:
                event = prediction_event(record, replica_id=config.replica_id, now_ms=now_ms)
            except InvalidRecordError as exc:
                results.append(_rejected(rejection_of(exc, index, prediction_id_of(record))))
                continue
            encoded.append((event.prediction_id.encode(), PREDICTION_CODEC.encode(event)))
            results.append(
                {"index": index, "status": "accepted", "prediction_id": event.prediction_id}
            )
        return encoded, results

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.registry.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/outcomes", endpoint("outcomes", accept_outcomes), methods=["POST"]),
            Route("/predictions", endpoint("predictions", accept_predictions), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ]
    )


def _records_of(payload: Any, name: str) -> tuple[list[Any] | None, Response | None]:
    # A bare array, or an object holding it under the endpoint's name ({"outcomes": [...]}).
    if isinstance(payload, dict) and isinstance(payload.get(name), list):
        return payload[name], None
    if isinstance(payload, list):
        return payload, None
    return None, _problem(400, f'body must be a JSON array of records or {{"{name}": [...]}}')


def _rejected(rejection: Rejection) -> dict[str, Any]:
    return {"status": "rejected", **rejection.to_json()}


def _too_large(limit: int) -> Response:
    return _problem(413, f"body is larger than {limit} bytes: send smaller batches")


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": detail}, status_code=status)
