"""Shared helpers for the metrics, guard and rollout integration tests (and the benchmark).

Two in-process replicas serve `churn` (v1 production by default, v2 a candidate whose model
can be switched to fail), the metrics service runs on its own thread, and `Traffic` sends a
bounded request rate through both replicas.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from _waiting import poller
from confluent_kafka import Producer

from safeloop.infra.kafka.clients import make_producer, producer_config
from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.codec import FEEDBACK_CODEC
from safeloop.schemas.events import (
    CommandKind,
    FeedbackRecord,
    FeedbackStatus,
    ModelConfig,
    Route,
)
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.publisher import ControlPublisher, read_control_topic
from safeloop.services.guard.local import ReplicaGuard
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.monitor.service import MetricsConfig, MetricsService
from safeloop.services.monitor.wiring import build_metrics_service
from safeloop.services.serving.predictor import Prediction
from safeloop.services.serving.replica import Replica, load_catalog

KEY_HEX = "6b" * 32
MODEL = "churn"
FEATURES = {"age": 0.3, "income": -1.2, "tenure_months": 0.8, "sessions_7d": 1.5}
# Latency ratios of sub-millisecond in-process predictions are noise: that rule is off here.
TEST_POLICY = GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None)


class FlakyModel:
    """Wraps a model; raises while `failing` is set (a canary that starts failing)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failing = threading.Event()

    @property
    def version(self) -> str:
        return str(self._inner.version)

    def predict(self, features: Mapping[str, float]) -> float:
        if self.failing.is_set():
            raise RuntimeError("injected canary failure")
        return float(self._inner.predict(features))


def metrics_settings(
    base: Settings, model_dir: Path, segment_keys: tuple[str, ...] = ()
) -> Settings:
    """`base` with the control key, serving v1 and v2 of MODEL from `model_dir` (trained there
    unless present); both versions declare `segment_keys`, copied from request attributes."""
    settings = replace(
        base, model_dir=model_dir, control_key=Secret(KEY_HEX), control_key_id="metrics-it"
    )
    store = ModelStore(settings.models_path)
    if not (model_dir / MODEL).exists():
        for seed, version in enumerate(("v1", "v2")):
            dataset = make_dataset(ModelTask.CLASSIFICATION, 2000, seed=seed)
            model, metadata = train_model(MODEL, version, ModelTask.CLASSIFICATION, dataset)
            store.save(model, replace(metadata, segment_keys=segment_keys))
            time.sleep(0.002)
    return settings


@dataclass
class Fleet:
    settings: Settings
    replicas: list[Replica]
    flaky: FlakyModel

    def applied_sequence(self) -> list[int]:
        return [
            (applied.sequence if (applied := r.state.applied(MODEL)) is not None else 0)
            for r in self.replicas
        ]

    def configs(self) -> list[ModelConfig | None]:
        out = []
        for replica in self.replicas:
            applied = replica.state.applied(MODEL)
            out.append(None if applied is None else applied.config)
        return out

    def canary_gone(self) -> bool:
        """Every replica has applied a config without a canary."""
        return all(c is not None and c.canary_version is None for c in self.configs())


@contextmanager
def fleet(
    settings: Settings,
    *,
    local_guard: bool | Callable[[], ReplicaGuard] = True,
    candidate: Callable[[Any], Any] | None = None,
) -> Iterator[Fleet]:
    """Two replicas; each serves v2 through `candidate(v2's model)` if given (one per replica),
    else through the fleet's one FlakyModel. `local_guard` may also make each replica's guard."""
    store = ModelStore(settings.models_path)
    flaky = FlakyModel(store.load(MODEL, "v2").model)
    replicas = []
    for index in range(2):
        catalog = load_catalog(store, [MODEL])
        loaded = catalog.get(MODEL, "v2")
        assert loaded is not None
        served = flaky if candidate is None else candidate(loaded.model)
        catalog.add(LoadedModel(served, loaded.metadata))
        guard = None
        if callable(local_guard):
            guard = local_guard()
        elif local_guard:
            guard = ReplicaGuard(TEST_POLICY)
        replica = Replica(
            settings, f"replica-{index}-{uuid.uuid4().hex[:4]}", catalog=catalog, guard=guard
        )
        replica.start()
        replicas.append(replica)
    try:
        for replica in replicas:
            assert replica.wait_ready(30), f"{replica.replica_id} never caught up"
        yield Fleet(settings, replicas, flaky)
    finally:
        for replica in replicas:
            replica.stop()


@contextmanager
def metrics_service(
    settings: Settings, config: MetricsConfig, group_prefix: str | None = None
) -> Iterator[MetricsService]:
    prefix = group_prefix or f"it-{uuid.uuid4().hex[:6]}"
    service = build_metrics_service(settings, config, group_prefix=prefix)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="metrics", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(30)


OnPrediction = Callable[[Prediction], None]


@dataclass
class Traffic:
    """Requests at `rate_per_s` alternating over the replicas, on a thread, until stopped."""

    fleet: Fleet
    rate_per_s: float
    on_prediction: OnPrediction | None = None
    # Every Nth request leaves out a feature (a client's mistake: HTTP 422); 0 = never.
    malformed_every: int = 0
    sent: int = 0
    failed: int = 0
    # Each request's time to answer (or to fail), in order; when each failure happened, and on
    # which replica (its index in the fleet).
    latencies_ms: list[float] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)
    failed_on: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        interval_s = 1.0 / self.rate_per_s
        next_at = time.perf_counter()
        replicas = self.fleet.replicas
        while not self._stop.is_set():
            index = self.sent % len(replicas)
            replica = replicas[index]
            key = uuid.uuid4().hex
            features = FEATURES
            if self.malformed_every and self.sent % self.malformed_every == 0:
                features = {name: v for name, v in FEATURES.items() if name != "age"}
            started = time.perf_counter()
            answer: Prediction | None = None
            try:
                answer = replica.predictor.predict(MODEL, key, features)
            except Exception:
                self.failed_at.append(time.monotonic())
                self.failed_on.append(index)
                self.failed += 1
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            if answer is not None and self.on_prediction is not None:
                self.on_prediction(answer)
            self.sent += 1
            next_at += interval_s
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                next_at = time.perf_counter()


COUNTRIES = ("US", "DE", "FR", "IN", "BR")
# Brazil is 5 % of requests.
COUNTRY_WEIGHTS = (0.4, 0.2, 0.2, 0.15, 0.05)
# Requests from Brazil carry this feature value, so a candidate (which sees features, not
# request attributes) can fail for them alone.
BRAZIL_AGE = 9.0


class FailingByCountry:
    """A candidate: raises on `brazil_share` of Brazil's requests and `everyone_share` of all
    others'."""

    def __init__(self, inner: Any, brazil_share: float, everyone_share: float = 0.0) -> None:
        self._inner = inner
        self._shares = (brazil_share, everyone_share)
        self._random = random.Random(3)
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return str(self._inner.version)

    def predict(self, features: Mapping[str, float]) -> float:
        brazil, everyone = self._shares
        share = brazil if features["age"] == BRAZIL_AGE else everyone
        with self._lock:
            failing = self._random.random() < share
        if failing:
            raise RuntimeError("candidate failure")
        return float(self._inner.predict(features))


@contextmanager
def country_traffic(
    fleet: Fleet, rate_per_s: float, attributes: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Requests at `rate_per_s` alternating over the replicas, each from one of COUNTRIES (by
    COUNTRY_WEIGHTS) with a `country` request attribute besides `attributes`, sent on a thread
    until the block ends."""
    stop = threading.Event()
    sender = threading.Thread(
        target=_send_by_country,
        args=(fleet.replicas, rate_per_s, dict(attributes or {}), stop),
        daemon=True,
    )
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join(10)


def _send_by_country(
    replicas: list[Replica], rate_per_s: float, attributes: dict[str, str], stop: threading.Event
) -> None:
    rng = random.Random(11)
    interval_s = 1.0 / rate_per_s
    next_at = time.perf_counter()
    sent = 0
    while not stop.is_set():
        country = rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
        features = {**FEATURES, "age": BRAZIL_AGE} if country == "BR" else FEATURES
        with suppress(Exception):  # the candidate's failures are published, not raised here
            replicas[sent % len(replicas)].predictor.predict(
                MODEL, uuid.uuid4().hex, features, {"country": country, **attributes}
            )
        sent += 1
        next_at += interval_s
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class FeedbackPublisher:
    """Labels every prediction at once: production right `production_right` of the time, the
    canary `canary_right` (a canary worse on live traffic than its history promised)."""

    def __init__(
        self, settings: Settings, *, production_right: float = 0.9, canary_right: float = 0.4
    ) -> None:
        self._producer = Producer(producer_config(settings, **{"linger.ms": 20}))
        self._topic = settings.topics.feedback
        self._shares = {Route.CANARY: canary_right}
        self._production_right = production_right
        self._random = random.Random(7)
        self._lock = threading.Lock()
        self.published = 0

    def __call__(self, answer: Prediction) -> None:
        right_share = self._shares.get(answer.route, self._production_right)
        predicted = 1.0 if answer.prediction >= 0.5 else 0.0
        with self._lock:
            right = self._random.random() < right_share
            self.published += 1
        now_ms = time.time_ns() // 1_000_000
        record = FeedbackRecord(
            prediction_id=answer.prediction_id,
            model_name=answer.model_name,
            model_version=answer.model_version,
            route=answer.route,
            replica_id="test",
            features={},
            prediction=answer.prediction,
            confidence=answer.confidence,
            prediction_timestamp=now_ms,
            status=FeedbackStatus.JOINED,
            ground_truth=predicted if right else 1.0 - predicted,
            outcome_timestamp=now_ms,
            label_delay_ms=0,
            outcome_source="test",
            emitted_at=now_ms,
        )
        self._producer.produce(
            self._topic, key=record.prediction_id.encode(), value=FEEDBACK_CODEC.encode(record)
        )
        self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(10)


def publish(
    settings: Settings, kind: CommandKind, change: Callable[[ModelConfig], ModelConfig]
) -> int:
    """Publish one signed command as an operator would; returns its sequence."""
    keys = load_keyring(settings)
    view = read_control_topic(make_broadcast_reader(settings, settings.topics.control, "it"), keys)
    publisher = ControlPublisher(
        make_producer(settings, **{"linger.ms": 0}), settings.topics.control, keys
    )
    initial = None if MODEL in view.latest else ModelConfig(production_version="v1")
    command = publisher.next_command(view, MODEL, kind, change, reason="test", initial=initial)
    publisher.send(command)
    return command.sequence


wait_for = poller(30.0, 0.02)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make `Settings.from_env()` equal `settings` (for the CLI)."""
    return settings.to_env()
