"""Approve and reject from the dashboard's HTTP endpoints against the real broker, ClickHouse,
the metrics service driving the rollout and two replicas following the control topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
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
from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.tables import CONTROL_LOG
from safeloop.services.cli.main import main
from safeloop.services.dashboard.app import create_app
from safeloop.services.dashboard.decisions import TOKEN_HEADER, writes_from
from safeloop.services.dashboard.reader import Reader
from safeloop.services.monitor.service import MetricsConfig, MetricsService
from safeloop.services.rollout.gate import GateOutcome, GateResult
from safeloop.services.rollout.machine import Phase, RolloutState
from safeloop.services.rollout.persist import PLAN_KEY, STATE_KEY, plan_to_json, state_to_json
from safeloop.services.rollout.plan import Approval, RolloutPlan

pytestmark = pytest.mark.integration

TOKEN = "it-operator-token"
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
def replicas(stack: Any, tmp_path: Path) -> Iterator[Fleet]:
    settings = metrics_settings(stack.fresh("dashapprove"), tmp_path / "models")
    settings = replace(settings, dashboard_operator_token=Secret(TOKEN))
    with fleet(settings, local_guard=False) as started:
        yield started


def dashboard(settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the dashboard app as `safeloop dashboard` builds it from `settings`."""

    async def run() -> httpx.Response:
        app = create_app(Reader(settings), writes_from(settings))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://dash", timeout=60
        ) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())


def _start_waiting(
    replicas: Fleet, service: MetricsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`safeloop rollout start` with an approval gate on the promotion; wait until it waits."""
    for name, value in settings_env(replicas.settings).items():
        monkeypatch.setenv(name, value)
    code = main(["rollout", "start", MODEL, "--candidate", "v2", "--approval", "promotion", *FAST])
    assert code == 0
    assert wait_for(lambda: _phase(service, Phase.AWAITING_APPROVAL), 90)
    pending = dashboard(replicas.settings, "GET", "/api/approvals")
    assert pending.status_code == 200, pending.text
    (waiting,) = pending.json()["pending"]
    assert pending.json()["writable"] is True
    assert (waiting["model"], waiting["candidate_version"]) == (MODEL, "v2")
    assert (waiting["canary_percent"], waiting["next"]) == (100.0, "promotion")


def _phase(service: MetricsService, phase: Phase) -> bool:
    state = service.rollouts.state_of(MODEL)
    return state is not None and state.phase is phase


def _commands(settings: Settings) -> list[tuple[str, str, str]]:
    rows = (
        clickhouse_client(settings)
        .query(
            "SELECT kind, issuer, reason FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' ORDER BY sequence",
            parameters={"m": MODEL},
        )
        .result_rows
    )
    return [(str(k), str(i), str(r)) for k, i, r in rows]


def _decide(settings: Settings, action: str, reason: str, token: str | None) -> httpx.Response:
    headers = {} if token is None else {TOKEN_HEADER: token}
    body = {"model": MODEL, "operator": "alice", "reason": reason}
    return dashboard(settings, "POST", f"/api/rollout/{action}", json=body, headers=headers)


def rollout_row(model: str, sequence: int, minutes_ago: int, phase: Phase) -> list[Any]:
    """A `control_log` rollout row: the state after a transition of a (10, 100) % plan."""
    plan = RolloutPlan(steps_percent=(10.0, 100.0), approval=Approval.EVERY_STEP)
    gate = GateResult(GateOutcome.PASS, "healthy", {"canary_requests": "900"})
    stamp = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=minutes_ago)
    stamp_ms = int(stamp.replace(tzinfo=UTC).timestamp() * 1000)
    state = RolloutState(model, "v2", "v1", phase, 0, stamp_ms, stamp_ms, stamp_ms, gate, "r")
    details = {STATE_KEY: state_to_json(state), PLAN_KEY: plan_to_json(plan)}
    return [
        *("rollout", f"{model}-{sequence}", model, "pause", sequence, stamp, "metrics", "r"),
        *("v1", "v2", 1000, True, None, False, False, None, {}, {}, "k1", "sig", details),
    ]


def test_pending_view_lists_the_newest_rollout_state_per_model(stack: Any) -> None:
    settings: Settings = stack.fresh("dashpending")
    rows = [
        rollout_row("fraud", 1, 9, Phase.RUNNING),
        rollout_row("fraud", 2, 5, Phase.AWAITING_APPROVAL),  # newest: waiting
        rollout_row("churn", 1, 8, Phase.AWAITING_APPROVAL),
        rollout_row("churn", 2, 4, Phase.PROMOTED),  # newest: done
        rollout_row("ads", 1, 3, Phase.AWAITING_APPROVAL),
    ]
    with closing(clickhouse_client(settings)) as client:
        client.insert("control_log", rows, column_names=CONTROL_LOG.columns)
    answer = dashboard(settings, "GET", "/api/approvals")
    assert answer.status_code == 200, answer.text
    pending = answer.json()["pending"]
    assert [(p["model"], p["sequence"]) for p in pending] == [("fraud", 2), ("ads", 1)]
    assert pending[0]["next"] == "100%" and pending[0]["canary_percent"] == 10.0
    assert pending[0]["gate"]["numbers"] == {"canary_requests": "900"}
    assert answer.json()["writable"] is False  # no operator token in these settings


def test_dashboard_approval_lets_the_promotion_go_on(
    replicas: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replicas.settings
    with metrics_service(settings, CONFIG) as service:
        traffic = Traffic(replicas, 400).start()
        try:
            _start_waiting(replicas, service, monkeypatch)
            before = _commands(settings)
            # Unauthenticated and wrongly authenticated posts change nothing.
            assert _decide(settings, "approve", "no token", None).status_code == 401
            assert _decide(settings, "approve", "bad token", "guess").status_code == 401
            assert _commands(settings) == before
            assert _phase(service, Phase.AWAITING_APPROVAL)
            answer = _decide(settings, "approve", "canary looked fine on the dashboard", TOKEN)
            assert answer.status_code == 200, answer.text
            assert answer.json()["phase"] == "promoted"
            promoted = wait_for(
                lambda: all(
                    c is not None and c.production_version == "v2" for c in replicas.configs()
                ),
                30,
            )
        finally:
            traffic.stop()
        assert promoted, f"not promoted: {service.rollouts.state_of(MODEL)}"
        assert wait_for(lambda: _phase(service, Phase.PROMOTED), 15)
    kind, issuer, reason = _commands(settings)[-1]
    assert (kind, issuer) == ("promote", "alice (dashboard)")
    assert "approved by alice (dashboard): canary looked fine on the dashboard" in reason
    # Nothing is waiting any more; approving again is refused with the reason.
    assert dashboard(settings, "GET", "/api/approvals").json()["pending"] == []
    again = _decide(settings, "approve", "twice", TOKEN)
    assert again.status_code == 409 and "nothing to approve" in again.json()["error"]


def test_dashboard_reject_rolls_the_candidate_back(
    replicas: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replicas.settings
    with metrics_service(settings, CONFIG) as service:
        traffic = Traffic(replicas, 400).start()
        try:
            _start_waiting(replicas, service, monkeypatch)
            read_only = replace(settings, dashboard_operator_token=Secret(""))
            refused = _decide(read_only, "reject", "read-only dashboard", TOKEN)
            assert refused.status_code == 403
            answer = _decide(settings, "reject", "segment DE looks worse", TOKEN)
            assert answer.status_code == 200, answer.text
            assert answer.json()["phase"] == "rolled_back"
            stopped = wait_for(
                lambda: all(
                    c is not None and c.production_version == "v1" and c.canary_version is None
                    for c in replicas.configs()
                ),
                30,
            )
        finally:
            traffic.stop()
        assert stopped, f"not rolled back: {replicas.configs()}"
        assert wait_for(lambda: _phase(service, Phase.ROLLED_BACK), 15)
    kind, issuer, reason = _commands(settings)[-1]
    assert (kind, issuer) == ("rollback", "alice (dashboard)")
    assert "rejected by alice (dashboard): segment DE looks worse" in reason
