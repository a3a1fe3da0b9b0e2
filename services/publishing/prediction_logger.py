"""`PredictionLogger`: services that serve with their own stack log each prediction here.

`log` never waits: it appends a tuple to a bounded buffer and returns the prediction_id (a few
microseconds on the calling thread). A background thread turns the buffer into valid,
Avro-encoded PredictionEvents and hands them to librdkafka, which batches and sends them keyed by
prediction_id. A full buffer drops the prediction and counts it; invalid predictions and failed
deliveries are counted too. `close()` (or leaving the `with` block, or interpreter exit) sends what
is buffered. Safe to call from any thread and from asyncio code (`log` does not block the loop;
`aclose` closes without blocking it).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.prometheus import CallbackGauge, Labels, Registry
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.exceptions import DecodeError, EncodeError
from safeloop.schemas.validation import validate_prediction
from safeloop.services.publishing.exceptions import LoggerClosedError

log = logging.getLogger(__name__)

DEFAULT_BUFFER_SIZE = 100_000
DEFAULT_BATCH_SIZE = 2_000
DEFAULT_LINGER_S = 0.05
# Bumped by safeloop's router when its hash changes; foreign routers report 0.
EXTERNAL_HASH_VERSION = 0

# What `log` buffers: the PredictionEvent's fields in order, built off the request path.
_Pending = tuple[
    str, str, str, int, Mapping[str, float], "float | None", "float | None", float, str, str, str,
    "str | None", Sequence[float], Mapping[str, str],
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counters since the logger started."""

    logged: int
    sent: int
    delivered: int
    dropped_buffer_full: int
    rejected_invalid: int
    delivery_failed: int
    buffered: int
    in_flight: int


def producer_overrides(buffer_size: int) -> dict[str, Any]:
    """On top of `producer_config` (idempotent, acks=all): a bounded librdkafka queue and a
    short timeout, so an outage costs counted drops, never memory without limit."""
    return {
        "linger.ms": 20,
        "queue.buffering.max.messages": buffer_size,
        "queue.buffering.max.kbytes": 256 * 1024,
        "message.timeout.ms": 30_000,
        "delivery.report.only.error": True,
    }


class PredictionLogger:
    """Logs PredictionEvents to the `predictions` topic without ever blocking the caller."""

    def __init__(
        self,
        settings: Settings,
        *,
        replica_id: str = "",
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger_s: float = DEFAULT_LINGER_S,
        producer: Producer | None = None,
    ) -> None:
        self.replica_id = (
            replica_id or settings.replica_id or f"{os.uname().nodename}-{os.getpid()}"
        )
        self._topic = settings.topics.predictions
        self._producer = (
            make_producer(settings, **producer_overrides(buffer_size))
            if producer is None
            else producer
        )
        self._capacity = buffer_size
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._buffer: deque[_Pending] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._drop_lock = threading.Lock()
        # Callers only append to the deque (atomic) and count drops under `_drop_lock`; every
        # other counter has one writer, the sender thread (`logged` = taken + still buffered).
        self._logged = 0
        self._dropped = 0
        self._sent = 0
        self._invalid = 0
        self._unsendable = 0
        self._delivery_failed = 0
        self._sender = threading.Thread(target=self._run, name="prediction-logger", daemon=True)
        self._sender.start()
        # Flush at interpreter exit even if the service never calls close(); weakly, so the
        # hook does not keep a dropped logger alive.
        self._exit_hook = _exit_hook(weakref.ref(self))
        atexit.register(self._exit_hook)

    # -- the request path ---------------------------------------------------------------------

    def log(
        self,
        model_name: str,
        model_version: str,
        features: Mapping[str, float],
        prediction: float | None,
        confidence: float | None = None,
        *,
        latency_ms: float = 0.0,
        prediction_id: str | None = None,
        routing_key: str = "",
        route: Route | str = Route.PRODUCTION,
        timestamp_ms: int | None = None,
        error: str | None = None,
        class_probabilities: Sequence[float] = (),
        segments: Mapping[str, str] | None = None,
    ) -> str:
        """Buffer one prediction and return its prediction_id (generated unless given).

        Never blocks and never raises for a full buffer or a broker outage (the prediction is
        dropped and counted); invalid values are counted as `rejected_invalid` off this thread.
        Multi-class models pass `class_probabilities` (P(class k) at index k) with `prediction`
        the chosen class index; `segments` (e.g. {"country": "BR"}) splits metrics and gates.
        """
        if self._closed:
            raise LoggerClosedError("PredictionLogger.log called after close()")
        if prediction_id is None:
            prediction_id = os.urandom(16).hex()
        if len(self._buffer) >= self._capacity:
            with self._drop_lock:
                self._dropped += 1
            return prediction_id
        self._buffer.append(
            (
                prediction_id,
                model_name,
                model_version,
                time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms,
                dict(features),
                prediction,
                confidence,
                latency_ms,
                route,
                self.replica_id,
                routing_key or prediction_id,
                error,
                class_probabilities,
                {} if segments is None else segments,
            )
        )
        # Wake the sender early only when a whole batch waits; otherwise it drains every linger.
        if len(self._buffer) == self._batch_size:
            self._wake.set()
        return prediction_id

    # -- statistics -----------------------------------------------------------------------------

    def stats(self) -> LoggerStats:
        """A snapshot of the counters."""
        buffered = len(self._buffer)
        in_flight = len(self._producer)
        failed = self._delivery_failed + self._unsendable
        return LoggerStats(
            logged=self._logged + buffered,
            sent=self._sent,
            delivered=max(0, self._sent - self._delivery_failed - in_flight),
            dropped_buffer_full=self._dropped,
            rejected_invalid=self._invalid,
            delivery_failed=failed,
            buffered=buffered,
            in_flight=in_flight,
        )

    @property
    def dropped(self) -> int:
        """Predictions dropped because the buffer was full."""
        return self._dropped

    @property
    def rejected(self) -> int:
        """Predictions that were not valid PredictionEvents (logged at WARNING)."""
        return self._invalid

    def register_metrics(
        self, registry: Registry, prefix: str = "safeloop_prediction_logger"
    ) -> None:
        """Expose the counters on `registry` (`safeloop.infra.prometheus`), read at scrape time."""

        def counters() -> dict[Labels, float]:
            stats = self.stats()
            return {
                ("logged",): stats.logged,
                ("sent",): stats.sent,
                ("delivered",): stats.delivered,
                ("dropped_buffer_full",): stats.dropped_buffer_full,
                ("rejected_invalid",): stats.rejected_invalid,
                ("delivery_failed",): stats.delivery_failed,
            }

        def buffered() -> dict[Labels, float]:
            stats = self.stats()
            return {("buffer",): stats.buffered, ("kafka",): stats.in_flight}

        registry.register(
            CallbackGauge(
                f"{prefix}_predictions_total",
                "Predictions by what became of them (logged, sent, delivered, dropped, ...).",
                counters,
                ("outcome",),
                kind="counter",
            )
        )
        registry.register(
            CallbackGauge(
                f"{prefix}_pending",
                "Predictions waiting, in our buffer or librdkafka's.",
                buffered,
                ("where",),
            )
        )

    # -- shutdown ---------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> int:
        """Send everything buffered and wait for delivery; returns how many are still pending."""
        deadline = time.monotonic() + timeout_s
        while self._buffer and self._sender.is_alive() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.005)
        return int(self._producer.flush(max(0.0, deadline - time.monotonic()))) + len(self._buffer)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, send what is buffered, and wait up to `timeout_s` for delivery."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._exit_hook)
        self._wake.set()
        self._sender.join(timeout_s)
        left = self._producer.flush(max(0.1, timeout_s))
        if left or self._buffer:
            log.warning(
                "prediction logger closed with %s predictions undelivered", left + len(self._buffer)
            )

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """`close` from asyncio code, without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close, timeout_s)

    def __enter__(self) -> PredictionLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> PredictionLogger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the sender thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            closing = self._closed
            self._drain()
            self._producer.poll(0)
            if closing:
                self._drain()
                return
            self._wake.wait(self._linger_s)
            self._wake.clear()

    def _drain(self) -> None:
        buffer = self._buffer
        while buffer:
            batch = [buffer.popleft() for _ in range(min(len(buffer), self._batch_size))]
            self._logged += len(batch)
            self._send(batch)
            self._producer.poll(0)

    def _send(self, batch: list[_Pending]) -> None:
        now_ms = time.time_ns() // 1_000_000
        produce, topic, on_delivery = self._producer.produce, self._topic, self._on_delivery
        for fields in batch:
            try:
                event = _event(fields)
                validate_prediction(event, now_ms)
                value = PREDICTION_CODEC.encode(event)
            except (DecodeError, EncodeError, TypeError, ValueError) as exc:
                self._invalid += 1
                log.warning("prediction %s not logged: %s", fields[0], exc)
                continue
            try:
                produce(topic, value=value, key=fields[0].encode(), on_delivery=on_delivery)
            except BufferError:
                self._producer.poll(0.1)  # librdkafka's queue is full: let it drain a little
                try:
                    produce(topic, value=value, key=fields[0].encode(), on_delivery=on_delivery)
                except BufferError:
                    with self._drop_lock:
                        self._dropped += 1
                    continue
            except KafkaException as exc:
                self._unsendable += 1
                log.warning("prediction %s not sendable: %s", fields[0], exc)
                continue
            self._sent += 1

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_failed += 1
            if self._delivery_failed == 1 or self._delivery_failed % 1000 == 0:
                log.warning(
                    "prediction delivery failed (%s so far): %s", self._delivery_failed, error
                )


def _event(fields: _Pending) -> PredictionEvent:
    (pid, model, version, ts, features, prediction, confidence, latency, route, replica, key,
     error, probabilities, segments) = fields  # fmt: skip
    return PredictionEvent(
        prediction_id=pid,
        model_name=model,
        model_version=version,
        timestamp=ts,
        features={name: float(value) for name, value in features.items()},
        prediction=None if prediction is None else float(prediction),
        confidence=None if confidence is None else float(confidence),
        latency_ms=float(latency),
        route=Route(route),
        replica_id=replica,
        routing_key=key,
        routing_hash_version=EXTERNAL_HASH_VERSION,
        error=error,
        class_probabilities=[float(p) for p in probabilities],
        segments={str(key): str(value) for key, value in segments.items()},
    )


def _exit_hook(ref: weakref.ref[PredictionLogger]) -> Any:
    def close_at_exit() -> None:
        logger = ref()
        if logger is not None:
            logger.close(timeout_s=5.0)

    return close_at_exit
