"""`safeloop demo`, shortened, as a user runs it: a real CLI process that starts its own Kafka
broker (on free ports, beside the session's) and every service, tells the story and stops.

It writes to the session's ClickHouse endpoint (through CLICKHOUSE_URL, into its own database),
so the outcomes are checked there after the demo has stopped everything it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_S = 540


@pytest.fixture
def demo_settings(warehouse: Settings) -> Settings:
    return replace(warehouse, clickhouse_database=f"demo_{uuid.uuid4().hex[:8]}")


def _run_demo(settings: Settings, state_dir: Path, out_dir: Path) -> tuple[int, str]:
    env = {
        **os.environ,
        "CLICKHOUSE_URL": settings.clickhouse_endpoint,
        "CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "SAFELOOP_CACHE_DIR": str(settings.cache_dir),
    }
    stdout, stderr = out_dir / "demo.out", out_dir / "demo.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        done = subprocess.run(
            [
                sys.executable, "-m", "safeloop.services.cli.main", "demo", "--duration", "40",
                "--rate", "20", "--no-keep-open", "--state-dir", str(state_dir),
            ],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err, timeout=DEMO_TIMEOUT_S,
            check=False,
        )  # fmt: skip
    report = stdout.read_text() + "\n--- stderr (tail) ---\n"
    report += "\n".join(stderr.read_text().splitlines()[-40:])
    return done.returncode, report


@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_tells_the_whole_story(
    demo_settings: Settings, tmp_path: Path, artifacts_dir: Path
) -> None:
    code, report = _run_demo(demo_settings, tmp_path / "state", tmp_path)
    (artifacts_dir / "demo-summary.txt").write_text(report)
    assert code == 0, report
    assert "every expected outcome happened" in report

    client = clickhouse_client(demo_settings)
    log = client.query(
        "SELECT kind, reason, details FROM control_log FINAL "
        "WHERE model_name = 'churn' AND entry_type = 'command' ORDER BY sequence"
    ).result_rows
    kinds = [kind for kind, _, _ in log]
    assert "promote" in kinds, log
    rollbacks = [(reason, details) for kind, reason, details in log if kind == "rollback"]
    assert rollbacks, log
    reason, details = rollbacks[0]
    assert "rollback guard" in reason
    assert details["canary_version"] == "v3"

    feedback = client.query(
        "SELECT count() FROM feedback FINAL WHERE model_name = 'churn' AND status = 'joined'"
    ).result_rows[0][0]
    assert feedback > 100

    decisions = client.query(
        "SELECT model_version, urgency, drifted_features FROM retraining_decisions FINAL "
        "WHERE model_name = 'churn' AND should_retrain"
    ).result_rows
    assert any("income" in drifted for _, _, drifted in decisions), decisions
    # The retraining loop closed the circle by itself: a candidate trained on the labelled
    # window, shadowed, then rolled out to promotion (or rolled back if it was worse).
    assert "retrain loop" in report
    runs = client.query(
        "SELECT run_id, arrayMap(s -> s.2, arraySort(groupArray((step, stage)))) "
        "FROM retraining_steps FINAL WHERE model_name = 'churn' GROUP BY run_id"
    ).result_rows
    closed = [stages for _, stages in runs if stages[-1] in ("promoted", "rolled_back")]
    assert closed, runs
    assert closed[0][:5] == ["received", "registered", "shadowing", "approved", "canary"]
    # The demo stopped every process it started: nothing still writes into its state dir.
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True, check=False
    ).stdout.split()
    assert not leftovers, f"processes left running: {leftovers}"
