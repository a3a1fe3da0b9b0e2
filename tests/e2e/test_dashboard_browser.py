"""`safeloop dashboard` in headless Chromium over an hour of generated history.

The story (generated inside ClickHouse): canary v2 walks 5 -> 25 -> 50 % and is promoted, canary
v3 fails and the guard rolls it back, feature `amount` drifts and a retraining decision follows.
The test loads the page from the real CLI process against the real endpoint, checks every chart
drew points and every table filled, and saves a screenshot as a test artefact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROWS = 150_000
CHARTS = [
    "chart-traffic",
    "chart-errors",
    "chart-latency",
    "chart-canary",
    "chart-performance",
    "chart-coverage",
    "chart-shadow",
    "chart-reliability",
]

# Row n of numbers(ROWS) is `m` minutes before {end}; h picks the canary bucket.
_ROW = (
    "(SELECT number AS n, ({rows} - 1 - n) * 60.0 / {rows} AS m, n % 100 AS h FROM numbers({rows}))"
)
_CANARY = (
    "multiIf(m <= 50 AND m > 40 AND h < 5, 'v2', m <= 40 AND m > 30 AND h < 25, 'v2', "
    "m <= 30 AND m > 20 AND h < 50, 'v2', m <= 15 AND m > 8 AND h < 10, 'v3', '')"
)
_TIME = "{end} - toIntervalMillisecond(toInt64(m * 60000))"
# Labels arrive after 4 minutes, for a share of predictions that grows with their age.
_LABELLED = "m > 4 AND (n * 7919) % 100 < least(80, 10 + 2 * m)"
STORY = [
    f"""INSERT INTO predictions (prediction_id, model_name, model_version, timestamp, features,
        prediction, confidence, latency_ms, route, replica_id, routing_key, routing_hash_version,
        error)
    SELECT concat('p', toString(n)), 'fraud', if(c != '', c, if(m > 20, 'v1', 'v2')), {_TIME},
        map('amount', if(m < 20, 2 * (20 - m), 0) + randNormal(100, 20),
            'age', randNormal(40, 10), 'tenure', randExponential(0.1)),
        p, greatest(p, 1 - p),
        multiIf(c = 'v3', 45, c = 'v2' OR m <= 20, 7, 9) + randExponential(0.15),
        if(c != '', 'canary', 'production'), concat('replica-', toString(n % 2)),
        toString(n), 1, if(rand() % 1000 < if(c = 'v3', 150, 5), 'timeout', NULL)
    FROM (SELECT *, {_CANARY} AS c, rand() / 4294967295.0 AS p FROM {_ROW})""",
    f"""INSERT INTO predictions (prediction_id, model_name, model_version, timestamp, features,
        prediction, confidence, latency_ms, route, replica_id, routing_key, routing_hash_version,
        error)
    SELECT concat('p', toString(n)), 'fraud', 'v4', {_TIME}, map(), p, greatest(p, 1 - p),
        12 + randExponential(0.2), 'shadow', 'replica-0', toString(n), 1, NULL
    FROM (SELECT *, rand() / 4294967295.0 AS p FROM {_ROW}) WHERE n % 4 = 0""",
    f"""INSERT INTO feedback (prediction_id, model_name, model_version, route, replica_id,
        features, prediction, confidence, prediction_timestamp, status, ground_truth,
        outcome_timestamp, label_delay_ms, outcome_source, emitted_at)
    SELECT concat('p', toString(n)), 'fraud', if(c != '', c, if(m > 20, 'v1', 'v2')),
        if(c != '', 'canary', 'production'), 'replica-0', map(), 0.5, 0.5, {_TIME}, 'joined',
        rand() % 2, {_TIME} + toIntervalMinute(4), 240000, 'labels', {_TIME} + toIntervalMinute(4)
    FROM (SELECT *, {_CANARY} AS c FROM {_ROW}) WHERE {_LABELLED}""",
    f"""INSERT INTO outcomes (prediction_id, ground_truth, timestamp, source)
    SELECT concat('p', toString(n)), rand() % 2, {_TIME} + toIntervalMinute(4), 'labels'
    FROM {_ROW} WHERE {_LABELLED}""",
    # One performance window per minute and version on the route it served.
    """INSERT INTO performance_metrics (model_name, model_version, route, window_start,
        window_end, metric, value, sample_count)
    SELECT 'fraud', vr.1, vr.2, e - toIntervalMinute(1), e, x.1, x.2, 400
    FROM (SELECT {end} - toIntervalMinute(number) AS e, number AS m FROM numbers(60))
    ARRAY JOIN arrayFilter(v -> v.3, [
        ('v1', 'production', m > 20, 0.91), ('v2', 'canary', m <= 50 AND m > 20, 0.93),
        ('v2', 'production', m <= 20, 0.93), ('v3', 'canary', m <= 15 AND m > 8, 0.78),
        ('v4', 'shadow', true, 0.0)]) AS vr
    ARRAY JOIN if(vr.2 = 'shadow',
        [('shadow_agreement_rate', 0.955 + 0.02 * sin(m / 3))],
        [('accuracy', vr.4 + 0.01 * sin(m / 2)), ('f1', vr.4 - 0.06 + 0.01 * cos(m / 2)),
         ('roc_auc', least(0.99, vr.4 + 0.04)), ('label_coverage', least(0.8, 0.1 + m / 30))])
        AS x""",
    """INSERT INTO performance_metrics (model_name, model_version, route, window_start,
        window_end, metric, value, sample_count)
    SELECT 'fraud', 'v2', 'production', e - toIntervalMinute(1), e,
        concat('reliability_bin_', leftPad(toString(b), 2, '0'), x.1), x.2, 40
    FROM (SELECT {end} - toIntervalMinute(number) AS e FROM numbers(20))
    ARRAY JOIN range(10) AS b
    ARRAY JOIN [('_count', 40.0), ('_mean_predicted', (b + 0.5) / 10),
        ('_observed_rate', (b + 0.5) / 10 - 0.09 * sin(pi() * (b + 0.5) / 10))] AS x""",
    """INSERT INTO drift_metrics (model_name, model_version, route, window_start, window_end,
        metric, feature, value, sample_count)
    SELECT 'fraud', if(m > 20, 'v1', 'v2'), 'production', e - toIntervalMinute(1), e, 'psi',
        f.1, f.2, 1000
    FROM (SELECT {end} - toIntervalMinute(number) AS e, number AS m FROM numbers(60))
    ARRAY JOIN [('amount', if(m < 20, 0.03 + 0.016 * (20 - m), 0.03)),
        ('age', 0.02 + 0.01 * sin(m)), ('tenure', 0.11 + 0.02 * cos(m)),
        ('', 0.05 + 0.01 * sin(m / 2))] AS f""",
    """INSERT INTO control_log (entry_type, command_id, model_name, kind, sequence, issued_at,
        issuer, reason, production_version, canary_version, canary_basis_points,
        canary_enabled, shadow_version, shadow_enabled, kill_switch, fallback_version, flags,
        key_id, signature, details)
    SELECT 'command', concat('c', toString(c.1)), 'fraud', c.2, c.1,
        {end} - toIntervalMinute(c.3), c.4, c.5, c.6, nullIf(c.7, ''), c.8, true, 'v4', true,
        false, NULL, map(), 'k1', 'sig', map('step', toString(c.9))
    FROM (SELECT arrayJoin([
        (1, 'set_shadow', 55, 'operator', 'shadow v4 on all traffic', 'v1', '', 0, 0),
        (2, 'set_canary', 50, 'canary-stepper', 'start canary v2 at 5 %', 'v1', 'v2', 500, 1),
        (3, 'set_canary', 40, 'canary-stepper', 'healthy for 10 min: 25 %', 'v1', 'v2', 2500, 2),
        (4, 'set_canary', 30, 'canary-stepper', 'healthy for 10 min: 50 %', 'v1', 'v2', 5000, 3),
        (5, 'promote', 20, 'canary-stepper', 'v2 promoted to production', 'v2', '', 0, 4),
        (6, 'set_canary', 15, 'operator', 'start canary v3 at 10 %', 'v2', 'v3', 1000, 1),
        (7, 'rollback', 8, 'rollback-guard', 'canary v3 error rate 15.1 % > 5 % for 3 min',
         'v2', '', 0, 0)]) AS c)""",
    """INSERT INTO retraining_decisions (decision_id, model_name, model_version, timestamp,
        should_retrain, urgency, reason, max_psi, performance_drop, drifted_features)
    VALUES ('d1', 'fraud', 'v2', {end} - toIntervalMinute(3), true, 'elevated',
        'PSI of amount 0.33 above 0.25', 0.33, 0.012, ['amount'])""",
    # The retraining loop acting on that decision: a candidate with its lineage, in shadow.
    """INSERT INTO retraining_steps (run_id, model_name, base_version, candidate_version, stage,
        step, timestamp, actor, reason, state)
    SELECT 'd1', 'fraud', 'v2', s.2, s.1, s.3, {end} - toIntervalMinute(s.4), 'safeloop-retrain',
        s.5, s.6
    FROM (SELECT arrayJoin([
        ('received', '', 0, 3, 'retraining asked (elevated)', '{{}}'),
        ('registered', 'v2-r1a2b3c4d', 1, 2, 'candidate v2-r1a2b3c4d registered',
         '{{"lineage": {{"decision_id": "d1", "training_rows": "4800", "train_from_ms": "0",
           "evaluation_to_ms": "86400000", "half_life_ms": "604800000"}}}}'),
        ('shadowing', 'v2-r1a2b3c4d', 2, 1, 'v2-r1a2b3c4d in shadow', '{{}}')]) AS s)""",
]


def _seed(settings: Settings) -> None:
    end = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    values = {"end": f"toDateTime64('{end}', 3, 'UTC')", "rows": ROWS}
    with closing(clickhouse_client(settings, send_receive_timeout=600)) as client:
        for template in STORY:
            client.command(template.format(**values))


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


@contextmanager
def _dashboard(settings: Settings) -> Iterator[str]:
    """`safeloop dashboard` as users start it, on a free port, until the block ends."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "safeloop.services.cli.main", "dashboard", "--port", str(port)],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"safeloop dashboard did not start: {output}")
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()


@contextmanager
def _browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def dashboard_url(stack: Any) -> Iterator[str]:
    settings: Settings = stack.fresh("dashe2e")
    _seed(settings)
    with _dashboard(settings) as url:
        yield url


def _points(page: Any, chart: str) -> int:
    count: int = page.evaluate(
        """id => (document.getElementById(id).data || [])
              .reduce((n, t) => n + (t.y || []).filter(v => v !== null).length, 0)""",
        chart,
    )
    return count


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")
def test_dashboard_renders_every_chart_with_data(dashboard_url: str, artifacts_dir: Path) -> None:
    requests: list[str] = []
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda request: requests.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # On a loaded machine a fresh browser can take over 30 s to load plotly.js.
        page.goto(dashboard_url + "?model=fraud", timeout=120_000)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        page.wait_for_function(
            "ids => ids.every(id => (document.getElementById(id).data || []).length > 0)",
            arg=CHARTS,
            timeout=30_000,
        )
        points = {chart: _points(page, chart) for chart in CHARTS}
        assert all(points.values()), points
        assert points["chart-traffic"] > 100
        assert page.locator(".message.bad").count() == 0
        assert page.locator(".error:not(:empty)").count() == 0
        assert page.locator("#drift-table .band.major").count() >= 1
        assert page.locator("#queue-table tbody tr").count() == 20
        assert page.locator("#events-table .kind.rollback").count() == 1
        steps = page.locator("#retraining-steps-table tbody tr")
        assert steps.count() == 3
        assert "4800 rows" in steps.nth(1).inner_text()  # the candidate's lineage
        assert "v2" in page.locator("#prod-version").inner_text()
        marks = page.evaluate("() => document.getElementById('chart-errors').layout.shapes.length")
        assert marks == 7  # every control event marked on the charts
        page.wait_for_timeout(500)  # let Plotly finish its transitions before the picture
        screenshot = artifacts_dir / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert not errors, errors
    off_site = [u for u in requests if u.startswith("http") and not u.startswith(dashboard_url)]
    assert not off_site, f"the page fetched off-site: {off_site}"
    assert screenshot.stat().st_size > 50_000
    if os.environ.get("SAFELOOP_UPDATE_DOCS_SCREENSHOT"):
        docs = Path(__file__).resolve().parents[2] / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copy(screenshot, docs / "dashboard.png")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")
def test_the_range_fits_the_data_and_a_chosen_range_stays_in_the_url(dashboard_url: str) -> None:
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # A loaded machine takes a while to hand over plotly.min.js (3.5 MB).
        page.set_default_navigation_timeout(120_000)
        page.goto(dashboard_url + "?model=fraud")
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        # The story spans the last hour: the fitted range shows all of it, with a little room.
        fitted = int(page.evaluate("() => document.body.dataset.minutes"))
        assert 60 <= fitted <= 75, fitted
        assert "range=auto" in page.url and "model=fraud" in page.url
        assert "fits the data" in page.locator("#range-shown").inner_text()
        assert page.locator("#range").input_value() == "auto"
        span_s = page.evaluate(
            """() => { const r = document.getElementById('chart-traffic').layout.xaxis.range;
                       return (new Date(r[1]) - new Date(r[0])) / 1000; }"""
        )
        assert abs(span_s - fitted * 60) < 5, span_s
        # A chosen range goes into the URL and comes back on reload (or from a shared link).
        page.evaluate("() => { document.body.dataset.loaded = 'false'; }")
        page.select_option("#range", "360")
        page.wait_for_selector("body[data-loaded='true'][data-minutes='360']", timeout=30_000)
        assert "range=360" in page.url
        page.reload()
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        assert page.locator("#range").input_value() == "360"
        assert page.evaluate("() => document.body.dataset.minutes") == "360"
        page.goto(dashboard_url + "?model=fraud&range=45")
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        assert page.locator("#range").input_value() == "45"
        assert page.evaluate("() => document.body.dataset.minutes") == "45"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")
def test_dashboard_says_no_data_yet_then_shows_errors(stack: Any) -> None:
    empty: Settings = stack.fresh("dashempty")
    missing = replace(empty, clickhouse_database=f"{empty.clickhouse_database}_missing")
    with _browser() as browser, _dashboard(empty) as url:
        page = browser.new_page()
        page.goto(url, timeout=120_000)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        # Multi-class and regression panels stay hidden for a page without such a model.
        messages = page.locator("section:not([hidden]) .chart .message").all_inner_texts()
        assert messages == ["no data yet"] * len(CHARTS)
    with _browser() as browser, _dashboard(missing) as url:
        page = browser.new_page()
        page.goto(url, timeout=120_000)
        page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
        assert "ClickHouse unavailable" in page.locator("#status").inner_text()
        errors = page.locator("section:not([hidden]) .chart .message.bad").all_inner_texts()
        assert len(errors) == len(CHARTS)
        assert all(missing.clickhouse_database in e for e in errors), errors
