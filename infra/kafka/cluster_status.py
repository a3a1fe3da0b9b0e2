"""Per-node view of a running cluster: role, partitions led, under-replicated partitions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from safeloop.infra.exceptions import KafkaAdminError
from safeloop.infra.kafka.clients import admin_client
from safeloop.infra.settings import Settings


@dataclass(frozen=True)
class NodeLoad:
    """What one node leads, as the cluster's metadata says."""

    node_id: int
    registered: bool
    partitions_led: int
    # Partitions this node leads whose in-sync replicas are fewer than their replicas (the
    # broker's UnderReplicatedPartitions metric counts the same way: per leader).
    under_replicated: int


@dataclass(frozen=True)
class ClusterLoad:
    """Every node's load plus the partitions no node leads."""

    nodes: tuple[NodeLoad, ...]
    offline_partitions: int


def cluster_load(
    settings: Settings, node_ids: Sequence[int], timeout_s: float = 10.0
) -> ClusterLoad:
    """Ask the cluster (as `settings`, which must see every topic) who leads what."""
    admin = admin_client(settings)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaAdminError(f"describing the cluster failed: {exc}") from exc
    return summarise(metadata.topics.values(), set(metadata.brokers), node_ids)


def summarise(topics: Iterable[Any], registered: set[int], node_ids: Sequence[int]) -> ClusterLoad:
    """ClusterLoad from confluent-kafka TopicMetadata values and the registered broker ids."""
    led = dict.fromkeys(node_ids, 0)
    under = dict.fromkeys(node_ids, 0)
    offline = 0
    for topic in topics:
        for partition in topic.partitions.values():
            if partition.leader < 0:
                offline += 1
                continue
            led[partition.leader] = led.get(partition.leader, 0) + 1
            if len(partition.isrs) < len(partition.replicas):
                under[partition.leader] = under.get(partition.leader, 0) + 1
    nodes = tuple(
        NodeLoad(node, node in registered, led[node], under[node]) for node in sorted(led)
    )
    return ClusterLoad(nodes, offline)
