"""The pending-approval view in headless Chromium: a rollout waiting for a person is listed,
a wrong operator token is refused in the dialog, the right one rolls the candidate back."""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _metrics_harness import MODEL, metrics_settings
from test_dashboard_approvals import rollout_row
from test_dashboard_browser import CHROMIUM, _browser, _dashboard

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.tables import CONTROL_LOG
from safeloop.services.rollout.machine import Phase

TOKEN = "e2e-operator-token"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")
def test_an_operator_rejects_a_waiting_rollout_from_the_page(
    stack: Any, tmp_path: Path, artifacts_dir: Path
) -> None:
    settings: Settings = metrics_settings(stack.fresh("dashdecide"), tmp_path / "models")
    settings = replace(settings, dashboard_operator_token=Secret(TOKEN))
    with closing(clickhouse_client(settings)) as client:
        client.insert(
            "control_log",
            [rollout_row(MODEL, 1, 2, Phase.AWAITING_APPROVAL)],
            column_names=CONTROL_LOG.columns,
        )
    with _browser() as browser, _dashboard(settings) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url, timeout=120_000)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        row = page.locator("#approvals-table tbody tr")
        assert row.count() == 1
        assert row.locator("td").nth(0).inner_text() == MODEL
        assert row.locator("td").nth(4).inner_text() == "100%"
        reject = row.locator("button.reject")
        assert reject.is_enabled()
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts_dir / "dashboard-approvals.png"), full_page=False)
        # A wrong token: the dialog says so and stays open; nothing is published.
        reject.click()
        page.fill("#decide-operator", "carol")
        page.fill("#decide-token", "not-the-token")
        page.fill("#decide-reason", "latency in DE")
        page.click("#decide-confirm")
        page.wait_for_function(
            "() => document.getElementById('decide-error').textContent.length > 0"
        )
        assert "operator token" in page.locator("#decide-error").inner_text()
        assert page.locator("#decide").get_attribute("open") is not None
        # The right token: the command goes out and the view empties on the next refresh.
        page.fill("#decide-token", TOKEN)
        page.click("#decide-confirm")
        page.wait_for_selector("#decide:not([open])", state="attached", timeout=60_000)
        status = page.locator("#decision-status")
        assert "rejected by carol" in status.inner_text()
        assert "rolled_back" in status.inner_text()
        page.wait_for_selector("#approvals-table td.empty", timeout=30_000)
        assert not errors, errors
    with closing(clickhouse_client(settings)) as client:
        kind, issuer, reason = client.query(
            "SELECT kind, issuer, reason FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' ORDER BY sequence DESC LIMIT 1",
            parameters={"m": MODEL},
        ).result_rows[0]
    assert (kind, issuer) == ("rollback", "carol (dashboard)")
    assert "rejected by carol (dashboard): latency in DE" in reason


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")
def test_the_fairness_panel_shows_each_group_and_the_gap(stack: Any, artifacts_dir: Path) -> None:
    settings: Settings = stack.fresh("dashfair")
    with closing(clickhouse_client(settings)) as client:
        # 200 requests in DE (2 % failed), 100 in FR (10 % failed), 5 in SE (all failed).
        client.command(
            """INSERT INTO predictions (prediction_id, model_name, model_version, route,
                timestamp, prediction, error, segments)
            SELECT concat('p', toString(number)), 'fraud', 'v1', 'production',
                now64(3) - toIntervalSecond(number), 0.7,
                if(g.2 > 0 AND number % g.2 = 0, 'timeout', NULL), map('country', g.1)
            FROM numbers(305)
            ARRAY JOIN [multiIf(number < 200, ('DE', 50), number < 300, ('FR', 10), ('SE', 1))]
                AS g"""
        )
    with _browser() as browser, _dashboard(settings) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "?model=fraud", timeout=120_000)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        page.wait_for_selector("#fairness-table tr.gap", timeout=30_000)
        assert page.locator("#fairness-key").input_value() == "country"
        assert "segment=country" in page.url
        rows = page.locator("#fairness-table tbody tr")
        texts = [rows.nth(i).inner_text() for i in range(rows.count())]
        assert [t.split("\t")[1] for t in texts] == ["DE", "FR", "SE", "gap (best vs worst)"]
        cells = [t.split("\t") for t in texts]
        assert cells[0][2] == "200" and cells[2][2] == "5 (n < min)"  # SE: under the minimum
        # Error rate gap over DE (2 %) and FR (10 %) only: 8 points.
        assert "8.0% (DE vs FR)" in texts[3]
        page.locator("#fairness").screenshot(path=str(artifacts_dir / "dashboard-fairness.png"))
