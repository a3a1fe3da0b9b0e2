"""topic_specs: names, partition counts and topic configs; TopicAdmin's co-partitioning check."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from safeloop.infra.exceptions import KafkaAdminError
from safeloop.infra.kafka.topics import TopicAdmin, TopicSpec, topic_specs
from safeloop.infra.settings import Settings


def _by_name(settings: Settings) -> dict[str, TopicSpec]:
    return {spec.name: spec for spec in topic_specs(settings)}


def test_every_topic_has_a_spec_with_the_prefix() -> None:
    settings = Settings(topic_prefix="t1-")
    names = [spec.name for spec in topic_specs(settings)]
    assert names == list(settings.topics.all())
    assert all(name.startswith("t1-") for name in names)


def test_predictions_and_outcomes_are_co_partitioned() -> None:
    settings = Settings(partitions=6)
    specs = _by_name(settings)
    predictions, outcomes = specs["predictions"], specs["outcomes"]
    repartition = specs["join-repartition"]
    assert predictions.partitions == outcomes.partitions == repartition.partitions == 6
    assert predictions.co_partitioned and outcomes.co_partitioned and repartition.co_partitioned
    assert not specs["feedback"].co_partitioned


@pytest.mark.parametrize("name", ["control", "replica-status"])
def test_control_topics_are_compacted_and_actually_cleaned(name: str) -> None:
    config = _by_name(Settings())[name].config
    assert config["cleanup.policy"] == "compact"
    # Compaction only touches closed segments: the active one must roll on a timer.
    assert int(config["segment.ms"]) <= 60 * 60 * 1000
    assert float(config["min.cleanable.dirty.ratio"]) <= 0.5
    assert int(config["max.compaction.lag.ms"]) > 0


def test_control_is_a_single_partition_broadcast() -> None:
    assert _by_name(Settings(partitions=8))["control"].partitions == 1


def test_dead_letters_are_kept_longer_than_feedback() -> None:
    specs = _by_name(Settings())
    dead_letter = int(specs["dead-letter"].config["retention.ms"])
    assert dead_letter > int(specs["feedback"].config["retention.ms"])
    assert specs["retraining"].config["cleanup.policy"] == "delete"


def test_replication_factor_comes_from_settings() -> None:
    single = topic_specs(Settings(replication_factor=1))
    triple = topic_specs(Settings(replication_factor=3))
    assert {spec.replication_factor for spec in triple} == {3}
    assert all(spec.config["min.insync.replicas"] == "2" for spec in triple)
    assert all("min.insync.replicas" not in spec.config for spec in single)


@pytest.mark.parametrize(
    ("brokers", "replicas", "min_isr"), [(1, 1, None), (2, 2, "1"), (5, 3, "2")]
)
def test_a_local_cluster_replicates_as_far_as_its_nodes_allow(
    brokers: int, replicas: int, min_isr: str | None
) -> None:
    specs = topic_specs(Settings().with_kafka_brokers(brokers))
    assert {spec.replication_factor for spec in specs} == {replicas}
    assert {spec.config.get("min.insync.replicas") for spec in specs} == {min_isr}


def test_specs_are_hashable_and_read_only() -> None:
    spec = topic_specs(Settings())[0]
    assert spec in {spec}
    with pytest.raises(TypeError):
        spec.config["cleanup.policy"] = "compact"  # type: ignore[index]


class _FakeAdmin:
    """Answers list_topics like AdminClient; records whether creation was attempted."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.topics = {
            name: SimpleNamespace(partitions=dict.fromkeys(range(count)), error=None)
            for name, count in partitions.items()
        }
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics=self.topics)

    def create_topics(self, new_topics: list[Any], **_: Any) -> dict[str, Any]:
        self.created.extend(new_topics)
        return {}


def test_ensure_refuses_predictions_with_another_partition_count() -> None:
    settings = Settings(partitions=4)
    fake = _FakeAdmin({settings.topics.predictions: 3})
    with pytest.raises(KafkaAdminError) as raised:
        TopicAdmin(fake).ensure(topic_specs(settings))  # type: ignore[arg-type]
    assert raised.value.topic == settings.topics.predictions
    assert fake.created == []  # nothing is created when the check fails


def test_ensure_tolerates_other_topics_with_another_partition_count() -> None:
    settings = Settings(partitions=4)
    existing = {spec.name: spec.partitions for spec in topic_specs(settings)}
    existing[settings.topics.feedback] = 12
    fake = _FakeAdmin(existing)
    assert TopicAdmin(fake).ensure(topic_specs(settings)) == []  # type: ignore[arg-type]
    assert fake.created == []
