"""The control plane against a real broker: broadcast, late joiners, refusals, status, --wait."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator

import pytest
from _serving_harness import FEATURES, ServingStack, serving_stack, wait_for
from confluent_kafka import Producer
from conftest import Stack

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.kafka.clients import connection_config, make_producer
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import CONTROL_CODEC
from safeloop.schemas.events import CommandKind, ControlCommand, Route
from safeloop.services.cli.main import main
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.fleet import FleetWatcher
from safeloop.services.control.keys import SigningKey
from safeloop.services.control.publisher import ControlPublisher, read_control_topic
from safeloop.services.control.signing import sign
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


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[ServingStack]:
    # A migrated database of its own, so the CLI's control_log rows land somewhere checkable.
    warehouse = stack.fresh("control")
    with serving_stack(tmp_path_factory.mktemp("control"), warehouse) as serving:
        clickhouse = {name: warehouse.to_env()[name] for name in WAREHOUSE_VARS}
        serving.env.update(clickhouse)
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


def routes(replica: Replica, keys: int = 200) -> set[tuple[Route, str]]:
    found = set()
    for index in range(keys):
        answer = replica.predictor.predict("churn", f"user-{index}", FEATURES)
        found.add((answer.route, answer.model_version))
    return found


def publish(
    serving: ServingStack, kind: CommandKind, change: Callable[..., object]
) -> ControlCommand:
    settings = serving.settings
    view = read_control_topic(
        make_broadcast_reader(settings, settings.topics.control, "test"), serving.keys
    )
    publisher = ControlPublisher(
        make_producer(settings, **{"linger.ms": 0}), settings.topics.control, serving.keys
    )
    command = publisher.next_command(view, "churn", kind, change, reason="test")  # type: ignore[arg-type]
    publisher.send(command)
    return command


def test_both_replicas_apply_canary_then_rollback(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    code, out, err = cli(
        "canary", "churn", "--percent", "100", "--version", "v2", "--wait", "--timeout", "20"
    )
    assert code == 0 and "warning" not in err, err
    assert "in force on all 2 live replicas: replica-a, replica-b" in out
    # One progress line per replica on stderr, as each applies it.
    assert "replica-a: applied sequence" in err and "replica-b: applied sequence" in err
    for replica in replicas:
        assert routes(replica) == {(Route.CANARY, "v2")}

    code, out, err = cli("rollback", "churn", "--reason", "error spike", "--wait", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert err == ""  # no progress lines with --json
    sequence = result["command"]["sequence"]
    assert result["wait"]["outcome"] == "in_force" and result["wait"]["applied"] is True
    assert result["wait"]["laggards"] == []
    assert result["wait"]["replicas"] == [
        {
            "replica_id": replica_id,
            "outcome": "in_force",
            "applied_sequence": sequence,
            "superseded_by": None,
            "refusal": None,
        }
        for replica_id in ("replica-a", "replica-b")
    ]
    assert result["command"]["kind"] == "rollback"
    assert result["command"]["config"]["canary_basis_points"] == 0
    for replica in replicas:
        assert routes(replica) == {(Route.PRODUCTION, "v1")}
        applied = replica.state.applied("churn")
        assert applied is not None and applied.sequence == result["command"]["sequence"]
    # The operator's rollback is in the audit trail with its reason, like the guard's.
    audited = (
        clickhouse_client(serving.settings)
        .query(
            "SELECT kind, reason, issuer, sequence FROM control_log FINAL "
            "WHERE command_id = {id:String} AND entry_type = 'command'",
            parameters={"id": result["command"]["command_id"]},
        )
        .result_rows
    )
    assert audited == [
        ("rollback", "error spike", result["command"]["issuer"], result["command"]["sequence"])
    ]


def test_replica_started_after_rollback_comes_up_rolled_back(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    assert cli("canary", "churn", "--percent", "50", "--version", "v3", "--wait")[0] == 0
    assert cli("rollback", "churn", "--reason", "bad v3", "--wait")[0] == 0
    late = serving.replica("replica-late")
    try:
        assert late.wait_ready(30)
        assert late.state.config_versions() == replicas[0].state.config_versions()
        assert routes(late) == {(Route.PRODUCTION, "v1")}
    finally:
        late.stop()


def test_forged_replayed_and_unsigned_commands_are_refused(
    serving: ServingStack, replicas: list[Replica]
) -> None:
    older = publish(
        serving,
        CommandKind.SET_FLAG,
        lambda c: dataclasses.replace(c, flags={**c.flags, "tier": '"gold"'}),
    )
    newer = publish(
        serving,
        CommandKind.SET_FLAG,
        lambda c: dataclasses.replace(c, flags={**c.flags, "tier": '"silver"'}),
    )
    assert wait_for(
        lambda: all(r.state.config_versions().get("churn") == newer.sequence for r in replicas)
    )
    refused_before = [replica.state.refused_count for replica in replicas]
    attacker = SigningKey(serving.keys.signing_key_id, bytes(32))
    evil = dataclasses.replace(
        newer,
        command_id="evil-1",
        sequence=newer.sequence + 1,
        config=dataclasses.replace(newer.config, production_version="v3"),
    )
    forged = sign(evil, attacker)
    unsigned = dataclasses.replace(evil, command_id="evil-2", key_id="", signature="")
    producer = Producer(connection_config(serving.settings))
    for command in (forged, older, unsigned):
        producer.produce(
            serving.settings.topics.control, key=b"churn", value=CONTROL_CODEC.encode(command)
        )
    producer.produce(serving.settings.topics.control, key=b"churn", value=b"not avro")
    producer.flush(10)

    for replica, before in zip(replicas, refused_before, strict=True):
        assert wait_for(lambda r=replica, b=before: r.state.refused_count == b + 4)
        assert replica.state.config_versions()["churn"] == newer.sequence
        assert replica.predictor.flags.flags("churn").get_text("tier") == "silver"
        assert routes(replica, 50) == {(Route.PRODUCTION, "v1")}
    # The refusals are reported on replica-status too.
    reader = make_broadcast_reader(serving.settings, serving.settings.topics.replica_status, "t")
    with FleetWatcher(reader, serving.settings.replica_liveness_ms) as watcher:
        watcher.read_to_end(10)

        def reported() -> bool:
            statuses = watcher.update(0.2).replicas
            return all(
                statuses[r.replica_id].refused_count == r.state.refused_count for r in replicas
            )

        assert wait_for(reported, every_s=0.3)


def test_status_names_a_lagging_replica_and_wait_times_out(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    lagging = serving.replica("replica-lagging")
    try:
        assert lagging.wait_ready(30)
        assert serving.wait_reported_ready(["replica-lagging"])
        # It keeps heartbeating but stops following the control topic.
        lagging.listener.stop()
        code, _, err = cli("flag", "churn", "beta", "true", "--wait", "--timeout", "3")
        assert code == 3
        timeout_line = next(line for line in err.splitlines() if "have not applied" in line)
        assert "replica-lagging" in timeout_line and "replica-a" not in timeout_line
        assert "replica-a: applied sequence" in err

        code, out, _ = cli("status", "churn", "--json")
        assert code == 0
        report = json.loads(out)
        assert report["models"]["churn"]["laggards"] == ["replica-lagging"]
        by_id = {replica["replica_id"]: replica for replica in report["replicas"]}
        newest = report["models"]["churn"]["newest_command"]["sequence"]
        assert by_id["replica-a"]["config_versions"]["churn"] == newest
        assert by_id["replica-lagging"]["config_versions"]["churn"] == newest - 1
        assert by_id["replica-lagging"]["live"] is True

        code, out, _ = cli("status")
        assert code == 0
        assert "not yet applied by: replica-lagging" in out
        assert "replica-b" in out
    finally:
        lagging.stop()
    # Stopped replicas say so, and --wait stops waiting for them.
    code, out, err = cli("flag", "churn", "beta", "false", "--wait", "--timeout", "10")
    assert code == 0, err
    assert "replica-lagging" not in out


def test_cli_usage_and_failure_exit_codes(replicas: list[Replica], cli: Cli) -> None:
    code, _, err = cli("canary", "churn", "--percent", "150")
    assert code == 2 and "between 0 and 100" in err
    code, _, err = cli("promote", "churn")
    assert code == 1 and "no canary to promote" in err
    code, out, _ = cli("flag", "churn", "canary", "maybe", "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2


def test_promote_and_shadow(serving: ServingStack, replicas: list[Replica], cli: Cli) -> None:
    assert cli("canary", "churn", "--percent", "10", "--version", "v2", "--wait")[0] == 0
    assert cli("promote", "churn", "--reason", "canary healthy", "--wait")[0] == 0
    assert cli("shadow", "churn", "on", "--version", "v3", "--wait")[0] == 0
    for replica in replicas:
        assert routes(replica, 50) == {(Route.PRODUCTION, "v2")}
        config = replica.predictor.config_of("churn")
        assert (config.shadow_version, config.shadow_enabled) == ("v3", True)
    assert cli("shadow", "churn", "off", "--wait")[0] == 0
    assert cli("rollback", "churn", "--to", "v1", "--reason", "reset", "--wait")[0] == 0
    assert routes(replicas[0], 50) == {(Route.PRODUCTION, "v1")}


def test_cli_command_that_loses_its_sequence_is_rebased_or_reported(
    serving: ServingStack,
    replicas: list[Replica],
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli("canary", "churn", "--percent", "10", "--version", "v2", "--wait")[0] == 0
    original_send = ControlPublisher.send
    rivals: list[ControlCommand] = []

    def rival_first(
        self: ControlPublisher, command: ControlCommand, timeout_s: float = 15.0
    ) -> None:
        # Another operator, who read the same state, publishes the same sequence just before us.
        if len(rivals) < rivals_to_send:
            rival = dataclasses.replace(
                command,
                command_id=f"rival-{command.command_id}",
                issuer="other-operator",
                config=dataclasses.replace(command.config, flags={"from": "rival"}),
                signature="",
            )
            rival = sign(rival, serving.keys.signing_key)
            original_send(self, rival, timeout_s)
            rivals.append(rival)
        original_send(self, command, timeout_s)

    monkeypatch.setattr(ControlPublisher, "send", rival_first)
    rivals_to_send = 1
    code, out, err = cli("canary", "churn", "--percent", "30", "--wait", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["attempts"] == 2
    assert [lost["command_id"] for lost in result["lost_to"]] == [rivals[0].command_id]
    command = result["command"]
    assert command["sequence"] == rivals[0].sequence + 1
    # Rebased on the winner: its flag kept, our change applied on top.
    assert command["config"]["flags"] == {"from": "rival"}
    assert command["config"]["canary_basis_points"] == 3000
    assert result["wait"]["outcome"] == "in_force"
    for replica in replicas:
        applied = replica.state.applied("churn")
        assert applied is not None and applied.sequence == command["sequence"]

    # Without retries the loss is reported with its own exit code, and nothing of it applies.
    rivals.clear()
    code, _, err = cli("canary", "churn", "--percent", "40", "--retries", "0")
    assert code == 4, err
    assert "lost sequence" in err and "other-operator" in err
    assert wait_for(
        lambda: all(
            (applied := replica.state.applied("churn")) is not None
            and applied.command_id == rivals[0].command_id
            for replica in replicas
        ),
        timeout_s=20,
    ), "replicas did not apply the rival that won the sequence"
    for replica in replicas:
        applied = replica.state.applied("churn")
        assert applied is not None and applied.sequence == rivals[0].sequence
