"""The replica's HTTP API over a fake sink: answers, 4xx messages, shadow isolation, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.types import ASGIApp

from safeloop.schemas.events import ErrorKind, FaultInjection, ModelConfig, PredictionEvent, Route
from safeloop.services.guard.local import ReplicaGuard
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.models.linear import LogisticModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.task import ModelTask
from safeloop.services.serving.app import create_app
from safeloop.services.serving.catalog import ModelCatalog
from safeloop.services.serving.exceptions import InjectedFaultError, PredictionFailedError
from safeloop.services.serving.flags import current_flags
from safeloop.services.serving.guard_loop import GuardLoop
from safeloop.services.serving.predictor import Predictor
from safeloop.services.serving.sink import SinkStats

FEATURES = ("age", "income")
ROW = {"age": 0.5, "income": -1.0}


class AppClient:
    """A synchronous httpx client over ASGITransport (starlette's TestClient wants httpx2)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str) -> httpx.Response:
        return self.request("GET", url)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []
        self._lock = threading.Lock()

    def publish(self, event: PredictionEvent) -> None:
        with self._lock:
            self.events.append(event)

    def stats(self) -> SinkStats:
        return SinkStats(accepted=len(self.events))

    def routes(self) -> list[Route]:
        return [event.route for event in self.events]


class RaisingModel:
    version = "v-bad"

    def predict(self, features: Mapping[str, float]) -> float:
        raise RuntimeError("shadow exploded")


class BlockingModel:
    version = "v-slow"

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, features: Mapping[str, float]) -> float:
        self.release.wait(5)
        return 0.5


class FlagReadingModel:
    version = "v-flags"

    def predict(self, features: Mapping[str, float]) -> float:
        return current_flags().get_number("boost", 0.0)


def metadata(version: str) -> ModelMetadata:
    rng = np.random.default_rng(0)
    baseline = ModelBaseline.from_training_data({f: rng.normal(size=100) for f in FEATURES})
    return ModelMetadata(
        name="churn",
        version=version,
        task=ModelTask.CLASSIFICATION,
        kind="logistic",
        feature_names=FEATURES,
        created_at_ms=0,
        training_rows=100,
        baseline=baseline,
        primary_metric="accuracy",
        metrics={"accuracy": 0.8},
    )


def loaded(model: object, version: str) -> LoadedModel:
    return LoadedModel(model, metadata(version))  # type: ignore[arg-type]


@pytest.fixture
def sink() -> CollectingSink:
    return CollectingSink()


@pytest.fixture
def slow_model() -> Iterator[BlockingModel]:
    model = BlockingModel()
    yield model
    model.release.set()


@pytest.fixture
def predictor(sink: CollectingSink, slow_model: BlockingModel) -> Iterator[Predictor]:
    catalog = ModelCatalog()
    catalog.add(loaded(LogisticModel("v1", FEATURES, np.array([1.0, 0.5]), 0.0), "v1"))
    catalog.add(loaded(LogisticModel("v2", FEATURES, np.array([-1.0, 0.5]), 0.0), "v2"))
    catalog.add(loaded(RaisingModel(), "v-bad"))
    catalog.add(loaded(slow_model, "v-slow"))
    catalog.add(loaded(FlagReadingModel(), "v-flags"))
    predictor = Predictor(catalog, sink, "replica-test")
    predictor.mark_ready()
    yield predictor
    slow_model.release.set()


@pytest.fixture
def client(predictor: Predictor) -> AppClient:
    return AppClient(create_app(predictor))


def test_predict_answers_and_publishes(client: AppClient, sink: CollectingSink) -> None:
    response = client.post("/predict", json={"routing_key": "user-1", "features": ROW})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "v1"
    assert body["route"] == "production"
    assert 0 < body["prediction"] < 1
    assert body["confidence"] == pytest.approx(max(body["prediction"], 1 - body["prediction"]))
    [event] = sink.events
    assert event.prediction_id == body["prediction_id"]
    assert event.routing_key == "user-1"
    assert event.routing_hash_version == 1
    assert event.replica_id == "replica-test"
    assert event.features == ROW
    assert event.error is None


def test_canary_route_follows_config(client: AppClient, predictor: Predictor) -> None:
    predictor.apply_config("churn", ModelConfig("v1", "v2", canary_basis_points=10_000), 1)
    body = client.post("/predict", json={"routing_key": "u", "features": ROW}).json()
    assert (body["model_version"], body["route"]) == ("v2", "canary")
    predictor.apply_config("churn", ModelConfig("v1", "v2", canary_basis_points=0), 2)
    body = client.post("/predict", json={"routing_key": "u", "features": ROW}).json()
    assert (body["model_version"], body["route"]) == ("v1", "production")


@pytest.mark.parametrize(
    ("features", "status", "message"),
    [
        ({"age": 1.0}, 422, "missing features: income"),
        ({**ROW, "height": 2.0}, 422, "unknown features: height"),
        ({"age": "old", "income": 1.0}, 422, "'age' must be a number, got string"),
        ({"age": True, "income": 1.0}, 422, "'age' must be a number, got boolean"),
        ({"age": None, "income": 1.0}, 422, "got null"),
    ],
)
def test_bad_features_are_4xx_and_published_with_error(
    client: AppClient,
    sink: CollectingSink,
    features: dict[str, object],
    status: int,
    message: str,
) -> None:
    response = client.post("/predict", json={"routing_key": "u", "features": features})
    assert response.status_code == status
    assert message in response.json()["detail"]
    [event] = sink.events
    assert event.prediction is None
    assert event.error is not None and message in event.error


def test_nan_is_refused(client: AppClient) -> None:
    body = b'{"routing_key": "u", "features": {"age": NaN, "income": 1}}'
    response = client.post("/predict", content=body)
    assert response.status_code == 422
    assert "'age' must be finite" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{", 400, "not valid JSON"),
        (b"[]", 422, "must be a JSON object"),
        (b'{"features": {}}', 422, "routing_key is required"),
        (b'{"routing_key": "u"}', 422, "features is required"),
        (b'{"routing_key": "u", "features": {}, "model": "nope"}', 404, "'nope' is not served"),
    ],
)
def test_bad_envelopes(client: AppClient, body: bytes, status: int, message: str) -> None:
    response = client.post("/predict", content=body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_model_failure_is_500_with_prediction_id(
    client: AppClient, predictor: Predictor, sink: CollectingSink
) -> None:
    predictor.apply_config("churn", ModelConfig("v-bad"), 1)
    response = client.post("/predict", json={"routing_key": "u", "features": ROW})
    assert response.status_code == 500
    assert "shadow exploded" in response.json()["detail"]
    assert sink.events[0].prediction_id == response.json()["prediction_id"]
    assert sink.events[0].error is not None


class CountingModel:
    version = "v-shadow"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, features: Mapping[str, float]) -> float:
        self.calls += 1
        return 0.5


def test_a_replica_never_scores_a_shadow(sink: CollectingSink) -> None:
    # Shadows are scored by `safeloop shadow-scorer` from the published event: the request
    # path neither calls the shadow model nor publishes its answer.
    shadow = CountingModel()
    catalog = ModelCatalog()
    catalog.add(loaded(LogisticModel("v1", FEATURES, np.array([1.0, 0.5]), 0.0), "v1"))
    catalog.add(loaded(shadow, "v-shadow"))
    predictor = Predictor(catalog, sink, "replica-test")
    predictor.mark_ready()
    client = AppClient(create_app(predictor))
    plain = client.post("/predict", json={"routing_key": "u", "features": ROW}).json()
    predictor.apply_config(
        "churn", ModelConfig("v1", shadow_version="v-shadow", shadow_enabled=True), 1
    )
    for _ in range(20):
        shadowed = client.post("/predict", json={"routing_key": "u", "features": ROW}).json()
        assert shadowed["prediction"] == plain["prediction"]
    assert shadow.calls == 0
    assert [e.route for e in sink.events] == [Route.PRODUCTION] * 21


def test_flags_reach_model_code(client: AppClient, predictor: Predictor) -> None:
    predictor.apply_config("churn", ModelConfig("v-flags", flags={"boost": "0.25"}), 1)
    body = client.post("/predict", json={"routing_key": "u", "features": ROW}).json()
    assert body["prediction"] == 0.25


def test_batch_answers_each_row(client: AppClient, sink: CollectingSink) -> None:
    rows = [
        {"routing_key": "a", "features": ROW},
        {"routing_key": "b", "features": {"age": 1.0}},
        {"routing_key": "c", "features": ROW},
    ]
    response = client.post("/predict/batch", json={"rows": rows})
    assert response.status_code == 200
    results = response.json()["predictions"]
    assert results[0]["model_version"] == "v1"
    assert results[1]["status"] == 422 and "missing features" in results[1]["detail"]
    assert results[2]["route"] == "production"
    assert len(sink.events) == 3


def test_batch_envelope_errors(client: AppClient) -> None:
    assert client.post("/predict/batch", json={"rows": []}).status_code == 422
    response = client.post("/predict/batch", json={"rows": [{"features": ROW}]})
    assert "rows[0].routing_key" in response.json()["detail"]


def test_not_ready_until_control_state_rebuilt(sink: CollectingSink) -> None:
    catalog = ModelCatalog()
    catalog.add(loaded(LogisticModel("v1", FEATURES, np.array([1.0, 0.5]), 0.0), "v1"))
    predictor = Predictor(catalog, sink, "r")
    client = AppClient(create_app(predictor))
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    assert client.post("/predict", json={"routing_key": "u", "features": ROW}).status_code == 503
    predictor.mark_ready()
    assert client.get("/readyz").status_code == 200


def test_metrics_exposition(client: AppClient, predictor: Predictor) -> None:
    predictor.metrics.watch_sink(predictor.sink.stats)
    predictor.apply_config("churn", ModelConfig("v1"), 7)
    client.post("/predict", json={"routing_key": "u", "features": ROW})
    client.post("/predict", json={"routing_key": "u", "features": {}})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'safeloop_requests_total{model="churn",version="v1",route="production"} 2' in text
    assert (
        'safeloop_request_errors_total{model="churn",version="v1",route="production",'
        'kind="invalid"} 1' in text
    )
    assert 'safeloop_request_latency_seconds_bucket{model="churn",version="v1",' in text
    assert 'route="production",le="+Inf"} 2' in text
    assert 'safeloop_control_config_version{model="churn"} 7' in text
    assert 'safeloop_events_total{fate="accepted"} 2' in text
    assert "safeloop_ready 1" in text


def test_local_guard_pulls_traffic_off_a_failing_canary(
    client: AppClient, predictor: Predictor
) -> None:
    guard = ReplicaGuard(GuardPolicy(min_requests=50))
    predictor.guard = guard
    loop = GuardLoop(guard, predictor)
    config = ModelConfig("v1", "v-bad", canary_basis_points=5000)
    predictor.apply_config("churn", config, 1)
    keys = [f"user-{index}" for index in range(400)]
    for key in keys:
        _try_predict(predictor, key)
    loop.check_once()
    assert {predictor.predict("churn", key, ROW).route for key in keys} == {Route.PRODUCTION}
    assert (
        'safeloop_canary_suppressed{model="churn",version="v-bad"} 1' in client.get("/metrics").text
    )
    # A command that keeps the same canary does not lift the local suppression...
    predictor.apply_config(
        "churn", ModelConfig("v1", "v-bad", canary_basis_points=5000, flags={"x": "1"}), 2
    )
    assert predictor.predict("churn", keys[0], ROW).route is Route.PRODUCTION
    # ...the control plane's rollback (or a new canary) does.
    predictor.apply_config("churn", ModelConfig("v1", "v2", canary_basis_points=10_000), 3)
    assert predictor.predict("churn", keys[0], ROW).route is Route.CANARY


def _try_predict(predictor: Predictor, key: str) -> None:
    with contextlib.suppress(PredictionFailedError):
        predictor.predict("churn", key, ROW)


def test_error_kinds_say_whose_fault_it_was(
    client: AppClient, predictor: Predictor, sink: CollectingSink
) -> None:
    client.post("/predict", json={"routing_key": "u", "features": {"age": 1.0}})
    predictor.apply_config("churn", ModelConfig("v-bad"), 1)
    client.post("/predict", json={"routing_key": "u", "features": ROW})
    assert [event.error_kind for event in sink.events] == [ErrorKind.CLIENT, ErrorKind.SERVER]
    assert [event.client_error for event in sink.events] == [True, False]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_an_injection_fails_only_its_version_as_server_errors(
    client: AppClient, predictor: Predictor, sink: CollectingSink
) -> None:
    injection = FaultInjection("v2", error_rate=1.0, latency_ms=0.0, until=_now_ms() + 600_000)
    predictor.apply_config("churn", ModelConfig("v1", injection=injection), 1)
    assert client.post("/predict", json={"routing_key": "u", "features": ROW}).status_code == 200
    predictor.apply_config("churn", ModelConfig("v1", "v2", 10_000, injection=injection), 2)
    response = client.post("/predict", json={"routing_key": "u", "features": ROW})
    assert response.status_code == 500
    assert response.json()["detail"] == "injected"
    failed = sink.events[-1]
    assert (failed.model_version, failed.route) == ("v2", Route.CANARY)
    assert (failed.error, failed.error_kind) == ("injected", ErrorKind.SERVER)
    assert failed.prediction_id == response.json()["prediction_id"]
    # A client's mistake stays the client's, injection or not.
    client.post("/predict", json={"routing_key": "u", "features": {"age": 1.0}})
    assert sink.events[-1].error_kind is ErrorKind.CLIENT


def test_injected_latency_holds_the_answer_and_is_published(
    client: AppClient, predictor: Predictor, sink: CollectingSink
) -> None:
    injection = FaultInjection("v1", error_rate=0.0, latency_ms=40.0, until=_now_ms() + 600_000)
    predictor.apply_config("churn", ModelConfig("v1", injection=injection), 1)
    started = time.perf_counter()
    response = client.post("/predict", json={"routing_key": "u", "features": ROW})
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.040
    assert sink.events[-1].latency_ms >= 40.0
    assert sink.events[-1].error is None


def test_an_expired_injection_is_not_applied(
    client: AppClient, predictor: Predictor, sink: CollectingSink
) -> None:
    expired = FaultInjection("v1", error_rate=1.0, latency_ms=500.0, until=_now_ms() - 1)
    predictor.apply_config("churn", ModelConfig("v1", injection=expired), 1)
    started = time.perf_counter()
    assert client.post("/predict", json={"routing_key": "u", "features": ROW}).status_code == 200
    assert time.perf_counter() - started < 0.5
    assert sink.events[-1].error is None and sink.events[-1].latency_ms < 500.0


def test_an_injection_fails_about_its_share(predictor: Predictor) -> None:
    injection = FaultInjection("v1", error_rate=0.3, latency_ms=0.0, until=_now_ms() + 600_000)
    predictor.apply_config("churn", ModelConfig("v1", injection=injection), 1)
    failed = 0
    for index in range(2_000):
        try:
            predictor.predict("churn", f"u{index}", ROW)
        except InjectedFaultError:
            failed += 1
    assert 500 < failed < 700  # 600 expected; 5 standard deviations either side
