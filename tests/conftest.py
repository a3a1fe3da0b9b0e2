"""Session fixtures: the real Kafka broker and the ClickHouse endpoint, started once per run.

With KAFKA_BOOTSTRAP_SERVERS / CLICKHOUSE_URL set, the tests use those instead; either way a
missing server fails the run loudly, it never skips. Every run gets its own topic prefix and
ClickHouse database, so runs never see each other's data.
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from safeloop.infra.clickhouse.migrate import migrate
from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.broker_security import SecurityPaths
from safeloop.infra.kafka.clients import cluster_answers, security_config
from safeloop.infra.kafka.provisioning import admin_settings
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.portcheck import free_port, port_is_free
from safeloop.infra.settings import Settings
from safeloop.infra.warehouse.process import WarehouseProcess

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The chaos tier (tests/chaos) drives the loop with the integration tier's harnesses; pytest
# puts only a test's own folder on sys.path, so that folder goes on it for every tier.
sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))
ARTIFACTS_DIR = PROJECT_ROOT / "test-artifacts"


@dataclass(frozen=True)
class Stack:
    """The servers of one test run, and a way to get settings with fresh topics/database."""

    settings: Settings
    fresh: Callable[[str], Settings]


def _base_settings(state_dir: Path) -> Settings:
    run_id = uuid.uuid4().hex[:8]
    base = Settings.from_env()
    # The integration tier runs against the secured broker (SASL_SSL, ACLs) unless told otherwise.
    security = os.environ.get("SAFELOOP_KAFKA_SECURITY") or (
        base.kafka_security if base.kafka_bootstrap_servers else "sasl_ssl"
    )
    cache_dir = base.cache_dir if base.cache_dir.is_absolute() else PROJECT_ROOT / base.cache_dir
    if base.uses_local_kafka:
        # One node for the session, whatever cluster a developer runs from the repo's .state.
        base = base.with_kafka_brokers(1)
    return replace(
        base,
        state_dir=state_dir,
        cache_dir=cache_dir,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        warehouse_port=free_port(),
        topic_prefix=f"t{run_id}.",
        clickhouse_database=f"test_{run_id}",
        kafka_security=security.lower(),
    )


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _base_settings(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="session")
def kafka(base_settings: Settings) -> Iterator[Settings]:
    """A running Kafka: the local Apache Kafka broker, or the configured cluster.

    Secured, the settings act as the broker's admin (tests create topics under their own
    prefixes); tests/integration/test_kafka_security.py acts as each role instead.
    """
    if not base_settings.uses_local_kafka:
        security = security_config(base_settings)
        if not cluster_answers(base_settings.bootstrap_servers, 15.0, security=security):
            pytest.fail(
                f"KAFKA_BOOTSTRAP_SERVERS={base_settings.bootstrap_servers} does not answer"
            )
        yield base_settings
        return
    broker = LocalKafkaBroker(base_settings, start_timeout=180.0)
    broker.start()
    try:
        if base_settings.kafka_secured:
            yield admin_settings(base_settings, broker.paths.security)
        else:
            yield base_settings
    finally:
        broker.stop()


# The replicated cluster the failover tests kill nodes of: as docker-compose runs it.
CLUSTER_BROKERS = 3


@dataclass(frozen=True)
class KafkaCluster:
    """A local cluster of CLUSTER_BROKERS nodes; `settings` act as its admin."""

    settings: Settings
    broker: LocalKafkaBroker


def _free_port_block(count: int) -> int:
    """A base port with `count` free ports from it on (node k uses base + 2(k-1), +1)."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000, 2)
        if all(port_is_free("127.0.0.1", base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A replicated local cluster (RF 3, min ISR 2), started only for the tests that ask."""
    state_dir = tmp_path_factory.mktemp("cluster")
    base = _free_port_block(2 * CLUSTER_BROKERS)
    # Always a local cluster: these tests kill its nodes.
    settings = replace(
        _base_settings(state_dir),
        kafka_bootstrap_servers=None,
        kafka_security=(os.environ.get("SAFELOOP_KAFKA_SECURITY") or "sasl_ssl").lower(),
        kafka_port=base,
        kafka_controller_port=base + 1,
    ).with_kafka_brokers(CLUSTER_BROKERS)
    broker = LocalKafkaBroker(settings, start_timeout=240.0)
    broker.start()
    try:
        admin = (
            admin_settings(settings, broker.paths.security) if settings.kafka_secured else settings
        )
        yield KafkaCluster(admin, broker)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_security(kafka: Settings, base_settings: Settings) -> SecurityPaths:
    """Where the secured local broker keeps its CA, passwords and client files."""
    if not (base_settings.uses_local_kafka and base_settings.kafka_secured):
        pytest.fail("the security tests need the local broker secured (SAFELOOP_KAFKA_SECURITY)")
    return LocalKafkaBroker(base_settings).paths.security


@pytest.fixture(scope="session")
def warehouse(base_settings: Settings) -> Iterator[Settings]:
    """A running ClickHouse: the embedded endpoint, or the configured server."""
    if not base_settings.uses_embedded_clickhouse:
        yield base_settings
        return
    process = WarehouseProcess(base_settings, startup_timeout=120.0)
    process.start()
    try:
        yield base_settings
    finally:
        process.stop()


def _provision(settings: Settings) -> Settings:
    admin = TopicAdmin.from_settings(settings)
    admin.ensure(topic_specs(settings))
    migrate(settings)
    return settings


@pytest.fixture(scope="session")
def stack(kafka: Settings, warehouse: Settings) -> Stack:
    """Kafka and ClickHouse with this run's topics created and DDL applied."""
    settings = _provision(kafka)

    def fresh(label: str) -> Settings:
        assert label.isidentifier(), "labels name a database: letters, digits, underscores"
        suffix = uuid.uuid4().hex[:6]
        return _provision(
            replace(
                settings,
                topic_prefix=f"{settings.topic_prefix}{label}-{suffix}.",
                clickhouse_database=f"{settings.clickhouse_database}_{label}_{suffix}",
            )
        )

    return Stack(settings=settings, fresh=fresh)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, reports)."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


def pytest_report_header(config: pytest.Config) -> str:
    where = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "local Apache Kafka broker (started)"
    where += f", {os.environ.get('SAFELOOP_KAFKA_SECURITY') or 'sasl_ssl'}"
    clickhouse = os.environ.get("CLICKHOUSE_URL") or "embedded chDB endpoint (started)"
    return f"safeloop: kafka={where}; clickhouse={clickhouse}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m "not integration and not e2e"` selects the unit tests."""
    for item in items:
        parts = Path(str(item.path)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "chaos" in parts:
            item.add_marker(pytest.mark.chaos)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
