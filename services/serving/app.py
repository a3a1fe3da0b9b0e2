"""The replica's HTTP face: Starlette routes over a `Predictor`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from safeloop.infra.prometheus import CONTENT_TYPE
from safeloop.services.serving.exceptions import MalformedRequestError, ServingError
from safeloop.services.serving.predictor import Predictor
from safeloop.services.serving.validation import parse_batch, parse_request

logger = logging.getLogger(__name__)


async def _json_body(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise MalformedRequestError(f"body is not valid JSON: {exc}") from None


async def _hold(delay_ms: float) -> None:
    """Injected latency: hold this answer back without blocking the replica's other requests."""
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000.0)


def _error(exc: ServingError) -> JSONResponse:
    payload: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    prediction_id = getattr(exc, "prediction_id", None)
    if prediction_id is not None:
        payload["prediction_id"] = prediction_id
    return JSONResponse(payload, status_code=exc.status_code)


def create_app(
    predictor: Predictor, *, health: Callable[[], dict[str, Any]] | None = None
) -> Starlette:
    """The ASGI app; `health` adds replica details (id, applied configs) to /healthz."""

    async def predict(request: Request) -> Response:
        try:
            parsed = parse_request(await _json_body(request))
            result = predictor.predict(
                parsed.model_name, parsed.routing_key, parsed.features, parsed.attributes
            )
        except ServingError as exc:
            await _hold(getattr(exc, "injected_delay_ms", 0.0))
            return _error(exc)
        await _hold(result.injected_delay_ms)
        return JSONResponse(result.to_json())

    async def predict_batch(request: Request) -> Response:
        try:
            model_name, rows = parse_batch(await _json_body(request))
        except ServingError as exc:
            return _error(exc)
        results: list[dict[str, Any]] = []
        held_ms = 0.0
        for index, row in enumerate(rows):
            try:
                prediction = predictor.predict(
                    row.model_name or model_name, row.routing_key, row.features, row.attributes
                )
                results.append(prediction.to_json())
                held_ms = max(held_ms, prediction.injected_delay_ms)
            except ServingError as exc:
                held_ms = max(held_ms, getattr(exc, "injected_delay_ms", 0.0))
                # One bad row does not sink the batch; it is answered with its own error.
                results.append(
                    {
                        "row": index,
                        "error": type(exc).__name__,
                        "detail": str(exc),
                        "status": exc.status_code,
                    }
                )
        await _hold(held_ms)
        return JSONResponse({"predictions": results})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **(health() if health else {})})

    async def readyz(request: Request) -> Response:
        if predictor.ready:
            return JSONResponse({"ready": True})
        return JSONResponse(
            {
                "ready": False,
                "detail": "rebuilding control state from the control topic, or the event "
                "producer cannot deliver yet",
            },
            status_code=503,
        )

    async def metrics(request: Request) -> Response:
        return Response(predictor.metrics.registry.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/predict/batch", predict_batch, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
