"""A replica's reports on `replica-status`: after each applied command and on a heartbeat."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from safeloop.schemas.codec import REPLICA_STATUS_CODEC
from safeloop.schemas.events import ReplicaState, ReplicaStatus
from safeloop.services.control.state import ControlState

logger = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class StatusReporter:
    """Publishes what this replica has applied; never blocks the caller."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        replica_id: str,
        state: ControlState,
        heartbeat_ms: int,
        *,
        loaded_versions: Callable[[], dict[str, list[str]]] | None = None,
        before_beat: Callable[[], object] | None = None,
    ) -> None:
        """`loaded_versions` says which model versions are servable here (cheap: it runs on
        every report); `before_beat` runs on the heartbeat thread first (e.g. a store rescan)."""
        self._producer = producer
        self._topic = topic
        self._replica_id = replica_id
        self._state = state
        self._heartbeat_s = heartbeat_ms / 1000.0
        self._loaded_versions = loaded_versions
        self._before_beat = before_beat
        self.started_at = now_ms()
        self.lifecycle = ReplicaState.STARTING
        self.failed_reports = 0
        self.failed_hooks = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="status-heartbeat", daemon=True)

    def start(self) -> None:
        self.report()
        self._thread.start()

    def report(self) -> None:
        """Publish the current status now (called after every applied command)."""
        status = ReplicaStatus(
            replica_id=self._replica_id,
            timestamp=now_ms(),
            state=self.lifecycle,
            started_at=self.started_at,
            config_versions=self._state.config_versions(),
            last_command_id=self._state.last_command_id,
            refused_count=self._state.refused_count,
            last_refusal=self._state.last_refusal,
            loaded_versions={} if self._loaded_versions is None else self._loaded_versions(),
        )
        try:
            self._producer.produce(
                self._topic,
                key=self._replica_id.encode(),
                value=REPLICA_STATUS_CODEC.encode(status),
                on_delivery=self._delivered,
            )
        except BufferError:
            self.failed_reports += 1
        self._producer.poll(0)

    def mark(self, lifecycle: ReplicaState) -> None:
        self.lifecycle = lifecycle
        self.report()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Say STOPPING (so `--wait` stops waiting for us) and flush."""
        self._stopping.set()
        self._thread.join(timeout_s)
        self.mark(ReplicaState.STOPPING)
        self._producer.flush(timeout_s)

    def _beat(self) -> None:
        while not self._stopping.wait(self._heartbeat_s):
            if self._before_beat is not None:
                try:
                    self._before_beat()
                except Exception:  # the heartbeat must go on; the hook logs its own failures
                    self.failed_hooks += 1
                    logger.exception("status heartbeat hook failed")
            self.report()
            self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed_reports += 1
            logger.debug("replica status not delivered: %s", error)


def status_producer_settings() -> dict[str, Any]:
    """Status reports are small and latency-sensitive (they end `--wait`): send at once."""
    return {
        "linger.ms": 0,
        "acks": "all",
        "message.timeout.ms": 10_000,
        # Idempotent: without it a retried older report can land after a newer one, and the
        # compacted topic then keeps the stale one as this replica's status. The producer id it
        # fetches first costs one round trip before the first report.
        "enable.idempotence": True,
    }
