"""An issuer SIGKILLed between publishing a command and auditing it: the command is in force on
the control topic with no `control_log` row. The next judge writes that row, once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from _metrics_harness import (
    MODEL,
    TEST_POLICY,
    metrics_service,
    metrics_settings,
    publish,
    wait_for,
)

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind
from safeloop.services.monitor.service import MetricsConfig

pytestmark = pytest.mark.integration

CONFIG = MetricsConfig(snapshot_interval_ms=300, guard_policy=TEST_POLICY)


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("auditcatchup"), tmp_path / "models")


def _command_rows(settings: Settings) -> list[tuple[int, str]]:
    # Without FINAL, as a dashboard reader would count them.
    return [
        (int(sequence), str(kind))
        for sequence, kind in clickhouse_client(settings)
        .query(
            "SELECT sequence, kind FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' ORDER BY sequence",
            parameters={"m": MODEL},
        )
        .result_rows
    ]


def test_a_new_judge_audits_the_command_its_predecessor_published_but_did_not_record(
    settings: Settings,
) -> None:
    # `publish` sends as an issuer would and writes no row: the state a SIGKILL leaves.
    sequence = publish(
        settings,
        CommandKind.SET_CANARY,
        lambda config: replace(config, canary_version="v2", canary_basis_points=1_000),
    )
    assert _command_rows(settings) == []
    with metrics_service(settings, CONFIG) as service:
        assert wait_for(lambda: _command_rows(settings) == [(sequence, "set_canary")], 60), (
            _command_rows(settings)
        )
        # Counted once the row's insert returned, a moment after readers can see the row.
        assert wait_for(lambda: service.counts.audit_caught_up == 1, 10)
    # Another judge later finds the row there and writes nothing.
    with metrics_service(settings, CONFIG) as service:
        assert wait_for(lambda: service.counts.snapshots >= 2, 60)
        assert service.counts.audit_caught_up == 0
    assert _command_rows(settings) == [(sequence, "set_canary")]
