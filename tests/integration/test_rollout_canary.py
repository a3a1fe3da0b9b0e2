"""Progressive canary against the real broker, ClickHouse and two replicas."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _metrics_harness import (
    MODEL,
    TEST_POLICY,
    FeedbackPublisher,
    Fleet,
    Traffic,
    fleet,
    metrics_service,
    metrics_settings,
    settings_env,
    wait_for,
)

from safeloop.infra.settings import Settings
from safeloop.services.cli.main import main
from safeloop.services.monitor.service import MetricsConfig
from safeloop.services.rollout.machine import Phase, RolloutState

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str]]
FAST_STEPS = ("--steps", "5,10,25,50,100", "--bake-s", "0.3", "--max-p99-latency-ratio", "0")
CONFIG = MetricsConfig(snapshot_interval_ms=1_000, rollout_tick_ms=100, guard_policy=TEST_POLICY)


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("rollout"), tmp_path / "models")


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


def test_healthy_canary_walks_every_step_and_is_promoted(replicas: Fleet, cli: Cli) -> None:
    with metrics_service(replicas.settings, CONFIG) as service:
        traffic = Traffic(replicas, 500).start()
        try:
            code, out = cli(
                "rollout", "start", MODEL, "--candidate", "v2", "--min-sample", "25", *FAST_STEPS
            )
            assert code == 0, out
            promoted = wait_for(
                lambda: all(
                    c is not None and c.production_version == "v2" for c in replicas.configs()
                ),
                120,
            )
        finally:
            traffic.stop()
        assert promoted, f"not promoted: {service.rollouts.state_of(MODEL)}"
        state = wait_for(lambda: _finished(service.rollouts.state_of(MODEL)), 10)
        assert state is not None and state.phase is Phase.PROMOTED
        assert all(c is not None and c.canary_version is None for c in replicas.configs())
        # One SET_CANARY per step (5, 10, 25, 50, 100 %) then PROMOTE: every step was walked.
        assert min(replicas.applied_sequence()) == 6
    code, out = cli("rollout", "status", MODEL, "--json")
    assert code == 0, out
    status = json.loads(out)
    assert status["phase"] == "promoted"
    assert status["canary_percent"] == 100.0
    # Instant rollback to the known-good version, after promotion, without any analysis.
    code, out = cli("rollout", "abort", MODEL)
    assert code == 0, out
    assert wait_for(
        lambda: all(c is not None and c.production_version == "v1" for c in replicas.configs())
    )
    code, out = cli("rollout", "status", MODEL, "--json")
    assert json.loads(out)["phase"] == "rolled_back"


def _finished(state: RolloutState | None) -> RolloutState | None:
    if state is None or state.phase in (Phase.RUNNING, Phase.PAUSED):
        return None
    return state


def test_canary_with_worse_accuracy_is_stopped_at_its_gate(replicas: Fleet, cli: Cli) -> None:
    labels = FeedbackPublisher(replicas.settings)
    with metrics_service(replicas.settings, CONFIG) as service:
        traffic = Traffic(replicas, 500, on_prediction=labels).start()
        try:
            code, out = cli(
                "rollout", "start", MODEL, "--candidate", "v2", "--min-sample", "25",
                "--require-labels", "--min-labelled", "40", "--steps", "25,50,100",
                "--bake-s", "0.3", "--max-p99-latency-ratio", "0",
            )  # fmt: skip
            assert code == 0, out
            stopped = wait_for(
                lambda: all(c is not None and c.canary_version is None for c in replicas.configs()),
                120,
            )
        finally:
            traffic.stop()
            labels.close()
        assert stopped, f"canary still serving: {service.rollouts.state_of(MODEL)}"
        state = wait_for(lambda: _finished(service.rollouts.state_of(MODEL)), 10)
        assert state is not None and state.phase is Phase.ROLLED_BACK
        assert state.step_index == 0, "it must stop at the first gate"
        assert "accuracy" in state.reason
        assert all(c is not None and c.production_version == "v1" for c in replicas.configs())
        assert service.guard.rollbacks == 0, "the gate, not the guard, stopped it"
    code, out = cli("rollout", "status", MODEL, "--json")
    assert json.loads(out)["phase"] == "rolled_back"
