"""The real Kafka broker: start, topics, a round trip, crash recovery and a clean stop."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from safeloop.infra.exceptions import KafkaAdminError
from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.clients import consumer_config, producer_config
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.portcheck import free_port, port_is_free
from safeloop.infra.settings import Settings

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _local_settings(state_dir: Path) -> Settings:
    """A local broker on free ports in `state_dir`, sharing the repository's jar cache."""
    settings = Settings.from_env()
    cache_dir = settings.cache_dir if settings.cache_dir.is_absolute() else REPO_ROOT / ".cache"
    return dataclasses.replace(
        settings,
        state_dir=state_dir,
        cache_dir=cache_dir,
        kafka_bootstrap_servers=None,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        topic_prefix=f"it-{uuid.uuid4().hex[:8]}-",
    )


def _process_gone(pid: int) -> bool:
    """No thread of `pid` runs any more (this machine's init may leave zombies unreaped)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z" and len(threads) <= 1


@pytest.fixture(scope="module")
def broker_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = _local_settings(tmp_path_factory.mktemp("kafka-state"))
    broker = LocalKafkaBroker(settings)
    broker.start()
    yield settings
    broker.stop()


def test_started_broker_reports_itself(broker_settings: Settings) -> None:
    status = LocalKafkaBroker(broker_settings).status()
    assert status.running and status.pid is not None
    assert status.bootstrap == f"127.0.0.1:{broker_settings.kafka_port}"
    assert status.version == broker_settings.kafka_version


def test_start_when_running_is_a_no_op(broker_settings: Settings) -> None:
    broker = LocalKafkaBroker(broker_settings)
    before = broker.status()
    assert broker.start() == before


def test_topics_are_created_once_and_carry_a_message(broker_settings: Settings) -> None:
    admin = TopicAdmin.from_settings(broker_settings)
    specs = topic_specs(broker_settings)
    assert sorted(admin.ensure(specs)) == sorted(spec.name for spec in specs)
    assert admin.ensure(specs) == []

    topic = broker_settings.topics.predictions
    producer = Producer(producer_config(broker_settings))
    producer.produce(topic, key=b"prediction-1", value=b"payload")
    assert producer.flush(10) == 0

    consumer = Consumer(consumer_config(broker_settings, group_id=f"{topic}-reader"))
    consumer.subscribe([topic])
    try:
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            candidate = consumer.poll(1.0)
            if candidate is not None and candidate.error() is None:
                message = candidate
        assert message is not None, "no message within 30 s"
        assert (message.key(), message.value()) == (b"prediction-1", b"payload")
        consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


def test_control_topic_is_compacted(broker_settings: Settings) -> None:
    admin = TopicAdmin.from_settings(broker_settings)
    admin.ensure(topic_specs(broker_settings))
    control = broker_settings.topics.control
    description = admin.describe([control])[control]
    assert description.partitions == 1
    assert description.config["cleanup.policy"] == "compact"


def test_predictions_with_another_partition_count_are_refused(broker_settings: Settings) -> None:
    admin = TopicAdmin.from_settings(broker_settings)
    settings = dataclasses.replace(broker_settings, topic_prefix=f"cp-{uuid.uuid4().hex[:8]}-")
    admin.ensure(topic_specs(settings))
    regrown = dataclasses.replace(settings, partitions=settings.partitions + 1)
    try:
        with pytest.raises(KafkaAdminError) as raised:
            admin.ensure(topic_specs(regrown))
        assert raised.value.topic == settings.topics.predictions
    finally:
        admin.delete(settings.topics.all())


def test_crashed_broker_is_recovered_and_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _local_settings(tmp_path)
    broker = LocalKafkaBroker(settings)
    crashed = broker.start().pid
    assert crashed is not None
    try:
        os.kill(crashed, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _process_gone(crashed) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert broker.paths.pid_file.exists() and broker.paths.data_lock.exists()

        with caplog.at_level(logging.INFO, logger="safeloop.infra.kafka.broker"):
            restarted = broker.start()
        assert restarted.running and restarted.pid != crashed
        assert "stale pid file" in caplog.text and "stale lock file" in caplog.text
    finally:
        stopped = broker.stop()
    assert not stopped.running
    assert restarted.pid is not None and _process_gone(restarted.pid)
    assert not broker.paths.pid_file.exists()
    assert port_is_free(settings.kafka_host, settings.kafka_port)
