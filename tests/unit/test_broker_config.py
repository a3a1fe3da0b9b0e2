"""The local broker's generated configuration, and what it refuses without starting anything."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import pytest

from safeloop.infra.exceptions import ExternalClusterError, PortInUseError
from safeloop.infra.kafka.broker import (
    LocalKafkaBroker,
    broker_properties,
    log4j2_properties,
    new_cluster_id,
    render_properties,
)
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings


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
