"""Event builders shared by the stream unit tests."""

from __future__ import annotations

from safeloop.schemas.events import OutcomeEvent, PredictionEvent, Route


def prediction(
    pid: str = "p1",
    *,
    ts: int = 1_000,
    route: Route = Route.PRODUCTION,
    model: str = "churn",
    version: str = "v1",
    value: float | None = 0.7,
) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=pid,
        model_name=model,
        model_version=version,
        timestamp=ts,
        features={"x": 1.0},
        prediction=value,
        confidence=0.9,
        latency_ms=3.0,
        route=route,
        replica_id="r1",
        routing_key="k",
        routing_hash_version=1,
    )


def outcome(pid: str = "p1", *, ts: int = 2_000, truth: float = 1.0) -> OutcomeEvent:
    return OutcomeEvent(prediction_id=pid, ground_truth=truth, timestamp=ts, source="labels")
