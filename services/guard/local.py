"""The replica's fast path: count on the request thread, judge canaries on another.

`ReplicaGuard` satisfies serving's `LocalGuard` protocol; the replica calls `check()` from its
own thread every few tens of milliseconds and stops routing to any canary whose verdict is
BREACH, before the central guard's signed rollback arrives.

Two rules keep the fast path from getting in the central guard's way:

- A canary is judged per *run*: the config sequence that made it the configured canary opens a
  run, and any later config that removes, replaces or re-enables it (a rollback, a new canary, a
  kill switch lifted) opens the next one with empty windows. Each observation carries the
  sequence of the config its request was routed under, so canary events from an earlier run
  (in flight or queued when the config changed) never refill the new run's window.
- The local guard must use a `GuardPolicy` whose `min_requests` is at least the central guard's
  (the same policy, normally). A replica judges only its own traffic; every event it counts was
  also published to `predictions`, where the central guard sums all replicas. So by the time any
  replica trips, the central guard holds at least as much evidence and can publish the rollback,
  even if every replica then stops routing to the canary. A smaller local minimum lets the
  replicas suppress a canary together before the central guard has its sample, and nothing
  ever rolls it back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from safeloop.schemas.events import ModelConfig, PredictionEvent, Route
from safeloop.services.guard.judge import judge
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.verdict import GuardVerdict
from safeloop.services.metrics.columns import health_batch
from safeloop.services.metrics.health import HEALTH_COLUMNS, health_of_window
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.windows import CountWindow


def routed_canary(config: ModelConfig) -> str | None:
    """The canary version `config` can route requests to, or None if it routes none."""
    if (
        config.kill_switch
        or not config.canary_enabled
        or config.canary_version is None
        or config.canary_basis_points <= 0
    ):
        return None
    return config.canary_version


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    """One canary version's verdict against its model's production version on this replica."""

    model_name: str
    canary_version: str
    production_version: str | None
    verdict: GuardVerdict


@dataclass(frozen=True, slots=True)
class _Run:
    """The canary a model's config routes to, since the config sequence that made it so."""

    canary_version: str | None
    since_sequence: int
    # Set once this replica has acted on a breach: the rest of the run is not judged again.
    closed: bool = False

    def admits(self, version: str, sequence: int) -> bool:
        return (
            not self.closed and version == self.canary_version and sequence >= self.since_sequence
        )


class ReplicaGuard:
    """The last `window_rows` requests per (model, version, route), judged on demand.

    Models the guard has never been told a config for (`config_applied`) are judged on every
    canary event observed, as a standalone guard would be.
    """

    __slots__ = (
        "_lock",
        "_pending",
        "_production",
        "_reset",
        "_runs",
        "_sequences",
        "_windows",
        "dropped",
        "max_pending",
        "policy",
        "stale",
    )

    def __init__(
        self, policy: GuardPolicy, window_rows: int = 1_000, max_pending: int = 100_000
    ) -> None:
        # Its min_requests must be at least the central guard's: see the module docstring.
        self.policy = policy
        self.max_pending = max_pending
        # Events observed but not yet judged; past max_pending they are dropped and counted.
        self.dropped = 0
        # Canary events ignored because their run is over (or was acted on already).
        self.stale = 0
        self._lock = threading.Lock()
        self._pending: list[tuple[PredictionEvent, int]] = []
        # Guarded by _lock: written by the control listener, read by the checking thread.
        self._runs: dict[str, _Run] = {}
        self._sequences: dict[str, int] = {}  # model -> the newest config sequence applied
        self._reset: set[str] = set()
        # Touched by the checking thread only.
        self._windows = KeyedWindows(lambda: CountWindow(window_rows, HEALTH_COLUMNS))
        # model name -> the production version seen most recently
        self._production: dict[str, str] = {}

    def config_applied(self, model_name: str, config: ModelConfig, sequence: int) -> None:
        """Note a model's newly applied config; a different routed canary starts a new run.

        "Different" includes the same version coming back after a rollback, a disable or a kill
        switch: the evidence against its earlier run was acted on already.
        """
        canary = routed_canary(config)
        with self._lock:
            if sequence <= self._sequences.get(model_name, -1):
                return  # not newer than what was applied (replayed or out of order)
            self._sequences[model_name] = sequence
            run = self._runs.get(model_name)
            if run is not None and run.canary_version == canary:
                return  # the same canary keeps routing (a share, flag or shadow change)
            self._runs[model_name] = _Run(canary, sequence)
            self._reset.add(model_name)

    def observe(self, event: PredictionEvent, sequence: int = 0) -> None:
        """Queue one published event, with the config sequence its request was routed under.

        O(1), safe to call from request threads.
        """
        if event.route is Route.SHADOW:
            return  # a shadow's answers reach no user, so they cannot harm one
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                return
            self._pending.append((event, sequence))

    def check(self) -> list[CanaryVerdict]:
        """Fold queued events into the windows and judge every canary of a current run."""
        with self._lock:
            pending, self._pending = self._pending, []
            reset, self._reset = self._reset, set()
            runs = dict(self._runs)
        if reset:
            for key, _ in self._windows:
                if key.route is Route.CANARY and key.model_name in reset:
                    self._windows.discard(key)
        admitted = []
        for event, sequence in pending:
            if event.route is Route.CANARY:
                run = runs.get(event.model_name)
                if run is not None and not run.admits(event.model_version, sequence):
                    self.stale += 1
                    continue
            elif event.route is Route.PRODUCTION:
                self._production[event.model_name] = event.model_version
            admitted.append(event)
        if admitted:
            keys, batch = health_batch(admitted)
            self._windows.append(keys, batch)
        verdicts = []
        for key, window in self._windows:
            if key.route is not Route.CANARY:
                continue
            run = runs.get(key.model_name)
            if run is not None and not run.admits(key.model_version, run.since_sequence):
                self._windows.discard(key)  # its run ended after the events were admitted
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
        """Drop a canary's windows once acted on (suppressed or rolled back).

        If it is the model's current run, the rest of that run is ignored as well, so events of
        requests already in flight cannot refill the window; the next config that routes to
        it again starts afresh. Call it from the checking thread.
        """
        with self._lock:
            run = self._runs.get(model_name)
            if run is not None and run.canary_version == version:
                self._runs[model_name] = _Run(version, run.since_sequence, closed=True)
        for route in Route:
            self._windows.discard(WindowKey(model_name, version, route))
