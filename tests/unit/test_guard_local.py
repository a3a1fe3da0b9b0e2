"""The replica-side guard: queueing on the request path, judging canaries on demand."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import cast

import numpy as np

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig, PredictionEvent, Route
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.guard.local import ReplicaGuard, routed_canary
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.runner import CentralGuard
from safeloop.services.guard.verdict import GuardRule, VerdictKind
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.models.linear import LogisticModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.task import ModelTask
from safeloop.services.serving.catalog import ModelCatalog
from safeloop.services.serving.exceptions import PredictionFailedError
from safeloop.services.serving.guard_loop import GuardLoop
from safeloop.services.serving.predictor import Predictor
from safeloop.services.serving.sink import SinkStats

POLICY = GuardPolicy(max_error_rate=0.1, min_requests=20)
CANARY = ModelConfig("v1", "v2", canary_basis_points=5_000)


def event(
    version: str,
    route: Route,
    error: bool = False,
    latency_ms: float = 5.0,
    model_name: str = "fraud",
) -> PredictionEvent:
    return PredictionEvent(
        prediction_id="p",
        model_name=model_name,
        model_version=version,
        timestamp=1_000,
        features={},
        prediction=None if error else 0.5,
        confidence=None,
        latency_ms=latency_ms,
        route=route,
        replica_id="r1",
        routing_key="k",
        routing_hash_version=1,
        error="boom" if error else None,
    )


def test_failing_canary_is_caught_once_the_sample_is_reached() -> None:
    guard = ReplicaGuard(POLICY, window_rows=100)
    for _ in range(50):
        guard.observe(event("v1", Route.PRODUCTION))
    for i in range(19):
        guard.observe(event("v2", Route.CANARY, error=i % 2 == 0))
    (early,) = guard.check()
    assert early.verdict.kind is VerdictKind.INSUFFICIENT_SAMPLE
    guard.observe(event("v2", Route.CANARY, error=True))
    (verdict,) = guard.check()
    assert (verdict.model_name, verdict.canary_version, verdict.production_version) == (
        "fraud",
        "v2",
        "v1",
    )
    assert verdict.verdict.kind is VerdictKind.BREACH
    assert verdict.verdict.breaches[0].rule is GuardRule.ERROR_RATE
    assert verdict.verdict.canary_requests == 20


def test_relative_latency_uses_the_production_window() -> None:
    guard = ReplicaGuard(POLICY)
    for _ in range(30):
        guard.observe(event("v1", Route.PRODUCTION, latency_ms=10.0))
        guard.observe(event("v2", Route.CANARY, latency_ms=30.0))
    (verdict,) = guard.check()
    assert verdict.verdict.breaches[0].rule is GuardRule.P99_LATENCY_RATIO


def test_shadows_are_ignored_and_no_canary_means_no_verdict() -> None:
    guard = ReplicaGuard(POLICY)
    guard.observe(event("v3", Route.SHADOW, error=True))
    guard.observe(event("v1", Route.PRODUCTION))
    assert guard.check() == []


def test_canary_without_production_is_judged_on_absolute_rules() -> None:
    guard = ReplicaGuard(POLICY)
    for _ in range(20):
        guard.observe(event("v2", Route.CANARY))
    (verdict,) = guard.check()
    assert verdict.production_version is None
    assert verdict.verdict.kind is VerdictKind.HEALTHY


def test_forget_starts_a_version_afresh_and_overflow_is_counted() -> None:
    guard = ReplicaGuard(POLICY, max_pending=25)
    for _ in range(30):
        guard.observe(event("v2", Route.CANARY, error=True))
    assert guard.dropped == 5
    assert guard.check()[0].verdict.kind is VerdictKind.BREACH
    guard.forget("fraud", "v2")
    assert guard.check() == []


def test_concurrent_observers_lose_nothing() -> None:
    guard = ReplicaGuard(POLICY, window_rows=100_000)
    stop = threading.Event()

    def observe() -> None:
        for _ in range(5_000):
            guard.observe(event("v2", Route.CANARY))

    def check() -> None:
        while not stop.is_set():
            guard.check()

    checker = threading.Thread(target=check)
    checker.start()
    workers = [threading.Thread(target=observe) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    checker.join()
    (verdict,) = guard.check()
    assert verdict.verdict.canary_requests == 20_000


# -- canary runs: a config change starts the canary's window afresh ----------------------------


def observe_canary(
    guard: ReplicaGuard, count: int, sequence: int, error: bool = True, version: str = "v2"
) -> None:
    for _ in range(count):
        guard.observe(event(version, Route.CANARY, error=error), sequence)


def canary_requests(guard: ReplicaGuard) -> dict[str, int]:
    return {v.canary_version: v.verdict.canary_requests for v in guard.check()}


def test_routed_canary_is_none_unless_the_config_can_route_to_it() -> None:
    assert routed_canary(CANARY) == "v2"
    assert routed_canary(ModelConfig("v1")) is None
    assert routed_canary(dataclasses.replace(CANARY, canary_basis_points=0)) is None
    assert routed_canary(dataclasses.replace(CANARY, canary_enabled=False)) is None
    assert routed_canary(dataclasses.replace(CANARY, kill_switch=True)) is None


def test_a_rollback_empties_the_window_and_late_events_of_the_old_run_are_ignored() -> None:
    guard = ReplicaGuard(POLICY)
    guard.config_applied("fraud", CANARY, 1)
    observe_canary(guard, 15, sequence=1)
    assert canary_requests(guard) == {"v2": 15}
    # Queued before the rollback is applied, checked after: still the old run.
    observe_canary(guard, 10, sequence=1)
    guard.config_applied("fraud", ModelConfig("v1"), 2)
    assert guard.check() == []
    # In flight across the rollback: routed under sequence 1, observed under 2.
    observe_canary(guard, 10, sequence=1)
    assert guard.check() == []
    assert guard.stale == 20
    # The same version tried again: only events routed under the new sequence count.
    guard.config_applied("fraud", CANARY, 3)
    observe_canary(guard, 30, sequence=1)
    observe_canary(guard, 5, sequence=2)
    assert guard.check() == []
    observe_canary(guard, POLICY.min_requests - 1, sequence=3)
    (verdict,) = guard.check()
    assert verdict.verdict.kind is VerdictKind.INSUFFICIENT_SAMPLE
    assert verdict.verdict.canary_requests == POLICY.min_requests - 1
    assert guard.stale == 55


def test_retrying_the_same_canary_starts_clean_even_without_a_check_in_between() -> None:
    guard = ReplicaGuard(POLICY)
    guard.config_applied("fraud", CANARY, 1)
    observe_canary(guard, 15, sequence=1)
    assert canary_requests(guard) == {"v2": 15}
    # Rolled back and re-enabled before the guard thread looked again.
    guard.config_applied("fraud", ModelConfig("v1"), 2)
    guard.config_applied("fraud", CANARY, 3)
    observe_canary(guard, 1, sequence=3)
    assert canary_requests(guard) == {"v2": 1}


def test_replacing_or_disabling_the_canary_starts_a_new_run() -> None:
    guard = ReplicaGuard(POLICY)
    guard.config_applied("fraud", CANARY, 1)
    observe_canary(guard, 15, sequence=1)
    guard.config_applied("fraud", dataclasses.replace(CANARY, canary_version="v3"), 2)
    observe_canary(guard, 5, sequence=1)  # the replaced canary's in-flight requests
    observe_canary(guard, 5, sequence=2, version="v2")  # not the configured canary
    observe_canary(guard, 4, sequence=2, version="v3")
    assert canary_requests(guard) == {"v3": 4}
    guard.config_applied(
        "fraud", dataclasses.replace(CANARY, canary_version="v3", kill_switch=True), 3
    )
    guard.config_applied("fraud", dataclasses.replace(CANARY, canary_version="v3"), 4)
    observe_canary(guard, 2, sequence=4, version="v3")
    assert canary_requests(guard) == {"v3": 2}


def test_a_change_that_keeps_the_canary_keeps_its_window() -> None:
    guard = ReplicaGuard(POLICY)
    guard.config_applied("fraud", CANARY, 1)
    observe_canary(guard, 10, sequence=1)
    guard.check()
    wider = dataclasses.replace(CANARY, canary_basis_points=10_000, flags={"x": "1"})
    guard.config_applied("fraud", wider, 2)
    observe_canary(guard, 5, sequence=1)  # in flight across a share change: same canary
    observe_canary(guard, 5, sequence=2)
    (verdict,) = guard.check()
    assert verdict.verdict.canary_requests == 20
    assert verdict.verdict.kind is VerdictKind.BREACH
    # A replayed (not newer) config changes nothing.
    guard.config_applied("fraud", ModelConfig("v1"), 2)
    assert canary_requests(guard) == {"v2": 20}


def test_once_acted_on_the_rest_of_the_run_is_not_judged_again() -> None:
    guard = ReplicaGuard(POLICY)
    guard.config_applied("fraud", CANARY, 1)
    observe_canary(guard, POLICY.min_requests, sequence=1)
    (verdict,) = guard.check()
    assert verdict.verdict.kind is VerdictKind.BREACH
    guard.forget("fraud", "v2")
    # Requests in flight when the replica stopped routing to it do not refill the window...
    observe_canary(guard, 3 * POLICY.min_requests, sequence=1)
    assert guard.check() == []
    # ...nor does a change that keeps the canary (the replica keeps suppressing it)...
    guard.config_applied("fraud", dataclasses.replace(CANARY, flags={"x": "1"}), 2)
    observe_canary(guard, 5, sequence=2)
    assert guard.check() == []
    # ...but the control plane retrying it does.
    guard.config_applied("fraud", ModelConfig("v1"), 3)
    guard.config_applied("fraud", CANARY, 4)
    observe_canary(guard, 5, sequence=4)
    assert canary_requests(guard) == {"v2": 5}


def test_runs_are_per_model_and_production_events_always_count() -> None:
    guard = ReplicaGuard(POLICY)
    guard.config_applied("fraud", CANARY, 1)
    guard.config_applied("churn", CANARY, 7)
    for _ in range(POLICY.min_requests):
        guard.observe(event("v1", Route.PRODUCTION, latency_ms=1.0), 0)
        guard.observe(event("v2", Route.CANARY, latency_ms=50.0), 1)
        guard.observe(event("v2", Route.CANARY, model_name="churn"), 7)
    guard.config_applied("churn", ModelConfig("v1"), 8)
    (verdict,) = guard.check()
    assert (verdict.model_name, verdict.production_version) == ("fraud", "v1")
    assert verdict.verdict.breaches[0].rule is GuardRule.P99_LATENCY_RATIO


# -- the fast path never starves the central guard --------------------------------------------

# One policy for the replicas and the central guard, as deployed (min_requests=100).
SHARED = GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None)
FEATURES = ("age", "income")
ROW = {"age": 0.5, "income": -1.0}


class Sink:
    """What a replica published to `predictions`."""

    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []

    def publish(self, event: PredictionEvent) -> None:
        self.events.append(event)

    def stats(self) -> SinkStats:
        return SinkStats(accepted=len(self.events))


class FailingSometimes:
    """A canary that fails one request in three."""

    version = "v2"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, features: Mapping[str, float]) -> float:
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("injected canary failure")
        return 0.5


def _loaded(model: object, version: str) -> LoadedModel:
    rng = np.random.default_rng(0)
    metadata = ModelMetadata(
        name="churn",
        version=version,
        task=ModelTask.CLASSIFICATION,
        kind="logistic",
        feature_names=FEATURES,
        created_at_ms=0,
        training_rows=100,
        baseline=ModelBaseline.from_training_data({f: rng.normal(size=100) for f in FEATURES}),
        primary_metric="accuracy",
        metrics={"accuracy": 0.8},
    )
    return LoadedModel(model, metadata)  # type: ignore[arg-type]


class ControlTopic:
    """The central guard's view of the control topic; what it issues reaches every replica."""

    def __init__(self, replicas: list[TestReplica]) -> None:
        self.replicas = replicas
        self.config = ModelConfig("v1")
        self.sequence = 0
        self.issued: list[ControlCommand] = []

    def send(self, config: ModelConfig) -> int:
        self.config = config
        self.sequence += 1
        for replica in self.replicas:
            replica.predictor.apply_config("churn", config, self.sequence)
        return self.sequence

    # The slice of CommandIssuer the central guard uses.
    def config_of(self, model_name: str) -> ModelConfig | None:
        return self.config

    def latest(self, model_name: str) -> ControlCommand | None:
        return self.issued[-1] if self.issued else None

    def issue(
        self,
        model_name: str,
        kind: CommandKind,
        change: Callable[[ModelConfig], ModelConfig],
        *,
        reason: str,
        details: dict[str, str],
        command_id: str = "c",
    ) -> ControlCommand:
        sequence = self.send(change(self.config))
        command = ControlCommand(
            command_id, model_name, kind, sequence, 0, "central", reason, self.config, "k", "s",
            details,
        )  # fmt: skip
        self.issued.append(command)
        return command


class TestReplica:
    __test__ = False

    def __init__(self, name: str) -> None:
        catalog = ModelCatalog()
        catalog.add(_loaded(LogisticModel("v1", FEATURES, np.array([1.0, 0.5]), 0.0), "v1"))
        catalog.add(_loaded(FailingSometimes(), "v2"))
        self.sink = Sink()
        self.guard = ReplicaGuard(SHARED)
        self.predictor = Predictor(catalog, self.sink, name, guard=self.guard)
        self.predictor.mark_ready()
        self.loop = GuardLoop(self.guard, self.predictor)
        self.sent = 0

    def request(self) -> None:
        """One request, then the guard thread's check (as if it ran after every request)."""
        with contextlib.suppress(PredictionFailedError):
            self.predictor.predict("churn", f"{self.predictor.replica_id}-{self.sent}", ROW)
        self.sent += 1
        self.loop.check_once()

    def suppressing(self) -> bool:
        config = self.predictor.config_of("churn")
        return config.canary_version is not None and not config.canary_enabled

    def canary_events(self, sequence_from: int = 0) -> list[PredictionEvent]:
        return [e for e in self.sink.events[sequence_from:] if e.route is Route.CANARY]


class Fleet:
    def __init__(self) -> None:
        self.replicas = [TestReplica("a"), TestReplica("b")]
        self.control = ControlTopic(self.replicas)
        self.central = CentralGuard(SHARED, cast(CommandIssuer, self.control))
        self._forwarded = [0, 0]

    def forward(self) -> None:
        """Deliver everything published so far to the central guard, then let it judge."""
        for index, replica in enumerate(self.replicas):
            events = replica.sink.events[self._forwarded[index] :]
            self._forwarded[index] = len(replica.sink.events)
            self.central.observe(events)
        self.central.check()

    def serve_until_a_replica_suppresses(self, limit: int = 5_000) -> TestReplica:
        for turn in range(limit):
            replica = self.replicas[turn % 2]
            replica.request()
            if replica.suppressing():
                return replica
        raise AssertionError("no replica suppressed the failing canary")

    def in_flight(self, replica: TestReplica, count: int, sequence: int) -> None:
        """Failed canary requests routed under `sequence` that finish (and publish) now."""
        failed = next(e for e in replica.canary_events() if e.error is not None)
        for index in range(count):
            late = dataclasses.replace(failed, prediction_id=f"late-{index}")
            replica.sink.publish(late)
            replica.guard.observe(late, sequence)


def test_when_one_replica_suppresses_the_central_guard_has_its_sample_and_rolls_back() -> None:
    fleet = Fleet()
    first = fleet.control.send(CANARY)
    tripped = fleet.serve_until_a_replica_suppresses()
    own = len(tripped.canary_events())
    assert own >= SHARED.min_requests
    fleet.forward()
    (rollback,) = fleet.control.issued
    assert rollback.kind is CommandKind.ROLLBACK
    assert int(rollback.details["canary_requests"]) >= own
    assert rollback.sequence == first + 1
    assert fleet.control.config.canary_version is None
    assert not any(replica.suppressing() for replica in fleet.replicas)


def test_a_retried_canary_is_still_rolled_back_centrally_despite_late_failures() -> None:
    """The reported bug: late events refilled the replicas' windows, so on a retry every
    replica tripped on ~100 requests in total, below the central guard's minimum sample."""
    fleet = Fleet()
    first = fleet.control.send(CANARY)
    tripped = fleet.serve_until_a_replica_suppresses()
    for replica in fleet.replicas:
        fleet.in_flight(replica, 60, first)  # finished after the replica suppressed
    fleet.forward()  # the central rollback reaches both replicas
    assert fleet.control.config.canary_version is None
    for replica in fleet.replicas:
        fleet.in_flight(replica, 60, first)  # finished after the rollback
    fleet.forward()

    marks = [len(replica.sink.events) for replica in fleet.replicas]
    retry = fleet.control.send(CANARY)
    for replica in fleet.replicas:
        fleet.in_flight(replica, 60, first)  # even later, after the retry began
    tripped = fleet.serve_until_a_replica_suppresses()
    fresh = [
        sum(1 for e in r.canary_events(mark) if not e.prediction_id.startswith("late-"))
        for r, mark in zip(fleet.replicas, marks, strict=True)
    ]
    index = fleet.replicas.index(tripped)
    assert fresh[index] >= SHARED.min_requests
    fleet.forward()
    assert len(fleet.control.issued) == 2
    second = fleet.control.issued[1]
    assert second.kind is CommandKind.ROLLBACK and second.sequence == retry + 1
    assert int(second.details["canary_requests"]) >= sum(fresh) >= SHARED.min_requests
    assert fleet.control.config.canary_version is None


def test_the_predictor_routes_a_retried_canary_again_and_tags_events() -> None:
    replica = TestReplica("a")
    control = ControlTopic([replica])
    control.send(CANARY)
    replica.predictor.suppress_canary("churn", "v2")
    assert replica.suppressing()
    # Keeping the canary keeps the suppression; disabling it, then enabling it again, is a
    # new try that routes (and is judged) afresh.
    control.send(dataclasses.replace(CANARY, flags={"x": "1"}))
    assert replica.suppressing()
    control.send(dataclasses.replace(CANARY, canary_enabled=False))
    sequence = control.send(CANARY)
    assert not replica.suppressing()
    seen: list[tuple[str, int]] = []

    class Recorder:
        def config_applied(self, model_name: str, config: ModelConfig, sequence: int) -> None:
            pass

        def observe(self, event: PredictionEvent, sequence: int) -> None:
            seen.append((event.route.value, sequence))

    replica.predictor.guard = Recorder()
    for _ in range(20):
        replica.request()
    assert {tag for _, tag in seen} == {sequence}
    assert {route for route, _ in seen} == {"production", "canary"}
