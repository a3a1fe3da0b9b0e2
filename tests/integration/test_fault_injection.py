"""Rehearsal with `safeloop inject` against real replicas, Kafka, ClickHouse and the central
guard: an injected error rate on the canary gets it rolled back, and an injection ends by
itself at its expiry without a second command."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _metrics_harness import (
    FEATURES,
    MODEL,
    TEST_POLICY,
    Fleet,
    Traffic,
    fleet,
    metrics_service,
    metrics_settings,
    publish,
    settings_env,
    wait_for,
)

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.cli.main import main
from safeloop.services.monitor.service import MetricsConfig
from safeloop.services.serving.exceptions import InjectedFaultError

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("inject"), tmp_path / "models")


@pytest.fixture
def replicas(settings: Settings) -> Iterator[Fleet]:
    with fleet(settings) as started:
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


def test_an_injected_error_rate_gets_the_canary_rolled_back(
    settings: Settings, replicas: Fleet, cli: Cli
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
            assert wait_for(lambda: service.health.keys(), 20)
            code, out = cli(
                "inject", MODEL, "v2", "--error-rate", "0.3", "--for", "10m", "--wait", "--json"
            )
            # The injection works so fast that the guard's rollback may supersede it on a
            # replica before the wait sees it applied there: --wait then says so, truthfully.
            assert code in (ExitCode.OK, ExitCode.SUPERSEDED), out
            rolled_back = wait_for(
                lambda: all(c is not None and c.canary_version is None for c in replicas.configs()),
                30,
            )
        finally:
            traffic.stop()
        assert rolled_back, f"replicas still have the canary: {replicas.configs()}"
        assert wait_for(lambda: service.guard.rollbacks == 1, 10)
        # The healthy model code never failed: only the injection did.
        assert not replicas.flaky.failing.is_set()
    rows = (
        clickhouse_client(settings)
        .query(
            "SELECT kind, reason, injection FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' ORDER BY sequence",
            parameters={"m": MODEL},
        )
        .result_rows
    )
    kinds = [row[0] for row in rows]
    assert kinds[-2:] == ["inject", "rollback"]
    assert rows[-2][2]["version"] == "v2" and float(rows[-2][2]["error_rate"]) == 0.3
    assert "error_rate" in rows[-1][1]


def test_an_injection_expires_on_its_own(settings: Settings, replicas: Fleet, cli: Cli) -> None:
    replica = replicas.replicas[0]
    code, out = cli("inject", MODEL, "v1", "--error-rate", "1", "--for", "3s", "--wait", "--json")
    assert code == ExitCode.OK
    sequence = json.loads(out)["command"]["sequence"]
    injection = replica.predictor.config_of(MODEL).injection
    assert injection is not None and injection.version == "v1"
    code, out = cli("status", MODEL, "--json")
    assert "INJECTING v1: 100% errors until" in json.loads(out)["models"][MODEL]["config"]

    def answered() -> bool:
        try:
            replica.predictor.predict(MODEL, uuid.uuid4().hex, FEATURES)
        except InjectedFaultError:
            return False
        return True

    if time.time() * 1000 < injection.until - 500:  # still in force: every request fails
        assert not answered()
    assert wait_for(answered, 30)
    assert time.time() * 1000 >= injection.until
    # No command ended it: the replicas still hold the same config, now expired.
    assert replicas.applied_sequence() == [sequence, sequence]
    code, out = cli("status", MODEL)
    assert code == ExitCode.OK and "expired" in out
