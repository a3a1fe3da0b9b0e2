"""The dashboard's Starlette app: the page, its static files and the JSON it fetches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from safeloop.services.dashboard import (
    fairness_queries,
    fairness_shaping,
    queries,
    shaping,
    task_queries,
    task_shaping,
)
from safeloop.services.dashboard.assets import plotly_js
from safeloop.services.dashboard.decisions import Decision, Writes, decision_endpoint
from safeloop.services.dashboard.exceptions import BadRequestError, QueryFailedError
from safeloop.services.dashboard.reader import Reader
from safeloop.services.rollout.machine import Phase
from safeloop.services.rollout.persist import STATE_KEY

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
DEFAULT_MINUTES: Final = 60
MAX_MINUTES: Final = 31 * 24 * 60
MAX_MODEL_NAME: Final = 200
# The labelling queue looks at recent answers only: that is what labellers can still act on.
QUEUE_MINUTES: Final = 15
# The default range fits the data, up to a day: older data is there for a chosen range.
FIT_MAX_MINUTES: Final = 24 * 60
NO_STORE: Final = {"Cache-Control": "no-store"}
MAX_SEGMENT_KEY: Final = 100
# Groups with fewer requests (or labels) than this are marked and left out of the gaps.
DEFAULT_MIN_SAMPLE: Final = 30
MAX_MIN_SAMPLE: Final = 1_000_000

Handler = Callable[[Request, Reader], dict[str, Any]]


def minutes_param(request: Request) -> int:
    raw = request.query_params.get("minutes", str(DEFAULT_MINUTES))
    try:
        minutes = int(raw)
    except ValueError as exc:
        raise BadRequestError(f"minutes must be a whole number, got {raw[:20]!r}") from exc
    if not 1 <= minutes <= MAX_MINUTES:
        raise BadRequestError(f"minutes must be between 1 and {MAX_MINUTES}")
    return minutes


def model_param(request: Request) -> str:
    model = request.query_params.get("model", "").strip()
    if not model or len(model) > MAX_MODEL_NAME:
        raise BadRequestError(f"model is required (at most {MAX_MODEL_NAME} characters)")
    return model


def segment_key_param(request: Request) -> str:
    key = request.query_params.get("key", "").strip()
    if not key or len(key) > MAX_SEGMENT_KEY:
        raise BadRequestError(f"key (a segment key) is required (at most {MAX_SEGMENT_KEY} chars)")
    return key


def min_sample_param(request: Request) -> int:
    raw = request.query_params.get("min_sample", str(DEFAULT_MIN_SAMPLE))
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequestError(f"min_sample must be a whole number, got {raw[:20]!r}") from exc
    if not 1 <= value <= MAX_MIN_SAMPLE:
        raise BadRequestError(f"min_sample must be between 1 and {MAX_MIN_SAMPLE}")
    return value


def scope_of(request: Request) -> queries.Scope:
    return queries.Scope.last(model_param(request), minutes_param(request))


def models(request: Request, reader: Reader) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(minutes=minutes_param(request))
    rows = reader.rows(queries.models(since))
    return {"models": [str(r["model_name"]) for r in rows]}


def overview(request: Request, reader: Reader) -> dict[str, Any]:
    scope = scope_of(request)
    events = [shaping.event(r) for r in reader.rows(queries.control_events(scope, limit=10))]
    return {
        "model": scope.model,
        "config": shaping.serving_config(reader.rows(queries.serving_config(scope.model))),
        "traffic": shaping.traffic_mix(reader.rows(queries.traffic_mix(scope))),
        "events": events,
    }


def series(request: Request, reader: Reader) -> dict[str, Any]:
    scope = scope_of(request)
    step = scope.step_seconds
    events = [shaping.event(r) for r in reader.rows(queries.control_events(scope))]
    serving = reader.rows(queries.serving_series(scope))
    return {
        "since": shaping.iso(scope.since),
        "until": shaping.iso(scope.until),
        "step_seconds": step,
        "serving": shaping.serving_series(serving, step, scope.until),
        "coverage": shaping.coverage_series(serving),
        "metrics": shaping.window_series(reader.rows(queries.window_series(scope))),
        "canary": shaping.canary_steps(events, scope.until),
        "events": events,
    }


def quality(request: Request, reader: Reader) -> dict[str, Any]:
    scope = scope_of(request)
    return {
        "reliability": shaping.reliability_curves(reader.rows(queries.reliability(scope))),
        "drift": shaping.drift_table(reader.rows(queries.drift_table(scope))),
        "retraining": shaping.retraining(reader.rows(queries.retraining(scope))),
        "retraining_steps": shaping.retraining_steps(reader.rows(queries.retraining_steps(scope))),
    }


def task(request: Request, reader: Reader) -> dict[str, Any]:
    """Multi-class (per-class figures, confusion matrix) and regression (errors, residual
    drift) views of the newest window; `task` is None for binary classifiers."""
    return task_shaping.task_view(reader.rows(task_queries.task_figures(scope_of(request))))


def extent(request: Request, reader: Reader) -> dict[str, Any]:
    """When the model's data starts and ends (within a day) and the range that fits it."""
    model = model_param(request)
    now = datetime.now(UTC)
    rows = reader.rows(queries.data_extent(model, now - timedelta(minutes=FIT_MAX_MINUTES)))
    return {"model": model, **shaping.data_extent(rows, now)}


def labelling(request: Request, reader: Reader) -> dict[str, Any]:
    model = model_param(request)
    since = datetime.now(UTC) - timedelta(minutes=QUEUE_MINUTES)
    rows = reader.rows(queries.labelling_queue(model, since))
    return {"since": shaping.iso(since), "items": shaping.labelling_queue(rows)}


def segments(request: Request, reader: Reader) -> dict[str, Any]:
    """The segment keys the model's predictions carry in the range, most used first."""
    rows = reader.rows(fairness_queries.segment_keys(scope_of(request)))
    return {"keys": [str(r["key"]) for r in rows]}


def fairness(request: Request, reader: Reader) -> dict[str, Any]:
    """Per version, the same figures for every group of segment `key`, and their gaps."""
    scope = scope_of(request)
    key = segment_key_param(request)
    min_sample = min_sample_param(request)
    task = fairness_shaping.task_of(reader.rows(fairness_queries.model_task(scope)))
    serving = reader.rows(fairness_queries.group_serving(scope, key))
    labels = reader.rows(fairness_queries.group_labels(scope, key))
    view = fairness_shaping.fairness_view(key, task, serving, labels, min_sample)
    return {"model": scope.model, **view}


def approvals(_: Request, reader: Reader) -> dict[str, Any]:
    """Every model's rollout waiting for approval (all models: a person may be needed anywhere)."""
    rows = reader.rows(queries.pending_approvals(STATE_KEY, Phase.AWAITING_APPROVAL.value))
    pending = [shaped for r in rows if (shaped := shaping.pending_approval(r)) is not None]
    return {"pending": pending}


def _api(handler: Handler, reader: Reader) -> Callable[[Request], Response]:
    """A sync endpoint (Starlette runs it in a worker thread) that answers errors as JSON."""

    def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(handler(request, reader), headers=NO_STORE)
        except BadRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400, headers=NO_STORE)
        except QueryFailedError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=NO_STORE)

    return endpoint


def create_app(reader: Reader, writes: Writes | None = None) -> Starlette:
    """The dashboard app over `reader` (closed when the app shuts down); approve and reject
    answer 403 unless `writes` says who may act and how commands are published."""

    def index(_: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_STORE)

    def plotly(_: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript")

    def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    api = {
        "models": models,
        "extent": extent,
        "overview": overview,
        "series": series,
        "quality": quality,
        "labelling": labelling,
        "task": task,
        "segments": segments,
        "fairness": fairness,
    }

    def approvals_and_writes(request: Request, reader: Reader) -> dict[str, Any]:
        # The page shows the buttons only when they can work.
        return {**approvals(request, reader), "writable": writes is not None}

    api["approvals"] = approvals_and_writes

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/vendor/plotly.min.js", plotly),
        *(Route(f"/api/{name}", _api(handler, reader)) for name, handler in api.items()),
        *(
            Route(f"/api/rollout/{d.value}", decision_endpoint(d, writes), methods=["POST"])
            for d in Decision
        ),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        reader.close()

    return Starlette(routes=routes, lifespan=lifespan)
