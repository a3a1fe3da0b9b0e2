"""The CLI starts at once: its parser and `keygen` load none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

from safeloop.infra.kafka.roles import Role
from safeloop.services.cli import ingest_commands, outcomes_commands
from safeloop.services.cli.kafka_commands import ROLES
from safeloop.services.cli.metrics_commands import APPROVALS, DEADLINE_ACTIONS, FAIL_ACTIONS
from safeloop.services.publishing import file_publish, ingest_app
from safeloop.services.rollout.plan import Approval, DeadlineAction, FailAction

# Each costs 0.1-1 s to import; an operator's `canary`, `rollback` or `status` needs none.
HEAVY = (
    "chdb",
    "clickhouse_connect",
    "faust",
    "numpy",
    "starlette",
    "uvicorn",
    "mode",
    # Seconds to import; only the processes that use the MLflow registry load it.
    "mlflow",
    "sqlalchemy",
    "alembic",
)
# Only the commands that talk to Kafka need these.
KAFKA = ("confluent_kafka", "fastavro")

PROBE = """
import json, sys
import safeloop.services.cli.main as cli_main
import safeloop.services.cli.control_commands
{action}
print(json.dumps(sorted(name.split(".")[0] for name in sys.modules)))
"""


def loaded_after(action: str) -> set[str]:
    """Top-level module names loaded in a fresh interpreter after `action`."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(action=action)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    last_line = done.stdout.strip().splitlines()[-1]
    return set(json.loads(last_line))


def test_building_every_subcommands_parser_loads_no_heavy_library() -> None:
    loaded = loaded_after("cli_main.build_parser()")
    assert "safeloop" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert loaded.isdisjoint(KAFKA), sorted(loaded & set(KAFKA))


def test_keygen_runs_without_kafka_or_heavy_libraries() -> None:
    loaded = loaded_after("assert cli_main.main(['keygen', '--key-id', 'probe']) == 0")
    assert loaded.isdisjoint(HEAVY + KAFKA), sorted(loaded & set(HEAVY + KAFKA))


def test_the_heavy_check_would_notice_a_heavy_import() -> None:
    loaded = loaded_after("import safeloop.services.models.store")
    assert "numpy" in loaded


def test_rollout_choices_spelled_out_in_the_parser_match_the_plan() -> None:
    assert tuple(action.value for action in FailAction) == FAIL_ACTIONS
    assert tuple(action.value for action in DeadlineAction) == DEADLINE_ACTIONS
    assert tuple(approval.value for approval in Approval) == APPROVALS
    assert tuple(role.value for role in Role) == ROLES
    assert outcomes_commands.DEFAULT_FILE_BATCH == file_publish.DEFAULT_FILE_BATCH
    assert ingest_commands.DEFAULT_MAX_BODY_BYTES == ingest_app.DEFAULT_MAX_BODY_BYTES
    assert ingest_commands.DEFAULT_SOURCE == ingest_app.DEFAULT_SOURCE


def test_guard_metric_choices_spelled_out_in_the_parser_match_the_policy() -> None:
    from safeloop.services.cli.metrics_commands import MULTICLASS_METRICS, REGRESSION_METRICS
    from safeloop.services.guard.policy import TASK_METRICS
    from safeloop.services.metrics.performance import Task

    assert set(MULTICLASS_METRICS) == {m.value for m in TASK_METRICS[Task.MULTICLASS]}
    assert set(REGRESSION_METRICS) == {m.value for m in TASK_METRICS[Task.REGRESSION]}
