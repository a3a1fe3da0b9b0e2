"""topic_specs: names, partition counts and topic configs; TopicAdmin's co-partitioning check."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from safeloop.infra.exceptions import KafkaAdminError
from safeloop.infra.kafka.topics import TopicAdmin, TopicSpec, changelog_spec, topic_specs
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


class _RefusingAdmin(_FakeAdmin):
    """Refuses each creation with the next error of `refusals`, then creates."""

    def __init__(self, refusals: list[int]) -> None:
        super().__init__({})
        self.refusals = refusals
        self.requests = 0

    def create_topics(self, new_topics: list[Any], **_: Any) -> dict[str, Any]:
        self.requests += 1
        code = self.refusals.pop(0) if self.refusals else None
        futures: dict[str, Any] = {}
        for topic in new_topics:
            if code is None:
                self.created.append(topic)
                self.topics[topic.topic] = SimpleNamespace(
                    partitions={p: SimpleNamespace(leader=1) for p in range(topic.num_partitions)},
                    error=None,
                )
                futures[topic.topic] = SimpleNamespace(result=lambda timeout: None)
            else:
                futures[topic.topic] = SimpleNamespace(result=_raiser(code))
        return futures


def _raiser(code: int) -> Any:
    def result(timeout: float) -> None:
        raise KafkaException(KafkaError(code, "refused"))

    return result


def test_ensure_retries_a_creation_refused_while_the_brokers_are_fenced() -> None:
    settings = Settings(partitions=2)
    # What the controller answers while every broker is fenced (a stalled machine).
    fake = _RefusingAdmin([KafkaError.INVALID_REPLICATION_FACTOR] * 2)
    created = TopicAdmin(fake, timeout=10.0).ensure(topic_specs(settings)[:1])  # type: ignore[arg-type]
    assert created == [settings.topics.predictions]
    assert fake.requests == 3


def test_ensure_gives_up_on_a_passing_refusal_after_its_timeout_naming_the_topic() -> None:
    settings = Settings(partitions=2)
    fake = _RefusingAdmin([KafkaError.INVALID_REPLICATION_FACTOR] * 100)
    with pytest.raises(KafkaAdminError) as raised:
        TopicAdmin(fake, timeout=1.0).ensure(topic_specs(settings)[:1])  # type: ignore[arg-type]
    assert raised.value.topic == settings.topics.predictions
    assert "retried for 1s" in str(raised.value)
    assert 2 <= fake.requests < 10


def test_ensure_does_not_retry_a_refusal_that_will_not_pass() -> None:
    settings = Settings(partitions=2)
    fake = _RefusingAdmin([KafkaError.TOPIC_AUTHORIZATION_FAILED] * 100)
    with pytest.raises(KafkaAdminError, match="creating topic"):
        TopicAdmin(fake, timeout=10.0).ensure(topic_specs(settings)[:1])  # type: ignore[arg-type]
    assert fake.requests == 1


def test_a_changelog_is_compacted_and_as_durable_as_the_topics_it_joins() -> None:
    spec = changelog_spec(Settings(partitions=6).with_kafka_brokers(3), "app-pending-changelog")
    assert (spec.partitions, spec.replication_factor) == (6, 3)
    assert dict(spec.config) == {"cleanup.policy": "compact", "min.insync.replicas": "2"}
    assert spec.co_partitioned
