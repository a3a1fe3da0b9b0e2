"""`--wait` tells the truth: in force, superseded by a newer command (who, why), or refused."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator

import pytest
from _serving_harness import KEY_HEX, ServingStack, serving_stack, settings_with_key, wait_for
from conftest import Stack

from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.cli.main import main
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.publisher import ControlPublisher, read_control_topic
from safeloop.services.serving.replica import Replica

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str, str]]
WAREHOUSE_VARS = (
    "CLICKHOUSE_URL",
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_DATABASE",
    "SAFELOOP_WAREHOUSE_HOST",
    "SAFELOOP_WAREHOUSE_PORT",
)
GUARD = "safeloop-metrics@test"
GUARD_REASON = "rollback guard: canary breached error_rate 0.12 > 0.05"


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[ServingStack]:
    warehouse = stack.fresh("wait")
    with serving_stack(tmp_path_factory.mktemp("wait"), warehouse) as serving:
        # The CLI writes its control_log rows there (a missing row would only be a warning).
        serving.env.update({name: warehouse.to_env()[name] for name in WAREHOUSE_VARS})
        serving.settings = Settings.from_env(serving.env)
        yield serving


@pytest.fixture(scope="module")
def replicas(serving: ServingStack) -> Iterator[list[Replica]]:
    started = [serving.replica("replica-a"), serving.replica("replica-b")]
    try:
        for replica in started:
            assert replica.wait_ready(30), f"{replica.replica_id} never caught up"
        assert serving.wait_reported_ready([replica.replica_id for replica in started])
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def cli(
    serving: ServingStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    for name, value in serving.env.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def guard_rollback(serving: ServingStack) -> ControlCommand:
    """What the metrics service's guard publishes: a rollback under its own issuer."""
    settings = serving.settings
    view = read_control_topic(
        make_broadcast_reader(settings, settings.topics.control, "test"), serving.keys
    )
    publisher = ControlPublisher(
        make_producer(settings, **{"linger.ms": 0}),
        settings.topics.control,
        serving.keys,
        issuer=GUARD,
    )

    def roll_back(config: ModelConfig) -> ModelConfig:
        return dataclasses.replace(config, canary_version=None, canary_basis_points=0)

    command = publisher.next_command(
        view, "churn", CommandKind.ROLLBACK, roll_back, reason=GUARD_REASON
    )
    publisher.send(command)
    return command


def applied(replicas: list[Replica], sequence: int) -> bool:
    return all(r.state.config_versions().get("churn", 0) >= sequence for r in replicas)


def test_wait_reports_in_force_with_the_sequence_per_replica(
    replicas: list[Replica], cli: Cli
) -> None:
    code, out, err = cli("canary", "churn", "--percent", "10", "--version", "v2", "--wait")
    assert code == ExitCode.OK, err
    sequence = replicas[0].state.config_versions()["churn"]
    for replica in replicas:
        assert f"{replica.replica_id}: applied sequence {sequence}, in force" in err
    assert f"sequence {sequence} in force on all 2 live replicas" in out


def test_wait_reports_a_canary_superseded_by_the_guards_rollback(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    # A live replica that stopped following the control topic keeps the wait open while the
    # guard's rollback lands on the others; once it leaves, the wait must not say "applied".
    held = serving.replica("replica-held")
    try:
        assert held.wait_ready(30)
        assert serving.wait_reported_ready(["replica-held"])
        held.listener.stop()
        before = replicas[0].state.config_versions().get("churn", 0)
        answer: dict[str, tuple[int, str, str]] = {}
        waiting = threading.Thread(
            target=lambda: answer.update(
                canary=cli(
                    "canary", "churn", "--percent", "10", "--version", "v3", "--wait", "--json"
                )
            )
        )
        waiting.start()
        assert wait_for(lambda: applied(replicas, before + 1))
        rollback = guard_rollback(serving)
        assert wait_for(lambda: applied(replicas, rollback.sequence))
    finally:
        held.stop()  # says STOPPING: --wait stops waiting for it
    waiting.join(60)
    assert not waiting.is_alive()
    code, out, err = answer["canary"]
    assert code == ExitCode.SUPERSEDED, (out, err)
    result = json.loads(out)
    canary_sequence = result["command"]["sequence"]
    assert canary_sequence == before + 1 == rollback.sequence - 1
    wait = result["wait"]
    assert wait["outcome"] == "superseded" and wait["applied"] is False
    assert [r["replica_id"] for r in wait["replicas"]] == ["replica-a", "replica-b"]
    for replica in wait["replicas"]:
        assert replica["outcome"] == "superseded"
        assert replica["applied_sequence"] == rollback.sequence
        assert replica["superseded_by"] == {
            "sequence": rollback.sequence,
            "command_id": rollback.command_id,
            "kind": "rollback",
            "issuer": GUARD,
            "reason": GUARD_REASON,
        }
    assert wait["newest_command"]["command_id"] == rollback.command_id


def test_wait_reports_a_replicas_refusal_with_its_reason(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    # A replica given another operator key refuses our commands and says why on replica-status.
    stranger = Replica(settings_with_key(serving.settings, "7b" * 32, "other-key"), "replica-z")
    stranger.start()
    try:
        assert stranger.wait_ready(30)
        assert serving.wait_reported_ready(["replica-z"])
        code, out, err = cli("flag", "churn", "tier", "gold", "--wait", "--timeout", "20")
    finally:
        stranger.stop()
    assert code == ExitCode.REFUSED, (out, err)
    assert "replica-z: refused: unknown key id 'it-key'" in err
    assert "replica-a: applied sequence" in err and "in force" in err
    assert "is not in force everywhere (refused)" in out


def test_status_reads_without_a_key_and_marks_commands_unverified(
    replicas: list[Replica], cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("flag", "churn", "tier", "silver", "--wait")[0] == ExitCode.OK
    sequence = replicas[0].state.config_versions()["churn"]
    monkeypatch.delenv("SAFELOOP_CONTROL_KEY")
    monkeypatch.delenv("SAFELOOP_CONTROL_KEY_ID")
    code, out, err = cli("status", "churn", "--json")
    assert code == ExitCode.OK, err
    model = json.loads(out)["models"]["churn"]
    assert model["verified"] is False
    assert model["newest_command"]["sequence"] == sequence
    assert model["laggards"] == []
    code, out, _ = cli("status", "churn")
    assert code == ExitCode.OK
    assert "UNVERIFIED: no control key configured" in out
    # With the key, the same command is verified.
    monkeypatch.setenv("SAFELOOP_CONTROL_KEY", KEY_HEX)
    monkeypatch.setenv("SAFELOOP_CONTROL_KEY_ID", "it-key")
    code, out, _ = cli("status", "churn", "--json")
    assert json.loads(out)["models"]["churn"]["verified"] is True
