"""Three KRaft nodes, RF 3, min ISR 2: SIGKILL of a partition leader loses no acknowledged write."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field, replace

import pytest
from _waiting import poller
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from conftest import CLUSTER_BROKERS, KafkaCluster

from safeloop.infra.kafka.clients import admin_client, make_consumer, make_producer
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.settings import Settings

pytestmark = pytest.mark.integration

wait_for = poller(120.0, 0.5)


@dataclass
class _Load:
    """Keys produced until stopped; the ones the cluster acknowledged (acks=all)."""

    acked: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    sent: int = 0


def _partition_state(settings: Settings, topic: str) -> dict[int, tuple[int, list[int]]]:
    """Partition -> (leader, in-sync replicas)."""
    metadata = admin_client(settings).list_topics(topic, timeout=10)
    return {
        number: (partition.leader, list(partition.isrs))
        for number, partition in metadata.topics[topic].partitions.items()
    }


def _produce_until(settings: Settings, topic: str, stop: threading.Event, load: _Load) -> None:
    producer = make_producer(settings)

    def on_delivery(error: object, message: object) -> None:
        key = message.key().decode()  # type: ignore[attr-defined]
        (load.failed.append if error is not None else load.acked.add)(key)

    while not stop.is_set():
        for _ in range(20):
            key = uuid.uuid4().hex
            producer.produce(topic, key=key, value=key.encode(), on_delivery=on_delivery)
            load.sent += 1
        producer.poll(0.05)
    producer.flush(120)


def _keys_on(settings: Settings, topic: str) -> list[str]:
    """Every key on `topic`, read from the start of each partition to its end (no group)."""
    consumer = make_consumer(settings, f"failover-{uuid.uuid4().hex[:6]}")
    partitions = _partition_state(settings, topic)
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    keys: list[str] = []
    positions = dict.fromkeys(partitions, 0)
    try:
        while any(positions[p] < ends[p] for p in partitions):
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            positions[message.partition()] = message.offset() + 1
            keys.append((message.key() or b"").decode())
    finally:
        consumer.close()
    return keys


def test_killing_a_partition_leader_loses_no_acknowledged_write(
    kafka_cluster: KafkaCluster,
) -> None:
    settings = replace(kafka_cluster.settings, topic_prefix=f"fo-{uuid.uuid4().hex[:6]}.")
    spec = next(s for s in topic_specs(settings) if s.name == settings.topics.predictions)
    assert spec.replication_factor == CLUSTER_BROKERS
    assert spec.config["min.insync.replicas"] == "2"
    TopicAdmin.from_settings(settings).ensure([spec])
    topic = spec.name
    assert wait_for(
        lambda: all(len(isr) == 3 for _, isr in _partition_state(settings, topic).values())
    )

    load, stop = _Load(), threading.Event()
    producing = threading.Thread(target=_produce_until, args=(settings, topic, stop, load))
    producing.start()
    try:
        assert wait_for(lambda: len(load.acked) >= 2000)
        victim = _partition_state(settings, topic)[0][0]
        acked_before_kill = len(load.acked)
        kafka_cluster.broker.kill_node(victim)

        # Another node takes over every partition the victim led, and writes go on.
        assert wait_for(
            lambda: all(
                leader not in (victim, -1)
                for leader, _ in _partition_state(settings, topic).values()
            )
        )
        assert wait_for(lambda: len(load.acked) >= acked_before_kill + 2000)

        kafka_cluster.broker.start()
        # Restarted, it catches up and rejoins the ISR of every partition.
        assert wait_for(
            lambda: all(
                len(isr) == 3 and victim in isr
                for _, isr in _partition_state(settings, topic).values()
            )
        )
        assert wait_for(lambda: len(load.acked) >= acked_before_kill + 4000)
    finally:
        stop.set()
        producing.join(180)

    assert not producing.is_alive()
    keys = _keys_on(settings, topic)
    missing = load.acked - set(keys)
    assert not missing, f"{len(missing)} acknowledged writes lost of {len(load.acked)}"
    # Idempotent producer: retries after the failover wrote nothing twice.
    assert len(keys) == len(set(keys))
    status = kafka_cluster.broker.status()
    assert status.running and {node.node_id for node in status.nodes} == {1, 2, 3}
    assert wait_for(
        lambda: all(n.under_replicated == 0 for n in kafka_cluster.broker.status().nodes)
    )
