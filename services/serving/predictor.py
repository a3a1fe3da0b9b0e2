"""The request path: route, validate, score, publish. Shadows are scored elsewhere, from the
published event (`safeloop shadow-scorer`), so they cost the request nothing."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn, Protocol

from safeloop.schemas.events import ErrorKind, ModelConfig, PredictionEvent, Route
from safeloop.services.guard.local import routed_canary
from safeloop.services.models.answer import Answer, answer
from safeloop.services.serving.catalog import ModelCatalog
from safeloop.services.serving.exceptions import (
    InjectedFaultError,
    InvalidRequestError,
    NotReadyError,
    PredictionFailedError,
    ServingError,
    UnknownModelError,
)
from safeloop.services.serving.flags import FlagBook, set_current_flags
from safeloop.services.serving.routing import ROUTING_HASH_VERSION, RouteDecision, choose_route
from safeloop.services.serving.segments import request_segments
from safeloop.services.serving.serving_metrics import ServingMetrics
from safeloop.services.serving.sink import EventSink
from safeloop.services.serving.validation import check_features, numeric_part

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    prediction_id: str
    model_name: str
    model_version: str
    route: Route
    prediction: float
    confidence: float | None
    # Latency a rehearsal fault adds: the HTTP layer holds the answer back this long (without
    # blocking other requests); the published latency_ms already includes it.
    injected_delay_ms: float = 0.0
    # Multi-class models: P(class k) at index k (prediction is the class index); else empty.
    class_probabilities: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prediction_id": self.prediction_id,
            "model": self.model_name,
            "model_version": self.model_version,
            "route": self.route.value,
            "prediction": self.prediction,
            "confidence": self.confidence,
        }
        if self.class_probabilities:
            body["class_probabilities"] = list(self.class_probabilities)
        return body


class LocalGuard(Protocol):
    """A fast, in-replica check on every published event (e.g. a canary's error burst).

    `observe` is called on the request path, so it must only count; any action belongs on its
    own thread. `sequence` is the config sequence the request was routed under (0 before any
    command), so the guard can tell a canary's events from those of an earlier try of it.
    """

    def config_applied(self, model_name: str, config: ModelConfig, sequence: int) -> None: ...

    def observe(self, event: PredictionEvent, sequence: int) -> None: ...


class Predictor:
    """Answers predictions from memory only: config, flags and models are local snapshots."""

    def __init__(
        self,
        catalog: ModelCatalog,
        sink: EventSink,
        replica_id: str,
        *,
        metrics: ServingMetrics | None = None,
        guard: LocalGuard | None = None,
    ) -> None:
        self.catalog = catalog
        self.sink = sink
        self.replica_id = replica_id
        self.metrics = metrics or ServingMetrics()
        self.flags = FlagBook()
        self.guard = guard
        self.ready = False
        # Written by the control listener and the local guard; the request path only reads
        # `_configs`, whose reference is swapped whole, so it never takes this lock.
        # model -> (effective config, the sequence of the command it comes from).
        self._config_lock = threading.Lock()
        self._configs: dict[str, tuple[ModelConfig, int]] = {}
        self._commanded: dict[str, ModelConfig] = {}
        # model -> canary version this replica stopped routing to on its own (local guard).
        self._suppressed: dict[str, str] = {}

    def apply_config(self, model_name: str, config: ModelConfig, sequence: int) -> None:
        """Install a model's new config (from the control state) for the next request."""
        with self._config_lock:
            suppressed = self._suppressed.get(model_name)
            if suppressed is not None and suppressed != routed_canary(config):
                # The control plane moved on from that canary (rolled back, replaced or disabled
                # it): a later command routing to it again is a new try, judged afresh.
                del self._suppressed[model_name]
                self.metrics.canary_suppressed.set((model_name, suppressed), 0)
            if self.guard is not None:
                # Before any request can be routed under the new sequence.
                self.guard.config_applied(model_name, config, sequence)
            self.flags.update(model_name, config)
            self._commanded = {**self._commanded, model_name: config}
            effective = self._effective(model_name, config)
            self._configs = {**self._configs, model_name: (effective, sequence)}
        self.metrics.config_version.set((model_name,), sequence)

    def suppress_canary(self, model_name: str, canary_version: str) -> bool:
        """Stop routing to `canary_version` here until a command replaces that canary.

        The local guard's fast path; the signed rollback from the control plane follows.
        """
        with self._config_lock:
            config = self._commanded.get(model_name)
            if config is None or config.canary_version != canary_version:
                return False
            self._suppressed[model_name] = canary_version
            _, sequence = self._configs[model_name]
            effective = self._effective(model_name, config)
            self._configs = {**self._configs, model_name: (effective, sequence)}
        self.metrics.canary_suppressed.set((model_name, canary_version), 1)
        return True

    def _effective(self, model_name: str, config: ModelConfig) -> ModelConfig:
        suppressed = self._suppressed.get(model_name)
        if suppressed is not None and suppressed == config.canary_version:
            return replace(config, canary_enabled=False)
        return config

    def mark_ready(self) -> None:
        self.ready = True
        self.metrics.ready.set((), 1)

    def config_of(self, model_name: str) -> ModelConfig:
        """The applied config, or the catalog's default before any command for the model."""
        return self._routing_config(model_name)[0]

    def _routing_config(self, model_name: str) -> tuple[ModelConfig, int]:
        """`config_of` with its command's sequence (0 for the catalog's default), read once."""
        default = self.catalog.default_config(model_name)
        if default is None:
            raise UnknownModelError(model_name, self.catalog.names())
        return self._configs.get(model_name, (default, 0))

    def resolve_model(self, model_name: str | None) -> str:
        """The model a request means: the one named, or the only one served."""
        if model_name is not None:
            return model_name
        names = self.catalog.names()
        if len(names) != 1:
            raise InvalidRequestError(f"model is required: this replica serves {', '.join(names)}")
        return names[0]

    def predict(
        self,
        model_name: str | None,
        routing_key: str,
        raw_features: Mapping[str, Any],
        attributes: Mapping[str, str] | None = None,
    ) -> Prediction:
        """Score one request; every outcome but an unknown model publishes one event.

        `attributes` (country, tenant, ...) named by the version's segment_keys become the
        event's segments; the rest are not kept.
        """
        started_ns = time.perf_counter_ns()
        if not self.ready:
            raise NotReadyError("control state is still being rebuilt; retry shortly")
        try:
            name = self.resolve_model(model_name)
            config, sequence = self._routing_config(name)
        except ServingError:
            self.metrics.errors.inc((model_name or "", "", "", "unknown_model"))
            raise
        decision = choose_route(name, routing_key, config)
        injection = config.injection
        injected: InjectedFault | None = None
        # Only the rehearsed version, and only until the injection expires by itself.
        if (
            injection is not None
            and injection.version == decision.version
            and injection.active(time.time_ns() // 1_000_000)
        ):
            # Which requests fail needs no secrecy, only the configured share.
            fail = random.random() < injection.error_rate  # noqa: S311
            injected = InjectedFault(injection.latency_ms, fail)
        loaded = self.catalog.get(name, decision.version)
        segments = (
            {}
            if loaded is None or not loaded.metadata.segment_keys
            else request_segments(loaded.metadata.segment_keys, attributes or {}, raw_features)
        )
        request = _Request(
            name,
            routing_key,
            decision,
            _new_prediction_id(),
            started_ns,
            sequence,
            0.0 if injected is None else injected.latency_ms,
            segments,
        )
        if loaded is None:
            # The control state only applies configs whose versions are loaded: a bug if seen.
            failure = PredictionFailedError(
                name, request.decision.version, request.prediction_id, "version is not loaded"
            )
            self._fail(request, numeric_part(raw_features), failure, "model")
        try:
            features = check_features(raw_features, loaded.metadata.feature_names)
        except InvalidRequestError as exc:
            self._fail(request, numeric_part(raw_features), exc, "invalid")
        if injected is not None and injected.fail:
            fault = InjectedFaultError(request.prediction_id, injected.latency_ms)
            self._fail(request, features, fault, "injected")
        flags = self.flags.flags(name)
        set_current_flags(flags)
        try:
            answered: Answer = answer(loaded, features)
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            failure = PredictionFailedError(
                name, request.decision.version, request.prediction_id, cause
            )
            self._fail(request, features, failure, "model")
        self._publish(
            request,
            features,
            prediction=answered.prediction,
            confidence=answered.confidence,
            error=None,
            class_probabilities=answered.class_probabilities,
        )
        return Prediction(
            request.prediction_id,
            name,
            request.decision.version,
            request.decision.route,
            answered.prediction,
            answered.confidence,
            request.injected_delay_ms,
            tuple(answered.class_probabilities),
        )

    def _fail(
        self, request: _Request, features: dict[str, float], error: ServingError, kind: str
    ) -> NoReturn:
        decision = request.decision
        self.metrics.errors.inc((request.model_name, decision.version, decision.route.value, kind))
        # A 4xx is the caller's mistake; anything else failed on the model's side.
        error_kind = ErrorKind.CLIENT if error.status_code < 500 else ErrorKind.SERVER
        self._publish(
            request,
            features,
            prediction=None,
            confidence=None,
            error=str(error),
            error_kind=error_kind,
        )
        raise error

    def _publish(
        self,
        request: _Request,
        features: dict[str, float],
        *,
        prediction: float | None,
        confidence: float | None,
        error: str | None,
        error_kind: ErrorKind | None = None,
        class_probabilities: list[float] | None = None,
    ) -> None:
        decision = request.decision
        latency_ms = (time.perf_counter_ns() - request.started_ns) / 1e6 + request.injected_delay_ms
        labels = (request.model_name, decision.version, decision.route.value)
        self.metrics.requests.inc(labels)
        self.metrics.latency.observe(labels, latency_ms / 1000.0)
        event = PredictionEvent(
            prediction_id=request.prediction_id,
            model_name=request.model_name,
            model_version=decision.version,
            timestamp=time.time_ns() // 1_000_000,
            features=features,
            prediction=prediction,
            confidence=confidence,
            latency_ms=latency_ms,
            route=decision.route,
            replica_id=self.replica_id,
            routing_key=request.routing_key,
            routing_hash_version=ROUTING_HASH_VERSION,
            error=error,
            error_kind=error_kind,
            class_probabilities=class_probabilities or [],
            segments=request.segments,
        )
        self.sink.publish(event)
        if self.guard is not None:
            self.guard.observe(event, request.sequence)


def _new_prediction_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex at a sixth of the cost.
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class _Request:
    model_name: str
    routing_key: str
    decision: RouteDecision
    prediction_id: str
    started_ns: int
    # The config sequence the request was routed under.
    sequence: int
    injected_delay_ms: float = 0.0
    # The request's values for the version's segment keys.
    segments: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """What a rehearsal fault does to one request: hold it back, and maybe fail it."""

    latency_ms: float
    fail: bool
