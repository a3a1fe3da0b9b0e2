"""The central guard per segment, against the real broker, ClickHouse and two replicas.

Two canaries fail 2.5 % of all requests, well within the guard's 5 % limit: one fails half of
Brazil's requests (5 % of traffic) and nothing else, the other fails 2.5 % of every country's.
The first is rolled back by the guard (not a rollout gate: none runs) with the segment named
in the command; the second, on the same traffic, is not.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from _metrics_harness import (
    FEATURES,
    MODEL,
    TEST_POLICY,
    metrics_service,
    metrics_settings,
    publish,
    wait_for,
)

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind
from safeloop.services.guard.verdict import VerdictKind
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.monitor.service import MetricsConfig, MetricsService
from safeloop.services.serving.replica import Replica, load_catalog

pytestmark = pytest.mark.integration

MIN_SEGMENT_SAMPLE = 50
CONFIG = MetricsConfig(
    snapshot_interval_ms=1_000,
    guard_policy=TEST_POLICY,
    guard_window_rows=4_000,
    segment_min_sample=MIN_SEGMENT_SAMPLE,
)
COUNTRIES = ("US", "DE", "FR", "IN", "BR")
WEIGHTS = (0.4, 0.2, 0.2, 0.15, 0.05)
# Requests from Brazil carry this feature value, so the candidate (which sees features, not
# request attributes) can fail for them alone.
BRAZIL_AGE = 9.0


class Candidate:
    """v2: raises on `brazil_share` of Brazil's requests and `everyone_share` of all others'."""

    def __init__(self, inner: Any, brazil_share: float, everyone_share: float) -> None:
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


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    model_dir = tmp_path / "models"
    store = ModelStore(model_dir)
    for seed, version in enumerate(("v1", "v2")):
        dataset = make_dataset(ModelTask.CLASSIFICATION, 2000, seed=seed)
        model, metadata = train_model(MODEL, version, ModelTask.CLASSIFICATION, dataset)
        store.save(model, dataclasses.replace(metadata, segment_keys=("country",)))
        time.sleep(0.002)
    return metrics_settings(stack.fresh("guard_segments"), model_dir)


@contextmanager
def replicas(settings: Settings, brazil: float, everyone: float) -> Iterator[list[Replica]]:
    store = ModelStore(settings.models_path)
    started = []
    for index in range(2):
        catalog = load_catalog(store, [MODEL])
        loaded = catalog.get(MODEL, "v2")
        assert loaded is not None
        catalog.add(LoadedModel(Candidate(loaded.model, brazil, everyone), loaded.metadata))
        # No replica guard: the central guard alone decides here.
        replica = Replica(settings, f"replica-{index}-{uuid.uuid4().hex[:4]}", catalog=catalog)
        replica.start()
        started.append(replica)
    try:
        for replica in started:
            assert replica.wait_ready(30), f"{replica.replica_id} never caught up"
        yield started
    finally:
        for replica in started:
            replica.stop()


def _traffic(fleet: list[Replica], rate_per_s: float, stop: threading.Event) -> None:
    rng = random.Random(11)
    interval_s = 1.0 / rate_per_s
    next_at = time.perf_counter()
    sent = 0
    while not stop.is_set():
        country = rng.choices(COUNTRIES, WEIGHTS)[0]
        features = {**FEATURES, "age": BRAZIL_AGE} if country == "BR" else FEATURES
        with suppress(Exception):  # the candidate's failures are published, not raised here
            fleet[sent % 2].predictor.predict(
                MODEL, uuid.uuid4().hex, features, {"country": country}
            )
        sent += 1
        next_at += interval_s
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def _canary_set(settings: Settings) -> int:
    return publish(
        settings,
        CommandKind.SET_CANARY,
        lambda c: dataclasses.replace(c, canary_version="v2", canary_basis_points=5_000),
    )


def _applied(fleet: list[Replica]) -> list[int]:
    return [(a.sequence if (a := r.state.applied(MODEL)) is not None else 0) for r in fleet]


def _canary_gone(fleet: list[Replica]) -> bool:
    configs = [r.state.applied(MODEL) for r in fleet]
    return all(c is not None and c.config.canary_version is None for c in configs)


def _every_segment_judged(service: MetricsService) -> bool:
    latest = service.guard.latest.get(MODEL)
    return latest is not None and latest.segments_judged == len(COUNTRIES)


def test_a_canary_failing_one_segment_only_is_rolled_back_naming_it(settings: Settings) -> None:
    with replicas(settings, brazil=0.5, everyone=0.0) as fleet:
        sequence = _canary_set(settings)
        assert wait_for(lambda: min(_applied(fleet)) >= sequence)
        with metrics_service(settings, CONFIG) as service:
            stop = threading.Event()
            sender = threading.Thread(target=_traffic, args=(fleet, 400.0, stop), daemon=True)
            sender.start()
            try:
                gone = wait_for(lambda: _canary_gone(fleet), 60)
            finally:
                stop.set()
                sender.join(10)
            assert gone, f"canary still serving; guard saw {service.guard.latest.get(MODEL)}"
            # The replicas may apply the command before the guard's thread counts it.
            assert wait_for(lambda: service.guard.rollbacks == 1, 10)
            verdict = service.guard.latest[MODEL]
            # The whole canary stayed within every threshold: only Brazil breached.
            assert verdict.breaches == ()
            assert [b.segment for b in verdict.segment_breaches] == ["country=BR"]
    with closing(clickhouse_client(settings)) as client:
        (row,) = wait_for(
            lambda: (
                client.query(
                    "SELECT reason, details FROM control_log WHERE model_name = {m:String} "
                    "AND entry_type = 'command' AND kind = 'rollback'",
                    parameters={"m": MODEL},
                ).result_rows
            ),
            30,
        )
    reason, details = row
    assert details["decided_by"] == "central_guard"
    assert details["segment"] == "country=BR"
    assert details["failed_segments"] == "country=BR"
    assert float(details["error_rate[country=BR]"]) > 0.2
    assert float(details["error_rate_adjusted_p[country=BR]"]) <= TEST_POLICY.segment_alpha
    assert "error_rate" not in details, "the whole canary's error rate was within its limit"
    assert "segment country=BR: error_rate" in reason, reason


def test_a_canary_failing_as_often_but_evenly_is_not_rolled_back(settings: Settings) -> None:
    with replicas(settings, brazil=0.025, everyone=0.025) as fleet:
        sequence = _canary_set(settings)
        assert wait_for(lambda: min(_applied(fleet)) >= sequence)
        with metrics_service(settings, CONFIG) as service:
            stop = threading.Event()
            sender = threading.Thread(target=_traffic, args=(fleet, 400.0, stop), daemon=True)
            sender.start()
            try:
                assert wait_for(lambda: _every_segment_judged(service), 60), (
                    service.guard.latest.get(MODEL)
                )
                judged_at = service.guard.verdicts[VerdictKind.HEALTHY]
                # Many more looks with every segment in: none of them is a breach (a loaded
                # box looks less often; a breach ends the wait at once).
                assert wait_for(
                    lambda: (
                        service.guard.verdicts[VerdictKind.HEALTHY] >= judged_at + 50
                        or service.guard.verdicts[VerdictKind.BREACH] > 0
                    ),
                    180,
                ), (dict(service.guard.verdicts), service.guard.latest.get(MODEL))
            finally:
                stop.set()
                sender.join(10)
            verdict = service.guard.latest[MODEL]
            assert verdict.kind is VerdictKind.HEALTHY and verdict.segment_breaches == ()
            assert verdict.segments_judged == len(COUNTRIES)
            assert service.guard.rollbacks == 0
            assert service.guard.verdicts[VerdictKind.BREACH] == 0
            assert not _canary_gone(fleet)
