"""The local broker's generated configuration, and what it refuses without starting anything."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from safeloop.infra.exceptions import ExternalClusterError, PortInUseError, StartupError
from safeloop.infra.kafka.broker import (
    LocalKafkaBroker,
    broker_properties,
    log4j2_properties,
    new_cluster_id,
    render_properties,
)
from safeloop.infra.kafka.broker_config import controller_ids
from safeloop.infra.kafka.broker_security import BrokerSecurity, secured_properties
from safeloop.infra.kafka.certificates import TlsFiles
from safeloop.infra.kafka.cluster_status import summarise
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Secret, Settings


def _settings(tmp_path: Path, **changes: object) -> Settings:
    values: dict[str, object] = {
        "state_dir": tmp_path,
        "kafka_port": 19092,
        "kafka_controller_port": 19093,
        **changes,
    }
    return Settings(**values)  # type: ignore[arg-type]


def _parse(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_single_node_is_broker_and_controller_on_the_configured_ports(tmp_path: Path) -> None:
    props = broker_properties(_settings(tmp_path), tmp_path / "data")
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_internal_topics_fit_on_one_node(tmp_path: Path) -> None:
    props = broker_properties(_settings(tmp_path), tmp_path)
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_topics_are_only_created_by_the_admin(tmp_path: Path) -> None:
    assert broker_properties(_settings(tmp_path), tmp_path)["auto.create.topics.enable"] == "false"


def test_rendered_properties_parse_back(tmp_path: Path) -> None:
    props = broker_properties(_settings(tmp_path), tmp_path / "data")
    assert _parse(render_properties(props)) == props


def test_log4j_writes_to_the_log_file(tmp_path: Path) -> None:
    config = log4j2_properties(tmp_path / "logs" / "server.log")
    assert f"appender.file.fileName = {tmp_path / 'logs' / 'server.log'}" in config
    assert "rootLogger.appenderRef.file.ref = file" in config


def test_cluster_id_is_kafka_uuid_text() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_state_lives_under_the_state_dir(tmp_path: Path) -> None:
    paths = LocalKafkaBroker(_settings(tmp_path)).paths
    assert paths.root == tmp_path.resolve() / "kafka"
    assert paths.data.parent == paths.log_file.parent.parent == paths.root


def test_external_cluster_is_not_started_or_stopped(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(_settings(tmp_path, kafka_bootstrap_servers="kafka.example:9092"))
    with pytest.raises(ExternalClusterError):
        broker.start()
    with pytest.raises(ExternalClusterError):
        broker.stop()


def test_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = _settings(tmp_path, kafka_port=taken, kafka_controller_port=free_port())
        with pytest.raises(PortInUseError) as raised:
            LocalKafkaBroker(settings).start()
    assert raised.value.port == taken


def test_pid_file_naming_another_program_is_stale(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(_settings(tmp_path))
    broker.paths.root.mkdir(parents=True)
    # This test process is alive but is no Kafka broker: a pid reused after a crash.
    broker.paths.pid_file.write_text(f"{os.getpid()}\n")
    assert not broker.status().running
    assert not broker.stop().running
    assert not broker.paths.pid_file.exists()


@pytest.mark.parametrize(
    ("brokers", "voters"), [(1, [1]), (2, [1]), (3, [1, 2, 3]), (4, [1, 2, 3]), (7, [1, 2, 3])]
)
def test_the_quorum_is_an_odd_number_of_voters(brokers: int, voters: list[int]) -> None:
    assert controller_ids(brokers) == voters


def test_three_nodes_share_one_quorum_on_their_own_ports(tmp_path: Path) -> None:
    settings = _settings(tmp_path).with_kafka_brokers(3)
    nodes = [broker_properties(settings, tmp_path / f"d{n}", n) for n in (1, 2, 3)]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert {props["controller.quorum.voters"] for props in nodes} == {voters}
    assert [props["node.id"] for props in nodes] == ["1", "2", "3"]
    assert nodes[2]["listeners"] == "PLAINTEXT://127.0.0.1:19096,CONTROLLER://127.0.0.1:19097"
    assert settings.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    for props in nodes:
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"


def test_nodes_beyond_the_quorum_are_brokers_only(tmp_path: Path) -> None:
    settings = _settings(tmp_path).with_kafka_brokers(4)
    props = broker_properties(settings, tmp_path, 4)
    assert props["process.roles"] == "broker"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19098"
    security = BrokerSecurity(Secret("pw"), TlsFiles(tmp_path))
    secured = secured_properties(settings, security, 4, controller=False)
    assert secured["listeners"] == "SASL_SSL://127.0.0.1:19098"
    assert secured["advertised.listeners"] == "SASL_SSL://127.0.0.1:19098"


def test_each_node_keeps_its_own_data_and_pid_but_shares_security(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(_settings(tmp_path).with_kafka_brokers(3))
    first, third = broker.node_paths(1), broker.node_paths(3)
    assert first.data == broker.paths.data  # node 1 keeps the single-node layout
    assert third.data == broker.paths.root / "node-3" / "data"
    assert third.pid_file != first.pid_file
    assert third.security == first.security


def test_the_formatted_node_count_is_what_later_commands_see(tmp_path: Path) -> None:
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "brokers").write_text("3\n")
    settings = Settings.from_env({"SAFELOOP_STATE_DIR": str(tmp_path)})
    assert settings.kafka_brokers == 3 and settings.replication_factor == 3
    explicit = {"SAFELOOP_STATE_DIR": str(tmp_path), "SAFELOOP_REPLICATION_FACTOR": "1"}
    assert Settings.from_env(explicit).replication_factor == 1
    assert Settings.from_env({**explicit, "SAFELOOP_KAFKA_BROKERS": "2"}).kafka_brokers == 2


def test_restarting_with_another_node_count_is_refused(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(_settings(tmp_path))
    broker.paths.data.mkdir(parents=True)
    broker.paths.meta_properties.write_text("cluster.id=x\n")
    broker.paths.node_count_file.write_text("1\n")
    settings = _settings(tmp_path, kafka_port=free_port(), kafka_controller_port=free_port())
    with pytest.raises(StartupError, match="formatted with 1 node"):
        LocalKafkaBroker(settings.with_kafka_brokers(3)).start()


def test_status_counts_leadership_and_under_replication_per_leader() -> None:
    def partition(leader: int, replicas: list[int], isrs: list[int]) -> SimpleNamespace:
        return SimpleNamespace(leader=leader, replicas=replicas, isrs=isrs)

    topic = SimpleNamespace(
        partitions={
            0: partition(1, [1, 2, 3], [1, 2, 3]),
            1: partition(2, [2, 3, 1], [2, 3]),
            2: partition(2, [2, 1, 3], [2, 1, 3]),
            3: partition(-1, [3, 1, 2], []),
        }
    )
    load = summarise([topic], {1, 2}, [1, 2, 3])
    assert [
        (n.node_id, n.registered, n.partitions_led, n.under_replicated) for n in load.nodes
    ] == [
        (1, True, 1, 0),
        (2, True, 2, 1),
        (3, False, 0, 0),
    ]
    assert load.offline_partitions == 1
