"""Shadow scoring off the request path: a bounded queue and worker threads that may drop."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from safeloop.schemas.events import ErrorKind, PredictionEvent, Route
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.task import confidence_of
from safeloop.services.serving.flags import ModelFlags, set_current_flags
from safeloop.services.serving.routing import ROUTING_HASH_VERSION
from safeloop.services.serving.sink import EventSink

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """Score `features` with the shadow version and publish it under the production id."""

    loaded: LoadedModel
    features: Mapping[str, float]
    flags: ModelFlags
    prediction_id: str
    routing_key: str
    replica_id: str


class ShadowRunner:
    """A slow or failing shadow model only ever fills this queue; the answer never waits."""

    def __init__(self, sink: EventSink, queue_size: int, worker_count: int = 1) -> None:
        self._sink = sink
        self._jobs: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=queue_size)
        self._workers = [
            threading.Thread(target=self._work, name=f"shadow-{index}", daemon=True)
            for index in range(worker_count)
        ]
        self._lock = threading.Lock()
        self.dropped_count = 0
        self.failed_count = 0
        self.scored_count = 0
        for worker in self._workers:
            worker.start()

    def submit(self, job: ShadowJob) -> bool:
        """Queue a job without blocking; False (and a counted drop) when the queue is full."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.dropped_count += 1
            return False
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the workers after the jobs already queued (or give up after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        for _ in self._workers:
            try:
                self._jobs.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """True once every queued job has been handled (for tests and clean shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)
        return not self._jobs.unfinished_tasks

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                self._run(job)
            finally:
                self._jobs.task_done()

    def _run(self, job: ShadowJob) -> None:
        started_ns = time.perf_counter_ns()
        prediction: float | None = None
        error: str | None = None
        set_current_flags(job.flags)
        try:
            prediction = float(job.loaded.model.predict(job.features))
        except Exception as exc:  # any shadow failure is recorded, never raised
            error = f"{type(exc).__name__}: {exc}"
            logger.debug("shadow %s/%s failed: %s", job.loaded.name, job.loaded.version, error)
        with self._lock:
            if error is None:
                self.scored_count += 1
            else:
                self.failed_count += 1
        self._sink.publish(
            PredictionEvent(
                prediction_id=job.prediction_id,
                model_name=job.loaded.name,
                model_version=job.loaded.version,
                timestamp=time.time_ns() // 1_000_000,
                features=dict(job.features),
                prediction=prediction,
                confidence=None
                if prediction is None
                else confidence_of(job.loaded.metadata.task, prediction),
                latency_ms=(time.perf_counter_ns() - started_ns) / 1e6,
                route=Route.SHADOW,
                replica_id=job.replica_id,
                routing_key=job.routing_key,
                routing_hash_version=ROUTING_HASH_VERSION,
                error=error,
                error_kind=None if error is None else ErrorKind.SERVER,
            )
        )
