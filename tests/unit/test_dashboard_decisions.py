"""Approve / reject from the dashboard over a fake publisher: who may act, what is asked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from safeloop.infra.settings import Secret, Settings
from safeloop.services.dashboard.access import operator_token_matches
from safeloop.services.dashboard.app import create_app
from safeloop.services.dashboard.decisions import (
    TOKEN_HEADER,
    Decision,
    Writes,
    issuer_of,
    writes_from,
)
from safeloop.services.dashboard.reader import Reader
from safeloop.services.monitor.rollout_change import RolloutChanged
from safeloop.services.rollout.exceptions import NoRolloutError, TransitionError
from safeloop.services.rollout.machine import Phase, RolloutState
from safeloop.services.rollout.plan import RolloutPlan

TOKEN = "s3cret-operator-token"
STATE = RolloutState("fraud", "v2", "v1", Phase.PROMOTED, 1, 0, 0, 5, reason="approved")


@dataclass
class FakeDecider:
    fail: Exception | None = None
    asked: list[tuple[Decision, str, str, str]] = field(default_factory=list)

    def decide(self, decision: Decision, model: str, operator: str, why: str) -> RolloutChanged:
        self.asked.append((decision, model, operator, why))
        if self.fail is not None:
            raise self.fail
        return RolloutChanged(RolloutPlan(steps_percent=(50.0, 100.0)), STATE, 7)


def post(writes: Writes | None, path: str, body: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {} if token is None else {TOKEN_HEADER: token}

    async def run() -> httpx.Response:
        app = create_app(Reader(Settings()), writes)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            return await client.post(path, json=body, headers=headers)

    return asyncio.run(run())


BODY = {"model": "fraud", "operator": "alice", "reason": "dashboards look fine"}


def test_an_operator_with_the_token_approves_and_is_named() -> None:
    decider = FakeDecider()
    response = post(Writes(Secret(TOKEN), decider), "/api/rollout/approve", BODY)
    assert response.status_code == 200, response.text
    assert response.json()["phase"] == "promoted"
    assert response.json()["sequence"] == 7
    assert decider.asked == [
        (Decision.APPROVE, "fraud", issuer_of("alice"), "dashboards look fine")
    ]
    assert issuer_of("alice") == "alice (dashboard)"


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_without_the_right_token_nothing_is_published(token: str | None) -> None:
    decider = FakeDecider()
    response = post(Writes(Secret(TOKEN), decider), "/api/rollout/reject", BODY, token=token)
    assert response.status_code == 401
    assert decider.asked == []
    assert TOKEN not in response.text


def test_a_read_only_dashboard_refuses_writes_and_says_how_to_allow_them() -> None:
    response = post(None, "/api/rollout/approve", BODY)
    assert response.status_code == 403
    assert "SAFELOOP_DASHBOARD_OPERATOR_TOKEN" in response.json()["error"]
    assert writes_from(Settings()) is None
    assert writes_from(Settings(dashboard_operator_token=Secret(TOKEN))) is not None


def test_approvals_are_posts_only() -> None:
    async def run() -> httpx.Response:
        app = create_app(Reader(Settings()), Writes(Secret(TOKEN), FakeDecider()))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dash"
        ) as client:
            return await client.get("/api/rollout/approve")

    assert asyncio.run(run()).status_code == 405


@pytest.mark.parametrize(
    "body",
    [
        {**BODY, "reason": "  "},
        {**BODY, "reason": "x" * 501},
        {**BODY, "operator": "alice smith"},
        {**BODY, "operator": ""},
        {k: v for k, v in BODY.items() if k != "model"},
        ["not", "an", "object"],
    ],
)
def test_a_decision_needs_a_model_an_operator_and_a_reason(body: Any) -> None:
    decider = FakeDecider()
    response = post(Writes(Secret(TOKEN), decider), "/api/rollout/reject", body)
    assert response.status_code == 400, response.text
    assert decider.asked == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NoRolloutError("fraud: no rollout recorded"), 404),
        (TransitionError("fraud: nothing to approve, the rollout is running"), 409),
    ],
)
def test_impossible_decisions_say_why(error: Exception, status: int) -> None:
    decider = FakeDecider(fail=error)
    response = post(Writes(Secret(TOKEN), decider), "/api/rollout/approve", BODY)
    assert response.status_code == status
    assert response.json()["error"] == str(error)


def test_token_comparison() -> None:
    assert operator_token_matches(TOKEN, Secret(TOKEN))
    assert operator_token_matches(f" {TOKEN} ", Secret(TOKEN))
    assert not operator_token_matches(TOKEN, Secret(""))
    assert not operator_token_matches("", Secret(""))
    assert not operator_token_matches(None, Secret(TOKEN))


def test_the_token_never_shows_in_settings_repr() -> None:
    settings = Settings.from_env({"SAFELOOP_DASHBOARD_OPERATOR_TOKEN": TOKEN})
    assert settings.dashboard_operator_token.value == TOKEN
    assert TOKEN not in repr(settings)
    assert Settings.from_env(settings.to_env()) == settings
