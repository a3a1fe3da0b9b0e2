"""The metrics groups on a 3-node cluster, whose consumers are static members: they get their
partitions back at once when their coordinator broker dies; a closing instance hands its
partitions over at once (it leaves explicitly); one restarted with its `--instance-id` gets
them back at once; a second live one with the same id fences the first out."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from _stream_harness import prediction
from _waiting import poller
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from conftest import KafkaCluster

from safeloop.infra.exceptions import ConsumerFencedError
from safeloop.infra.kafka.clients import admin_client, make_producer
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.services.monitor.consumer import EventConsumer
from safeloop.services.monitor.wiring import metrics_consumer

pytestmark = pytest.mark.integration

wait_for = poller(120.0, 0.1)
# The broker's minimum session: shorter than a coordinator's failover (the dead node is
# fenced after 6 s, then the group is loaded elsewhere), so the session is reliably lost.
SESSION_MS = 6_000
# How long the guard may go without its partitions once a new coordinator leads the group.
REJOIN_LIMIT_S = 3.0


@dataclass
class Membership:
    """(monotonic time, "assign" | "revoke" | "lost") as the consumer's callbacks saw them."""

    events: list[tuple[float, str]] = field(default_factory=list)
    partitions: set[int] = field(default_factory=set)

    def callbacks(self) -> dict[str, Callable[[Consumer, list], None]]:  # type: ignore[type-arg]
        def on(kind: str) -> Callable[[Consumer, list], None]:  # type: ignore[type-arg]
            def record(_: Consumer, parts: list) -> None:  # type: ignore[type-arg]
                self.events.append((time.monotonic(), kind))
                numbers = {tp.partition for tp in parts}
                if kind == "assign":
                    self.partitions |= numbers
                else:
                    self.partitions -= numbers

            return record

        return {"on_assign": on("assign"), "on_revoke": on("revoke"), "on_lost": on("lost")}

    def blind_spells(self, since: float) -> list[tuple[float, float]]:
        """(lost, back) for each loss of the partitions after `since`; back is inf if never."""
        spells, lost_at = [], None
        for at, kind in self.events:
            if at < since:
                continue
            if kind != "assign" and lost_at is None:
                lost_at = at
            elif kind == "assign" and lost_at is not None:
                spells.append((lost_at, at))
                lost_at = None
        if lost_at is not None:
            spells.append((lost_at, float("inf")))
        return spells


@dataclass(frozen=True)
class GroupOnTopic:
    """A fresh predictions topic on the cluster and a fresh group to read it."""

    settings: Settings
    topic: str
    group: str
    partitions: set[int]

    def member(self, **config: Any) -> tuple[Consumer, Membership]:
        """A metrics consumer of the group, subscribed, with its assignments recorded."""
        consumer = metrics_consumer(self.settings, self.group, **config)
        membership = Membership()
        consumer.subscribe([self.topic], **membership.callbacks())
        return consumer, membership

    def event_consumer(self, name: str, **config: Any) -> EventConsumer[Any]:
        """A metrics consumer of the group as `metrics run` wraps it (a new client for a
        rejoin keeps the instance id, as `metrics run`'s does)."""
        config.setdefault("instance_id", f"{name}-{uuid.uuid4().hex[:6]}")
        return EventConsumer(
            metrics_consumer(self.settings, self.group, **config),
            self.topic,
            PREDICTION_CODEC,
            make_producer(self.settings),
            self.settings.topics.dead_letter,
            name=name,
            new_client=lambda: metrics_consumer(self.settings, self.group, **config),
        )


def _group_on_topic(cluster: KafkaCluster) -> GroupOnTopic:
    settings = replace(cluster.settings, topic_prefix=f"gm-{uuid.uuid4().hex[:6]}.")
    spec = next(s for s in topic_specs(settings) if s.name == settings.topics.predictions)
    TopicAdmin.from_settings(settings).ensure([spec])
    group = f"gm-{uuid.uuid4().hex[:6]}"
    return GroupOnTopic(settings, spec.name, group, set(range(settings.partitions)))


def _coordinator(admin: AdminClient, group: str) -> int:
    """The group's coordinator node, while every node runs: librdkafka 2.16 aborts the
    process when a node dies under a describe (rd_kafka_enq_once_del_source_return)."""
    futures = admin.describe_consumer_groups([group], request_timeout=10)
    return int(futures[group].result(timeout=30).coordinator.id)


def _leaders(admin: AdminClient, topic: str) -> set[int]:
    metadata = admin.list_topics(topic, timeout=10)
    return {partition.leader for partition in metadata.topics[topic].partitions.values()}


@contextmanager
def _polling(consumer: Consumer) -> Iterator[list[float]]:
    """Polls `consumer` on a thread; yields the monotonic times records arrived."""
    arrived: list[float] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                arrived.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield arrived
    finally:
        stop.set()
        thread.join(30)


@contextmanager
def _producing(settings: Settings, topic: str) -> Iterator[None]:
    """Predictions into `topic` on a thread, until the block ends."""
    producer = make_producer(settings)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            key = uuid.uuid4().hex
            producer.produce(topic, key=key, value=PREDICTION_CODEC.encode(prediction(key)))
            producer.poll(0.02)
        producer.flush(60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(90)


def test_a_metrics_consumer_whose_coordinator_broker_dies_gets_its_partitions_straight_back(
    kafka_cluster: KafkaCluster,
) -> None:
    setup = _group_on_topic(kafka_cluster)
    settings, topic, group, partitions = setup.settings, setup.topic, setup.group, setup.partitions
    consumer, membership = setup.member(
        **{"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 1_500}
    )
    admin = admin_client(settings)
    victim = None
    try:
        with _producing(settings, topic), _polling(consumer) as arrived:
            assert wait_for(lambda: len(arrived) > 50)
            victim = _coordinator(admin, group)
            killed = time.monotonic()
            kafka_cluster.broker.kill_node(victim)
            # Another node leads the group's offsets partition: a new coordinator.
            assert wait_for(lambda: victim not in _leaders(admin, "__consumer_offsets"))
            moved = time.monotonic()
            # By now the session has run out if it was going to (the client's clock counts
            # from the last answered heartbeat, before the kill; it checks once a second)...
            time.sleep(max(0.0, killed + SESSION_MS / 1000 + 1.5 - time.monotonic()))
            # ...and all partitions are back, with records coming again.
            since = len(arrived)
            assert wait_for(
                lambda: membership.partitions == partitions and len(arrived) > since + 50
            ), ("no records after the failover", membership.events)
            spells = membership.blind_spells(killed)
    finally:
        consumer.close()
        if victim is not None:
            kafka_cluster.broker.start()
    # Back once a coordinator answers: a dynamic member rejoins under a new id and the new
    # coordinator waits out the old id's session first (~6 s here).
    waits = [back - max(lost, moved) for lost, back in spells]
    assert all(wait <= REJOIN_LIMIT_S for wait in waits), (
        [(round(lost - killed, 2), round(back - killed, 2)) for lost, back in spells],
        round(moved - killed, 2),
    )


def test_a_metrics_consumer_committing_through_its_coordinators_death_keeps_reading(
    kafka_cluster: KafkaCluster,
) -> None:
    """`metrics run` commits every snapshot without waiting. Commits queued while the
    coordinator is dead reach the new one after the session ran out, under the blank member id
    librdkafka then holds: refused as fenced, which it makes fatal. Found by the soak (a broker
    restart stopped `metrics run`); the consumer must join again and read on."""
    setup = _group_on_topic(kafka_cluster)
    settings, topic, group, partitions = setup.settings, setup.topic, setup.group, setup.partitions
    consumer = setup.event_consumer(
        "committing", **{"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 1_500}
    )
    admin = admin_client(settings)
    victim = None
    read: list[float] = []
    try:
        with _producing(settings, topic):

            def poll_and_commit() -> None:
                read.extend(time.monotonic() for _ in consumer.poll(500, 0.1))
                consumer.commit(consumer.positions(), wait=False)

            assert wait_for(lambda: poll_and_commit() or len(read) > 50)
            assert consumer.counts.dead_lettered == 0
            victim = _coordinator(admin, group)
            killed = time.monotonic()
            kafka_cluster.broker.kill_node(victim)
            # Through the session's loss and the new coordinator's answers to the queued commits.
            while time.monotonic() < killed + 2 * SESSION_MS / 1000 + 5:
                poll_and_commit()
            since = len(read)
            assert wait_for(
                lambda: (
                    poll_and_commit()
                    or (consumer.membership.partitions == partitions and len(read) > since + 50)
                )
            ), consumer.membership
            # A member of the group again: its commit is taken.
            consumer.commit(consumer.positions(), wait=True)
    finally:
        consumer.close()
        if victim is not None:
            kafka_cluster.broker.start()
    assert consumer.counts.commits == 1
    assert consumer.counts.rejoins_after_fencing <= 1


def test_a_closing_metrics_consumer_hands_its_partitions_over_at_once(
    kafka_cluster: KafkaCluster,
) -> None:
    setup = _group_on_topic(kafka_cluster)
    partitions = setup.partitions
    leaving = setup.event_consumer("leaving")
    staying, membership = setup.member()
    try:
        with _polling(staying):
            assert wait_for(
                lambda: (
                    leaving.poll(100, 0.1) is not None
                    and len(membership.partitions) > 0
                    and leaving.membership.partitions | membership.partitions == partitions
                    and not leaving.membership.partitions & membership.partitions
                )
            )
            closed = time.monotonic()
            leaving.close()
            # A static member's plain close() would keep them until its session (10 s) ran out.
            assert wait_for(lambda: membership.partitions == partitions)
            taken_over_s = time.monotonic() - closed
    finally:
        staying.close()
    assert taken_over_s <= REJOIN_LIMIT_S, taken_over_s


def test_a_metrics_consumer_restarted_with_its_instance_id_gets_its_partitions_at_once(
    kafka_cluster: KafkaCluster,
) -> None:
    """`metrics run --instance-id`: the process before it died without leaving (a static
    member's close() does not leave, as SIGKILL does not); a new id would wait out the old
    member's session (10 s) before the group rebalanced."""
    setup = _group_on_topic(kafka_cluster)
    partitions = setup.partitions
    instance_id = f"pod-{uuid.uuid4().hex[:6]}"
    first, before = setup.member(instance_id=instance_id)
    with _polling(first):
        assert wait_for(lambda: before.partitions == partitions)
    first.close()
    restarted = time.monotonic()
    second, after = setup.member(instance_id=instance_id)
    try:
        with _polling(second):
            assert wait_for(lambda: after.partitions == partitions)
            back_s = time.monotonic() - restarted
    finally:
        second.close()
    assert back_s <= REJOIN_LIMIT_S, back_s


def test_a_second_live_consumer_with_the_same_instance_id_fences_the_first_out(
    kafka_cluster: KafkaCluster,
) -> None:
    """Two live processes given one --instance-id: the older learns it was fenced (and
    `metrics run` exits) instead of polling on without partitions."""
    setup = _group_on_topic(kafka_cluster)
    topic, partitions = setup.topic, setup.partitions
    instance_id = f"pod-{uuid.uuid4().hex[:6]}"
    older = setup.event_consumer("older", instance_id=instance_id)
    assert wait_for(
        lambda: older.poll(100, 0.1) is not None and older.membership.partitions == partitions
    )
    newer, membership = setup.member(instance_id=instance_id)
    fenced: list[ConsumerFencedError] = []

    def older_polls() -> bool:
        try:
            older.poll(100, 0.1)
        except ConsumerFencedError as exc:
            fenced.append(exc)
        return bool(fenced)

    try:
        with _polling(newer):
            assert wait_for(lambda: membership.partitions == partitions)
            assert wait_for(older_polls)
    finally:
        newer.close()
        older.close()
    assert fenced[0].consumer == "older" and fenced[0].topic == topic
