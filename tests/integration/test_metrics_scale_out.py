"""Two `safeloop metrics run` instances share one consumer group: the judge is SIGKILLed
mid-rollout, the other takes its partitions over and rolls the breaching canary back, once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from _metrics_harness import MODEL, Fleet, Traffic, fleet, metrics_settings, wait_for
from _metrics_process import MetricsProcess, metrics_process

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.services.cli.main import main

pytestmark = pytest.mark.integration

ARGS = (
    "--snapshot-interval-s", "0.5", "--rollout-tick-s", "0.2", "--min-requests", "100",
    "--max-p99-latency-ratio", "0", "--max-performance-drop", "0",
)  # fmt: skip
# A rollout that stays at its first step: the guard, not a gate, must end it.
ROLLOUT = [
    "rollout", "start", MODEL, "--candidate", "v2", "--steps", "50,100", "--bake-s", "600",
    "--min-sample", "100000", "--max-p99-latency-ratio", "0", "--latency-ratio-tolerance", "0",
]  # fmt: skip


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("scaleout"), tmp_path / "models")


@pytest.fixture
def replicas(settings: Settings) -> Iterator[Fleet]:
    with fleet(settings, local_guard=False) as started:
        yield started


def _partitions(instance: MetricsProcess) -> set[int]:
    consumers: dict[str, Any] = instance.health().get("consumers", {})
    return set(consumers.get("metrics-predictions", {}).get("partitions", []))


def _rollbacks(settings: Settings) -> list[tuple[str, str]]:
    rows = (
        clickhouse_client(settings)
        .query(
            "SELECT command_id, issuer FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' AND kind = 'rollback'",
            parameters={"m": MODEL},
        )
        .result_rows
    )
    return sorted({(str(c), str(i)) for c, i in rows})


def test_the_judge_dies_mid_rollout_and_the_other_instance_keeps_guarding(
    settings: Settings,
    replicas: Fleet,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    partitions = set(range(settings.partitions))
    assert len(partitions) >= 2
    with ExitStack() as stack:
        instances = [stack.enter_context(metrics_process(settings, *ARGS)) for _ in range(2)]
        # The group shares the partitions: each instance reads some, together all.
        assert wait_for(
            lambda: (
                all(_partitions(i) for i in instances)
                and _partitions(instances[0]) | _partitions(instances[1]) == partitions
            ),
            60,
        ), [i.health() for i in instances]
        assert not _partitions(instances[0]) & _partitions(instances[1])
        assert wait_for(lambda: sum(bool(i.health().get("judge")) for i in instances) == 1, 30)
        judge = next(i for i in instances if i.health().get("judge"))
        survivor = next(i for i in instances if i is not judge)

        assert main(ROLLOUT) == 0, capsys.readouterr().out
        assert wait_for(
            lambda: [c and c.canary_basis_points for c in replicas.configs()] == [5_000] * 2, 30
        )
        traffic = Traffic(replicas, 200).start()
        try:
            wait_for(lambda: False, 2.0)  # healthy canary traffic through both instances
            judge.kill()
            replicas.flaky.failing.set()
            rolled_back = wait_for(
                lambda: all(c is not None and c.canary_version is None for c in replicas.configs()),
                90,
            )
        finally:
            traffic.stop()
        assert rolled_back, f"canary still served after the judge died: {replicas.configs()}"
        assert survivor.health().get("judge") is True
        assert _partitions(survivor) == partitions
        # The survivor audits its rollback after publishing it: wait for the row while it
        # lives (a SIGKILL in between leaves the row to the next judge's catch-up).
        assert wait_for(lambda: len(_rollbacks(settings)) >= 1, 60), survivor.health()
    # One rollback, from the central guard, not one per instance.
    assert len(_rollbacks(settings)) == 1, _rollbacks(settings)
