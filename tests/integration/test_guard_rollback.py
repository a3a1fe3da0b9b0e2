"""The central guard against the real broker, ClickHouse and two replicas."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from _metrics_harness import (
    MODEL,
    TEST_POLICY,
    Fleet,
    Traffic,
    fleet,
    metrics_service,
    metrics_settings,
    publish,
    wait_for,
)

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind, Route
from safeloop.services.guard.verdict import VerdictKind
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.monitor.service import MetricsConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("guard"), tmp_path / "models")


@pytest.fixture
def replicas(settings: Settings) -> Iterator[Fleet]:
    with fleet(settings) as started:
        yield started


def test_failing_canary_is_rolled_back_on_both_replicas(
    settings: Settings, replicas: Fleet
) -> None:
    sequence = publish(
        settings,
        CommandKind.SET_CANARY,
        lambda c: dataclasses.replace(c, canary_version="v2", canary_basis_points=2_000),
    )
    assert wait_for(lambda: min(replicas.applied_sequence()) >= sequence)
    config = MetricsConfig(snapshot_interval_ms=500, guard_policy=TEST_POLICY)
    with metrics_service(settings, config) as service:
        traffic = Traffic(replicas, 400).start()
        try:
            # Healthy first: no rollback while the canary answers.
            assert wait_for(lambda: service.health.keys(), 20)
            wait_for(lambda: False, 1.5)
            assert service.guard.rollbacks == 0
            replicas.flaky.failing.set()
            rolled_back = wait_for(
                lambda: all(c is not None and c.canary_version is None for c in replicas.configs()),
                30,
            )
        finally:
            traffic.stop()
        assert rolled_back, f"replicas still have the canary: {replicas.configs()}"
        assert wait_for(lambda: service.guard.rollbacks == 1, 10)
        assert min(replicas.applied_sequence()) > sequence
        assert all(c is not None and c.production_version == "v1" for c in replicas.configs())
        service.flush()
        assert service.counts.snapshots >= 1
    client = clickhouse_client(settings)
    log = client.query(
        "SELECT kind, reason, details FROM control_log WHERE model_name = {m:String} "
        "AND entry_type = 'command' ORDER BY sequence",
        parameters={"m": MODEL},
    ).result_rows
    # The test's own canary was published without a row (as by an issuer killed before its
    # audit): the judge's catch-up wrote it; then the one rollback.
    assert [row[0] for row in log] == ["set_canary", "rollback"]
    kind, reason, details = log[1]
    assert kind == "rollback"
    assert "error_rate" in reason
    assert float(details["error_rate"]) > 0.05
    assert details["canary_version"] == "v2"
    metrics = client.query(
        "SELECT DISTINCT model_version, route, metric FROM health_metrics"
    ).result_rows
    assert ("v2", "canary", "error_rate") in metrics
    assert ("v1", "production", "latency_p99_ms") in metrics


def test_client_mistakes_spare_a_healthy_canary_and_server_errors_roll_it_back(
    settings: Settings, replicas: Fleet
) -> None:
    sequence = publish(
        settings,
        CommandKind.SET_CANARY,
        lambda c: dataclasses.replace(c, canary_version="v2", canary_basis_points=2_000),
    )
    assert wait_for(lambda: min(replicas.applied_sequence()) >= sequence)
    config = MetricsConfig(snapshot_interval_ms=500, guard_policy=TEST_POLICY)
    canary = WindowKey(MODEL, "v2", Route.CANARY)
    with metrics_service(settings, config) as service:
        # One request in ten is malformed (422 missing feature), on both versions alike: twice
        # the guard's 5 % absolute error limit, and still no reason to roll anything back.
        traffic = Traffic(replicas, 400, malformed_every=10).start()
        try:
            assert wait_for(lambda: service.guard.verdicts[VerdictKind.HEALTHY] >= 30, 30)
            assert wait_for(lambda: service.health.count_snapshot(canary).request_count >= 500, 30)
            judged = service.health.count_snapshot(canary)
            assert judged.client_error_rate is not None and judged.client_error_rate > 0.05
            assert judged.error_count == 0
            assert service.guard.rollbacks == 0
            assert all(c is not None and c.canary_version == "v2" for c in replicas.configs())
            # Neither did any replica's local guard stop routing to the canary.
            assert all(r.predictor.config_of(MODEL).canary_enabled for r in replicas.replicas)
            # The same canary now fails on the server side: rolled back everywhere.
            replicas.flaky.failing.set()
            rolled_back = wait_for(
                lambda: all(c is not None and c.canary_version is None for c in replicas.configs()),
                30,
            )
        finally:
            traffic.stop()
        assert rolled_back, f"replicas still have the canary: {replicas.configs()}"
        assert wait_for(lambda: service.guard.rollbacks == 1, 10)
    client = clickhouse_client(settings)
    (reason,) = client.query(
        "SELECT reason FROM control_log WHERE model_name = {m:String} "
        "AND entry_type = 'command' AND kind = 'rollback'",
        parameters={"m": MODEL},
    ).result_rows[0]
    assert "error_rate" in reason and "client_error" not in reason
