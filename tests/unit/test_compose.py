"""docker-compose.yml cannot run here, so it is kept correct by review and by these checks."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

# The size of the local cluster the failover tests start: docker-compose must run that cluster.
from conftest import CLUSTER_BROKERS

from safeloop.infra.kafka.broker_config import broker_properties, controller_ids
from safeloop.infra.kafka.topics import topic_specs
from safeloop.infra.settings import Settings, local_min_insync_replicas
from safeloop.services.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: spec for name, spec in SERVICES.items() if spec.get("image") == "safeloop:latest"}
LONG_RUNNING = {"processor", "replica-a", "replica-b", "metrics", "dashboard"}


def _safeloop_invocations(spec: dict[str, Any]) -> list[list[str]]:
    """Each `safeloop …` argument list a service runs (direct, or inside `sh -c`)."""
    command = spec["command"]
    if spec.get("entrypoint") == ["sh", "-c"]:
        script = " ".join(command)
        pieces = re.split(r"&&|\|\||\||\(|\)", script)
        return [shlex.split(piece)[1:] for piece in pieces if piece.strip().startswith("safeloop ")]
    return [list(command)]


def test_the_stack_has_every_part() -> None:
    assert {"kafka-1", "kafka-2", "kafka-3", "clickhouse", "grafana", "setup"} <= set(SERVICES)
    assert set(OURS) >= LONG_RUNNING


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_service_command_is_a_safeloop_command(name: str) -> None:
    parser = build_parser()
    invocations = _safeloop_invocations(OURS[name])
    assert invocations, f"{name} runs no safeloop command"
    for argv in invocations:
        args = parser.parse_args(argv)  # SystemExit (usage error) fails the test
        assert getattr(args, "func", None) is not None, f"{name}: {argv} selects no command"


@pytest.mark.parametrize("name", sorted(LONG_RUNNING | {"kafka-1", "clickhouse", "grafana"}))
def test_long_running_services_have_healthchecks(name: str) -> None:
    assert "test" in SERVICES[name]["healthcheck"]


def test_services_use_the_settings_names_of_the_local_run() -> None:
    settings_source = (ROOT / "infra" / "settings.py").read_text()
    env = OURS["processor"]["environment"]
    for variable in env:
        assert f'"{variable}"' in settings_source, f"{variable} is not a safeloop setting"
    parsed = Settings.from_env(
        {k: str(v) for k, v in env.items() if "${" not in str(v) and not k.endswith("_FILE")}
    )
    assert parsed.replication_factor == 3
    assert not parsed.uses_local_kafka


def test_three_kraft_brokers_agree_on_the_quorum_and_the_pinned_version() -> None:
    brokers = [SERVICES[f"kafka-{n}"] for n in (1, 2, 3)]
    voters = {b["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in brokers}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert {b["environment"]["KAFKA_NODE_ID"] for b in brokers} == {1, 2, 3}
    assert {b["image"] for b in brokers} == {f"apache/kafka:{Settings().kafka_version}"}


def test_mounted_files_exist_and_no_secret_is_inlined() -> None:
    for spec in SERVICES.values():
        for volume in spec.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{source} is mounted but not in the repo"
        for key, value in (spec.get("environment") or {}).items():
            if "PASSWORD" in key and key.endswith("_FILE"):
                assert str(value).startswith("/run/secrets/"), f"{key} must be a Docker secret"
            elif "PASSWORD" in key:
                assert str(value).startswith("${"), f"{key} must come from .env"
    assert (ROOT / "Dockerfile").exists()


def test_kafka_is_secured_like_the_local_broker() -> None:
    for n in (1, 2, 3):
        env = SERVICES[f"kafka-{n}"]["environment"]
        assert env["KAFKA_LISTENERS"] == "SASL_SSL://:9092,CONTROLLER://:9093"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"SASL_SSL://kafka-{n}:9092"
        assert env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
        assert env["KAFKA_LISTENER_NAME_CONTROLLER_SSL_CLIENT_AUTH"] == "required"
        assert env["KAFKA_SUPER_USERS"] == "User:admin;User:safeloop-broker"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert "--add-scram" in " ".join(SERVICES[f"kafka-{n}"]["command"])


@pytest.mark.parametrize(
    ("name", "role"),
    [("processor", "processor"), ("replica-a", "replica"), ("replica-b", "replica"),
     ("metrics", "metrics")],
)  # fmt: skip
def test_each_service_holds_its_own_role_s_password_only(name: str, role: str) -> None:
    spec = OURS[name]
    assert spec["environment"]["SAFELOOP_KAFKA_USERNAME"] == role
    passwords = [s for s in spec["secrets"] if str(s).endswith("_password")]
    assert passwords == [f"kafka_{role}_password"]


def test_only_setup_is_the_kafka_admin_and_it_grants_every_role() -> None:
    admins = [n for n, spec in OURS.items() if "kafka_admin_password" in spec.get("secrets", [])]
    assert admins == ["setup"]
    grants = [
        argv for argv in _safeloop_invocations(OURS["setup"]) if argv[:2] == ["kafka", "grant"]
    ]
    assert {argv[2] for argv in grants} == {"operator", "replica", "labels", "processor", "metrics"}
    assert OURS["dashboard"]["secrets"] == []


def _kafka_env_to_property(variable: str) -> str:
    """The apache/kafka image's rule: KAFKA_A_B -> a.b, `__` -> `_`, `___` -> `-`."""
    name = variable.removeprefix("KAFKA_").lower()
    return (
        name.replace("___", "\0")
        .replace("__", "\1")
        .replace("_", ".")
        .replace("\0", "-")
        .replace("\1", "_")
    )


# Per node or per network (names, ports, paths, listeners) or set in the image's own way.
_NODE_SPECIFIC = {
    "node.id",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "controller.quorum.voters",
    "log.dirs",
    "num.partitions",
}


@pytest.mark.parametrize("node", [1, 2, 3])
def test_compose_brokers_run_as_the_tested_local_three_node_cluster(node: int) -> None:
    tested = Settings().with_kafka_brokers(CLUSTER_BROKERS)
    local = broker_properties(tested, Path("/data"), node)
    env = SERVICES[f"kafka-{node}"]["environment"]
    compose = {_kafka_env_to_property(k): str(v) for k, v in env.items() if k.startswith("KAFKA_")}
    for key, value in local.items():
        if key in _NODE_SPECIFIC:
            continue
        assert compose.get(key) == value, (
            f"kafka-{node}: {key} is {compose.get(key)}, tested {value}"
        )
    voters = compose["controller.quorum.voters"].split(",")
    assert [v.split("@")[0] for v in voters] == [str(i) for i in controller_ids(CLUSTER_BROKERS)]


def test_compose_topics_get_the_tested_replication_and_min_isr() -> None:
    env = OURS["setup"]["environment"]
    parsed = Settings.from_env(
        {k: str(v) for k, v in env.items() if "${" not in str(v) and not k.endswith("_FILE")}
    )
    tested = Settings().with_kafka_brokers(CLUSTER_BROKERS)
    assert {
        (s.replication_factor, s.config.get("min.insync.replicas")) for s in topic_specs(parsed)
    } == {(tested.replication_factor, str(local_min_insync_replicas(tested.replication_factor)))}


def test_the_clickhouse_cluster_profile_is_optional_and_complete() -> None:
    profiled = {
        n for n, spec in SERVICES.items() if "clickhouse-cluster" in spec.get("profiles", [])
    }
    assert profiled == {"clickhouse-keeper", "clickhouse-r1", "clickhouse-r2", "cluster-setup"}
    version = SERVICES["clickhouse"]["image"].split(":")[1]
    assert SERVICES["clickhouse-keeper"]["image"] == f"clickhouse/clickhouse-keeper:{version}"
    replicas = [SERVICES["clickhouse-r1"], SERVICES["clickhouse-r2"]]
    assert {r["image"] for r in replicas} == {SERVICES["clickhouse"]["image"]}
    assert {r["environment"]["CLICKHOUSE_REPLICA"] for r in replicas} == {
        "clickhouse-r1",
        "clickhouse-r2",
    }
    for name in ("clickhouse-keeper", "clickhouse-r1", "clickhouse-r2"):
        assert "test" in SERVICES[name]["healthcheck"], name
    config = (ROOT / "infra/clickhouse_server/cluster/config.d/cluster.xml").read_text()
    for replica in ("clickhouse-r1", "clickhouse-r2"):
        assert f"<host>{replica}</host>" in config
        assert (
            SERVICES[replica]["depends_on"]["clickhouse-keeper"]["condition"] == "service_healthy"
        )
    assert "<host>clickhouse-keeper</host><port>9181</port>" in config
    keeper = (ROOT / "infra/clickhouse_server/keeper/keeper.xml").read_text()
    assert "<tcp_port>9181</tcp_port>" in keeper and "<port>9182</port>" in keeper
    # The cluster's DDL is applied under the name remote_servers gives the cluster.
    argv = _safeloop_invocations(SERVICES["cluster-setup"])[0]
    cluster = argv[argv.index("--cluster") + 1]
    assert f"<{cluster}>" in config
    setup_waits = SERVICES["setup"]["depends_on"]["cluster-setup"]
    assert setup_waits == {"condition": "service_completed_successfully", "required": False}
