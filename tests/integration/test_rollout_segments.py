"""A canary that fails only for one segment, against the real broker, ClickHouse and two
replicas: the whole population stays within the gate's tolerance and the guard's limits, the
segment does not, and the rollout is rolled back with the segment named. The metrics service
also writes that segment's figures to segment_metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from _metrics_harness import (
    MODEL,
    TEST_POLICY,
    FailingByCountry,
    country_traffic,
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
# The central guard judges segments too and would stop Brazil's 50 % failures itself
# (test_guard_segment_rollback.py); its error limit sits above them here, so that what is
# tested is the rollout gate's per-segment verdict.
CONFIG = MetricsConfig(
    snapshot_interval_ms=1_000,
    rollout_tick_ms=100,
    guard_policy=replace(TEST_POLICY, max_error_rate=0.8),
    segment_min_sample=30,
)


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    # Both versions declare the segment key; replicas copy it from the request.
    return metrics_settings(stack.fresh("rollout_segments"), tmp_path / "models", ("country",))


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


def test_a_canary_failing_one_segment_is_rolled_back_naming_it(
    settings: Settings, cli: Cli
) -> None:
    # The candidate fails half of Brazil's requests: 2.5 % overall, within the guard's 5 %
    # limit and the plan's 5-point tolerance.
    candidate = partial(FailingByCountry, brazil_share=0.5)
    with (
        fleet(settings, local_guard=False, candidate=candidate) as replicas,
        metrics_service(settings, CONFIG) as service,
    ):
        # Requests also carry an attribute no version declares.
        with country_traffic(replicas, 400.0, {"session": "ignored"}):
            code, out = cli(
                "rollout", "start", MODEL, "--candidate", "v2", "--steps", "50,100",
                # The step cannot pass before the segments have had their look.
                "--min-sample", "3000", "--bake-s", "60", "--max-p99-latency-ratio", "0",
                "--latency-ratio-tolerance", "0", "--error-rate-tolerance", "0.05",
                "--min-segment-sample", "30",
            )  # fmt: skip
            assert code == 0, out
            stopped = wait_for(replicas.canary_gone, 120)
        assert stopped, f"canary still serving: {service.rollouts.state_of(MODEL)}"
        state = wait_for(
            lambda: (
                (s := service.rollouts.state_of(MODEL)) is not None
                and s.phase is Phase.ROLLED_BACK
                and s
            ),
            10,
        )
        assert state, service.rollouts.state_of(MODEL)
        assert "segment country=BR: canary error rate" in state.reason, state.reason
        assert "US" not in state.reason and "DE" not in state.reason
        # The whole population's comparison did not fail: only the segment's did.
        assert "higher than production" not in state.reason, state.reason
        assert service.guard.rollbacks == 0, "the gate, not the guard, stopped it"
        assert all(c is not None and c.production_version == "v1" for c in replicas.configs())
        # The written figures agree: Brazil's canary failed, the others did not.
        query = (
            "SELECT segment_value, argMax(value, computed_at) FROM segment_metrics "
            "WHERE model_version = 'v2' AND route = 'canary' AND segment_key = 'country' "
            "AND metric = 'error_rate' GROUP BY segment_value ORDER BY segment_value"
        )
        with closing(clickhouse_client(settings)) as client:
            # Brazil's row comes once its window holds the minimum sample (a snapshot later).
            rows = wait_for(
                lambda: (
                    (found := client.query(query).result_rows) and "BR" in dict(found) and found
                ),
                30,
            )
    assert rows, "no segment rows written"
    rates = dict(rows)
    assert rates.get("BR", 0.0) > 0.2, rates
    assert all(rate == 0.0 for country, rate in rates.items() if country != "BR"), rates
    code, out = cli("rollout", "status", MODEL, "--json")
    status = json.loads(out)
    assert status["phase"] == "rolled_back"
    assert "segment country=BR" in status["reason"], status
