"""The dashboard beyond loopback: refused without a password, and then every page asks for it."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeloop.infra.settings import Secret
from safeloop.services.cli.exit_codes import ExitCode, exit_code_for
from safeloop.services.dashboard.access import BasicAuth, check_dashboard_bind
from safeloop.services.dashboard.exceptions import DashboardBindError


def test_binding_beyond_loopback_without_a_password_is_refused() -> None:
    with pytest.raises(DashboardBindError, match="SAFELOOP_DASHBOARD_PASSWORD") as refused:
        check_dashboard_bind("0.0.0.0", Secret(""))
    assert exit_code_for(refused.value) is ExitCode.USAGE
    check_dashboard_bind("127.0.0.1", Secret(""))
    check_dashboard_bind("0.0.0.0", Secret("pw"))


def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    app = Starlette(
        routes=[
            Route("/", lambda _: PlainTextResponse("page")),
            Route("/healthz", lambda _: PlainTextResponse("ok")),
        ]
    )

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=BasicAuth(app, "viewer", Secret("right")))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            return await client.get(path, headers=headers or {})

    return asyncio.run(run())


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_pages_need_the_dashboard_credentials_and_health_does_not() -> None:
    anonymous = get("/")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert get("/", headers=_basic("viewer", "wrong")).status_code == 401
    assert get("/", headers=_basic("other", "right")).status_code == 401
    assert get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert get("/", headers=_basic("viewer", "right")).text == "page"
    assert get("/healthz").text == "ok"
