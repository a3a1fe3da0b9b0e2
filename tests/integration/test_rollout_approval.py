"""Approval-gated and dry-run rollouts against the real broker, ClickHouse and two replicas."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
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
    settings_env,
    wait_for,
)

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.services.cli.main import main
from safeloop.services.monitor.service import MetricsConfig
from safeloop.services.rollout.machine import Phase

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str]]
FAST = (
    "--steps",
    "50,100",
    "--bake-s",
    "0.3",
    "--max-p99-latency-ratio",
    "0",
    "--min-sample",
    "25",
)
CONFIG = MetricsConfig(snapshot_interval_ms=1_000, rollout_tick_ms=100, guard_policy=TEST_POLICY)


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("approval"), tmp_path / "models")


@pytest.fixture
def replicas(settings: Settings) -> Iterator[Fleet]:
    with fleet(settings, local_guard=False) as started:
        yield started


@pytest.fixture
def cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        return code, capsys.readouterr().out

    return run


def _phase(service: object, phase: Phase) -> bool:
    state = service.rollouts.state_of(MODEL)  # type: ignore[attr-defined]
    return state is not None and state.phase is phase


def test_promotion_waits_for_approval_then_goes_on(replicas: Fleet, cli: Cli) -> None:
    with metrics_service(replicas.settings, CONFIG) as service:
        traffic = Traffic(replicas, 400).start()
        try:
            code, out = cli(
                "rollout", "start", MODEL, "--candidate", "v2", "--approval", "promotion", *FAST
            )
            assert code == 0, out
            assert wait_for(lambda: _phase(service, Phase.AWAITING_APPROVAL), 90)
            # Waiting: still at 100 % canary, production unchanged, however long it waits.
            wait_for(lambda: False, 1.0)
            assert all(c is not None and c.production_version == "v1" for c in replicas.configs())
            code, out = cli("rollout", "status", MODEL, "--json")
            assert code == 0 and json.loads(out)["phase"] == "awaiting_approval", out
            code, out = cli("rollout", "approve", MODEL, "--reason", "checked the dashboards")
            assert code == 0, out
            promoted = wait_for(
                lambda: all(
                    c is not None and c.production_version == "v2" for c in replicas.configs()
                ),
                30,
            )
        finally:
            traffic.stop()
        assert promoted, f"not promoted: {service.rollouts.state_of(MODEL)}"
    rows = (
        clickhouse_client(replicas.settings)
        .query(
            "SELECT kind, issuer, reason FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' ORDER BY sequence",
            parameters={"m": MODEL},
        )
        .result_rows
    )
    assert rows[-1][0] == "promote"
    assert "approved by" in rows[-1][2] and "checked the dashboards" in rows[-1][2]
    assert "@" in rows[-1][1]  # the operator, as user@host


def test_dry_run_gate_records_without_acting(replicas: Fleet, cli: Cli) -> None:
    with metrics_service(replicas.settings, CONFIG) as service:
        traffic = Traffic(replicas, 400).start()
        try:
            code, out = cli("rollout", "start", MODEL, "--candidate", "v2", "--dry-run", *FAST)
            assert code == 0, out
            assert wait_for(lambda: service.rollouts.dry_run_records >= 1, 90)
            wait_for(lambda: False, 1.0)
        finally:
            traffic.stop()
        # The gate passed and would have moved to 100 %; the canary stays at its first step.
        assert all(
            c is not None and c.canary_basis_points == 5_000 and c.production_version == "v1"
            for c in replicas.configs()
        )
        assert _phase(service, Phase.RUNNING)
    client = clickhouse_client(replicas.settings)
    wait_for(
        lambda: (
            client.query(
                "SELECT count() FROM control_log WHERE model_name = {m:String} "
                "AND entry_type = 'dry_run'",
                parameters={"m": MODEL},
            ).result_rows[0][0]
            >= 1
        ),
        15,
    )
    (reason, details), *_ = client.query(
        "SELECT reason, details FROM control_log WHERE model_name = {m:String} "
        "AND entry_type = 'dry_run' ORDER BY issued_at",
        parameters={"m": MODEL},
    ).result_rows
    assert reason.startswith("dry run, not done: gate at 50% passed")
    assert details["dry_run_step_percent"] == "100"
    commands = client.query(
        "SELECT count() FROM control_log WHERE model_name = {m:String} AND entry_type = 'command'",
        parameters={"m": MODEL},
    ).result_rows[0][0]
    assert commands == 1  # only the start
