"""Any producer's partitioner: records off their prediction_id's home partition are re-routed
through the repartition topic and every pair joins; mismatched partition counts are refused."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _stream_harness import REPO, Run, free_port, new_run, now_ms, outcome, prediction, wait_for
from confluent_kafka import KafkaError, Message, Producer

from safeloop.infra.kafka.clients import connection_config
from safeloop.infra.kafka.partitioner import default_partition
from safeloop.infra.kafka.topics import TopicAdmin, TopicSpec
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC

pytestmark = pytest.mark.integration

PARTITIONS = 4
PAIRS_PER_CASE = 20
# (key, value, record index) -> the partition to write to, None: the producer's partitioner.
Placement = Callable[[bytes, int], int | None]


@pytest.fixture(scope="module")
def run(stack: Any) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="stream-run-") as tmp:
        current = new_run(stack.fresh("partitioning"), Path(tmp), window_ms=600_000)
        port = free_port()
        current.start_worker(0, port)
        current.metrics_port = port
        yield current
        current.stop_all()


class Publisher:
    """Publishes the way a foreign producer would: its partitioner, its keys, its partitions."""

    def __init__(
        self, run: Run, partitioner: str, place: Placement | None = None, keyed: bool = True
    ) -> None:
        self.producer = Producer(
            {
                # Only how to reach and authenticate to the broker comes from safeloop; the
                # partitioning is the foreign client's own.
                **connection_config(run.settings),
                "partitioner": partitioner,
                # Unkeyed records: a random partition each, not one partition per batch.
                "sticky.partitioning.linger.ms": 0,
            }
        )
        self.place = place
        self.keyed = keyed
        self.count = 0
        self.partitions: list[int] = []

    def publish(self, topic: str, pid: str, value: bytes) -> None:
        key = pid.encode()
        partition = self.place(key, self.count) if self.place is not None else None
        self.count += 1
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        self.producer.produce(
            topic,
            value,
            key if self.keyed else None,
            on_delivery=self._delivered,
            **extra,
        )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        self.partitions.append(int(message.partition() or 0))

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def publishers(run: Run) -> dict[str, Publisher]:
    rng = random.Random(11)
    return {
        # librdkafka's default: CRC32 of the key (a different partition for most keys).
        "consistent_random": Publisher(run, "consistent_random"),
        "random_partition": Publisher(run, "murmur2_random", lambda k, i: rng.randrange(4)),
        "round_robin": Publisher(run, "murmur2_random", lambda k, i: i % PARTITIONS),
        "unkeyed": Publisher(run, "consistent_random", keyed=False),
    }


def rerouted(run: Run) -> dict[str, float]:
    url = f"http://127.0.0.1:{run.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("safeloop_stream_rerouted_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('topic="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


def test_pairs_join_whatever_partitioner_key_or_partition_their_producers_used(run: Run) -> None:
    topics = run.topics
    ours = Publisher(run, "murmur2_random")
    styles = publishers(run)
    expected: dict[str, float] = {}
    for name, foreign in styles.items():
        for i in range(PAIRS_PER_CASE):
            # Foreign outcomes for our predictions, then foreign predictions and outcomes.
            for pid, prediction_publisher in (
                (f"{name}-ours-{i}", ours),
                (f"{name}-both-{i}", foreign),
            ):
                truth = float(i % 2)
                expected[pid] = truth
                event = prediction(pid, ts=now_ms())
                prediction_publisher.publish(
                    topics.predictions, pid, PREDICTION_CODEC.encode(event)
                )
                foreign.publish(
                    topics.outcomes, pid, OUTCOME_CODEC.encode(outcome(pid, truth=truth))
                )
    for publisher in (ours, *styles.values()):
        publisher.flush()
    # Each foreign style really did put records off their home partition.
    for name, foreign in styles.items():
        assert len(set(foreign.partitions)) > 1, name

    def joined() -> dict[str, float]:
        rows = run.query(
            "SELECT prediction_id, ground_truth FROM feedback FINAL WHERE status = 'joined'"
        )
        return {str(pid): float(truth) for pid, truth in rows}

    assert wait_for(lambda: joined() == expected, 120), (
        sorted(set(expected) - set(joined()))[:10],
        run.worker_log("worker-0"),
    )
    # Written once each, though the misrouted ones were read twice (source, then repartition).
    total = len(expected)
    assert wait_for(lambda: run.count("SELECT count() FROM outcomes") == total, 30)
    assert run.count("SELECT count() FROM predictions") == total
    assert run.count("SELECT count() FROM feedback WHERE status != 'joined'") == 0
    counts = rerouted(run)
    assert counts.get(topics.predictions, 0) > 0
    assert counts.get(topics.outcomes, 0) > PAIRS_PER_CASE
    # Nothing is left to re-route on the repartition topic itself.
    assert counts.get(topics.repartition, 0) == 0


def test_our_murmur2_picks_the_partition_librdkafkas_murmur2_random_picks(run: Run) -> None:
    name = f"{run.settings.topic_prefix}murmur2-check"
    TopicAdmin.from_settings(run.settings).ensure([TopicSpec(name, 13, 1)])
    publisher = Publisher(run, "murmur2_random")
    keys = [f"key-{i}-{random.random()}" for i in range(300)] + ["", "a", "ab", "abc"]
    chosen: dict[str, int] = {}

    def delivered(key: str) -> Callable[[KafkaError | None, Message], None]:
        def record(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            chosen[key] = int(message.partition() or 0)

        return record

    for key in keys:
        publisher.producer.produce(name, b"x", key.encode(), on_delivery=delivered(key))
    publisher.flush()
    assert {k: default_partition(k.encode(), 13) for k in keys} == chosen


def test_a_worker_refuses_to_start_when_outcomes_have_another_partition_count(
    stack: Any, tmp_path: Path
) -> None:
    fresh = stack.fresh("mismatch")
    settings = replace(fresh, topic_prefix=f"{fresh.topic_prefix}odd.", state_dir=tmp_path)
    topics = settings.topics
    TopicAdmin.from_settings(settings).ensure(
        [TopicSpec(topics.predictions, PARTITIONS, 1), TopicSpec(topics.outcomes, 6, 1)]
    )
    env = {**os.environ, **settings.to_env()}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "safeloop.services.cli.main",
            "process",
            "--web-port",
            str(free_port()),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert f"{topics.outcomes} 6" in done.stderr
    assert "SAFELOOP_PARTITIONS=6" in done.stderr and "--partitions 6" in done.stderr
    assert topics.repartition not in TopicAdmin.from_settings(settings).topic_names()


def test_two_workers_pair_misrouted_records_whichever_worker_reads_them(
    stack: Any, tmp_path: Path
) -> None:
    current = new_run(stack.fresh("partitioning_two"), tmp_path, window_ms=600_000)
    ports = [free_port(), free_port()]
    try:
        for index, port in enumerate(ports):
            current.start_worker(index, port)
        foreign = Publisher(current, "consistent_random")
        spread = Publisher(current, "murmur2_random", lambda k, i: i % PARTITIONS)
        total = 400
        for i in range(total):
            pid = f"two-{i}"
            event = prediction(pid, ts=now_ms())
            spread.publish(current.topics.predictions, pid, PREDICTION_CODEC.encode(event))
            foreign.publish(
                current.topics.outcomes, pid, OUTCOME_CODEC.encode(outcome(pid, truth=1.0))
            )
        spread.flush()
        foreign.flush()
        joined = (
            "SELECT count(), uniqExact(prediction_id) FROM feedback FINAL "
            "WHERE status = 'joined' AND prediction_id LIKE 'two-%'"
        )
        assert wait_for(lambda: current.query(joined)[0] == (total, total), 180), (
            current.query(joined),
            current.worker_log("worker-0"),
            current.worker_log("worker-1"),
        )
        assert current.count("SELECT count() FROM outcomes FINAL") == total
    finally:
        current.stop_all()
