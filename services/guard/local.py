"""The replica's fast path: count on the request thread, judge canaries on another.

`ReplicaGuard` satisfies serving's `LocalGuard` protocol (`observe(event)`); the replica calls
`check()` from its own thread every few tens of milliseconds and stops routing to any canary
whose verdict is BREACH, before the central guard's signed rollback arrives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from schemas.events import PredictionEvent, Route
from services.guard.judge import judge
from services.guard.policy import GuardPolicy
from services.guard.verdict import GuardVerdict
from services.metrics.columns import health_batch
from services.metrics.health import HEALTH_COLUMNS, health_of_window
from services.metrics.keyed import KeyedWindows, WindowKey
from services.metrics.windows import CountWindow


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    """One canary version's verdict against its model's production version on this replica."""

    model_name: str
    canary_version: str
    production_version: str | None
    verdict: GuardVerdict


class ReplicaGuard:
    """The last `window_rows` requests per (model, version, route), judged on demand."""

    __slots__ = ("_lock", "_pending", "_production", "_windows", "dropped", "max_pending", "policy")

    def __init__(
        self, policy: GuardPolicy, window_rows: int = 1_000, max_pending: int = 100_000
    ) -> None:
        self.policy = policy
        self.max_pending = max_pending
        # Events observed but not yet judged; past max_pending they are dropped and counted.
        self.dropped = 0
        self._lock = threading.Lock()
        self._pending: list[PredictionEvent] = []
        self._windows = KeyedWindows(lambda: CountWindow(window_rows, HEALTH_COLUMNS))
        # model name -> the production version seen most recently
        self._production: dict[str, str] = {}

    def observe(self, event: PredictionEvent) -> None:
        """Queue one published event; O(1), safe to call from request threads."""
        if event.route is Route.SHADOW:
            return  # a shadow's answers reach no user, so they cannot harm one
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                return
            self._pending.append(event)

    def check(self) -> list[CanaryVerdict]:
        """Fold queued events into the windows and judge every canary seen."""
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            keys, batch = health_batch(pending)
            self._windows.append(keys, batch)
            for event in pending:
                if event.route is Route.PRODUCTION:
                    self._production[event.model_name] = event.model_version
        verdicts = []
        for key, window in self._windows:
            if key.route is not Route.CANARY:
                continue
            version = self._production.get(key.model_name)
            production = None
            if version is not None:
                production_key = WindowKey(key.model_name, version, Route.PRODUCTION)
                production = health_of_window(self._windows.window(production_key).view())
            verdict = judge(health_of_window(window.view()), production, self.policy)
            verdicts.append(CanaryVerdict(key.model_name, key.model_version, version, verdict))
        return verdicts

    def forget(self, model_name: str, version: str) -> None:
        """Drop a version's windows, e.g. once it is rolled back, so a retry starts clean."""
        for route in Route:
            self._windows.discard(WindowKey(model_name, version, route))
