"""The CLI starts at once: its parser and `keygen` load none of the heavy libraries."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from safeloop.infra.kafka.roles import Role
from safeloop.services.cli import ingest_commands, outcomes_commands
from safeloop.services.cli import main as cli_main
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

# `safeloop COMMAND` parses with COMMAND's module alone: none of the other command modules (and
# what they import: the demo's config, file readers, subprocess, sockets) load before it runs.
OPERATOR_ARGV = {
    "status": ["status", "churn", "--json"],
    "canary": ["canary", "churn", "--percent", "10", "--version", "v2", "--wait"],
    "rollback": ["rollback", "churn", "--reason", "probe"],
    "flag": ["flag", "churn", "kill_switch", "true"],
    "keygen": ["keygen"],
}
OTHER_COMMAND_MODULES = ("demo_commands", "metrics_commands", "serve_commands", "kafka_commands")

PROBE = """
import json, sys
import safeloop.services.cli.main as cli_main
{action}
print(json.dumps(sorted(sys.modules)))
"""


def loaded_after(action: str) -> set[str]:
    """Top-level module names loaded in a fresh interpreter after `action`."""
    return {name.split(".")[0] for name in modules_after(action)}


def modules_after(action: str) -> set[str]:
    """Module names loaded in a fresh interpreter after `action`."""
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


@pytest.mark.parametrize("command", sorted(OPERATOR_ARGV))
def test_an_operator_command_parses_with_its_own_module_alone(command: str) -> None:
    argv = OPERATOR_ARGV[command]
    modules = modules_after(f"cli_main.build_parser({command!r}).parse_args({argv!r})")
    loaded = {name.split(".")[0] for name in modules}
    assert loaded.isdisjoint(HEAVY + KAFKA), sorted(loaded & set(HEAVY + KAFKA))
    others = {f"safeloop.services.cli.{name}" for name in OTHER_COMMAND_MODULES}
    assert modules.isdisjoint(others), sorted(modules & others)
    assert "safeloop.services.cli.control_commands" in modules


def test_each_command_is_registered_by_the_module_listed_for_it() -> None:
    for module_name, commands in cli_main.COMMAND_MODULES.items():
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(module_name).register(subparsers)
        assert tuple(subparsers.choices) == commands, module_name


def test_the_sub_command_is_the_first_word_that_is_not_an_option() -> None:
    assert cli_main.requested_command(["--debug", "-v", "rollback", "churn"]) == "rollback"
    assert cli_main.requested_command(["--help"]) is None
    assert cli_main.build_parser("rollback").parse_args(["rollback", "m", "--reason", "r"]).model
    every = cli_main.build_parser("no-such-command")
    assert "rollback" in every.format_help() and "metrics" in every.format_help()


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
