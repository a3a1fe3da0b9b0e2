"""A provisional promotion (made on the label-free estimate) reverted when labels contradict it,
against the real broker, ClickHouse and two replicas."""

from __future__ import annotations

import random
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
from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.settings import Settings
from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, Route
from safeloop.schemas.tables import FEEDBACK
from safeloop.services.cli.main import main
from safeloop.services.monitor.service import MetricsConfig
from safeloop.services.rollout.machine import Phase

pytestmark = pytest.mark.integration

CONFIG = MetricsConfig(
    snapshot_interval_ms=1_000,
    rollout_tick_ms=100,
    provisional_recheck_ms=500,
    guard_policy=TEST_POLICY,
)


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("provisional"), tmp_path / "models")


@pytest.fixture
def replicas(settings: Settings) -> Iterator[Fleet]:
    with fleet(settings, local_guard=False) as started:
        yield started


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    return lambda *argv: main(list(argv))


def _labels(version: str, route: Route, right_share: float, since_ms: int) -> list[FeedbackRecord]:
    """Labels as the join would land them: `right_share` of the answers right."""
    chance = random.Random(f"{version}{route}")
    rows = []
    for i in range(400):
        right = chance.random() < right_share
        prediction = 0.9
        stamp = since_ms + 10 + i
        rows.append(
            FeedbackRecord(
                f"{version}-{route}-{i}",
                MODEL,
                version,
                route,
                "r",
                {},
                prediction,
                prediction,
                stamp,
                FeedbackStatus.JOINED,
                1.0 if right else 0.0,
                stamp + 5,
                5,
                "labels",
                stamp + 5,
            )
        )
    return rows


def test_a_provisional_promotion_is_reverted_when_labels_contradict_it(
    replicas: Fleet, cli: Callable[..., int]
) -> None:
    with metrics_service(replicas.settings, CONFIG) as service:
        traffic = Traffic(replicas, 400).start()
        try:
            code = cli(
                "rollout",
                "start",
                MODEL,
                "--candidate",
                "v2",
                "--steps",
                "50,100",
                "--bake-s",
                "0.3",
                "--min-sample",
                "25",
                "--min-labelled",
                "100",
                "--require-labels",
                "--provisional",
                "--max-p99-latency-ratio",
                "0",
            )
            assert code == 0
            promoted = wait_for(
                lambda: all(
                    c is not None and c.production_version == "v2" for c in replicas.configs()
                ),
                90,
            )
            assert promoted, f"not promoted: {service.rollouts.state_of(MODEL)}"
            state = wait_for(
                lambda: (
                    (s := service.rollouts.state_of(MODEL)) is not None
                    and s.phase is Phase.PROMOTED
                    and s
                ),
                10,
            )
            assert state and state.provisional, service.rollouts.state_of(MODEL)
            # Weeks later, as far as the loop knows: the labels land, and v2 was worse.
            since = state.started_ms
            client = clickhouse_client(replicas.settings)
            good = _labels("v1", Route.PRODUCTION, 0.9, since)
            bad = _labels("v2", Route.CANARY, 0.45, since)
            insert_idempotent(client, FEEDBACK, FEEDBACK.rows(good + bad))
            reverted = wait_for(
                lambda: all(
                    c is not None and c.production_version == "v1" for c in replicas.configs()
                ),
                60,
            )
        finally:
            traffic.stop()
        assert reverted, f"still on v2: {service.rollouts.state_of(MODEL)}"
        # The controller records its own transition once the command is acknowledged and
        # audited, which can be after the replicas applied it.
        final = wait_for(
            lambda: (
                (s := service.rollouts.state_of(MODEL)) is not None
                and s.phase is Phase.ROLLED_BACK
                and s
            ),
            10,
        )
        assert final, service.rollouts.state_of(MODEL)
        assert "contradicted by labels" in final.reason
    rows = (
        clickhouse_client(replicas.settings)
        .query(
            "SELECT kind, reason, details FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' ORDER BY sequence",
            parameters={"m": MODEL},
        )
        .result_rows
    )
    promote = next(row for row in rows if row[0] == "promote")
    assert promote[2].get("provisional") == "true"
    assert rows[-1][0] == "rollback" and "contradicted by labels" in rows[-1][1]
