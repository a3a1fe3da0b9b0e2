"""The replicas as `replica-status` shows them: who is live, who applied what, who lags."""

from __future__ import annotations

import time
from dataclasses import dataclass

from safeloop.schemas.codec import REPLICA_STATUS_CODEC
from safeloop.schemas.events import ReplicaState, ReplicaStatus
from safeloop.schemas.exceptions import DecodeError
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.control.exceptions import WaitTimeoutError

POLL_TIMEOUT_S = 0.05


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class FleetSnapshot:
    """The last status of every replica ever seen, judged at `now_ms`."""

    replicas: dict[str, ReplicaStatus]
    now_ms: int
    liveness_ms: int

    def age_ms(self, status: ReplicaStatus) -> int:
        return self.now_ms - status.timestamp

    def is_live(self, status: ReplicaStatus) -> bool:
        """Heard from recently and not shutting down."""
        return status.state is not ReplicaState.STOPPING and self.age_ms(status) <= self.liveness_ms

    def live(self) -> list[ReplicaStatus]:
        return [status for _, status in sorted(self.replicas.items()) if self.is_live(status)]

    def laggards(self, model_name: str, sequence: int) -> list[str]:
        """Live replicas that have not applied `sequence` (or newer) of `model_name`."""
        return [
            status.replica_id
            for status in self.live()
            if status.config_versions.get(model_name, 0) < sequence
        ]


class FleetWatcher:
    """Follows `replica-status` from its beginning; keeps the newest status per replica."""

    def __init__(self, reader: BroadcastReader, liveness_ms: int) -> None:
        self._reader = reader
        self._liveness_ms = liveness_ms
        self._replicas: dict[str, ReplicaStatus] = {}
        self.undecodable = 0

    def __enter__(self) -> FleetWatcher:
        self._reader.assign_from_beginning()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._reader.close()

    def snapshot(self) -> FleetSnapshot:
        return FleetSnapshot(dict(self._replicas), _now_ms(), self._liveness_ms)

    def read_to_end(self, timeout_s: float) -> FleetSnapshot:
        for message in self._reader.read_to_end(timeout_s):
            self._take(message.value())
        return self.snapshot()

    def update(self, timeout_s: float = POLL_TIMEOUT_S) -> FleetSnapshot:
        """Take in what arrived since the last read (waiting up to `timeout_s` for it)."""
        for message in self._reader.poll(timeout_s):
            self._take(message.value())
        return self.snapshot()

    def wait_applied(self, model_name: str, sequence: int, timeout_s: float) -> FleetSnapshot:
        """Return once every live replica applied `sequence`; WaitTimeoutError names laggards."""
        deadline = time.monotonic() + timeout_s
        snapshot = self.read_to_end(timeout_s)
        while snapshot.laggards(model_name, sequence):
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    model_name, sequence, snapshot.laggards(model_name, sequence), timeout_s
                )
            snapshot = self.update()
        return snapshot

    def _take(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            status = REPLICA_STATUS_CODEC.decode(value)
        except DecodeError:
            self.undecodable += 1
            return
        previous = self._replicas.get(status.replica_id)
        if previous is None or status.timestamp >= previous.timestamp:
            self._replicas[status.replica_id] = status
