"""The worker's start check: the join's topics share one partition count, or it refuses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from safeloop.infra.kafka.topics import TopicAdmin
from safeloop.infra.settings import Settings
from safeloop.streams.exceptions import PartitionCountError
from safeloop.streams.topology import check_join_topics


class _FakeAdmin:
    """Answers list_topics like AdminClient; records the topics created."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.topics = {
            name: SimpleNamespace(partitions={p: SimpleNamespace(leader=1) for p in range(n)})
            for name, n in partitions.items()
        }
        for topic in self.topics.values():
            topic.error = None
        self.created: list[str] = []
        self.configs: dict[str, dict[str, str]] = {}

    def list_topics(self, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics=self.topics)

    def create_topics(self, new_topics: list[Any], **_: Any) -> dict[str, Any]:
        done: dict[str, Any] = {}
        for topic in new_topics:
            self.created.append(topic.topic)
            self.configs[topic.topic] = dict(topic.config)
            self.topics[topic.topic] = SimpleNamespace(
                partitions={p: SimpleNamespace(leader=1) for p in range(topic.num_partitions)},
                error=None,
            )
            done[topic.topic] = SimpleNamespace(result=lambda timeout: None)
        return done


SETTINGS = Settings(topic_prefix="t.", partitions=4)


def admin(fake: _FakeAdmin) -> TopicAdmin:
    return TopicAdmin(fake)  # type: ignore[arg-type]


def test_the_missing_repartition_topic_is_created_with_the_same_count() -> None:
    topics = SETTINGS.topics
    fake = _FakeAdmin({topics.predictions: 4, topics.outcomes: 4})
    check_join_topics(admin(fake), SETTINGS)
    assert fake.created == [topics.repartition]
    assert len(fake.topics[topics.repartition].partitions) == 4


def test_missing_changelogs_are_created_compacted_before_faust_would() -> None:
    topics = SETTINGS.topics
    fake = _FakeAdmin({topics.predictions: 4, topics.outcomes: 4, topics.repartition: 4})
    check_join_topics(admin(fake), SETTINGS, ["t.app-pending-changelog"])
    assert fake.created == ["t.app-pending-changelog"]
    assert len(fake.topics["t.app-pending-changelog"].partitions) == 4
    assert fake.configs["t.app-pending-changelog"]["cleanup.policy"] == "compact"


def test_outcomes_with_another_count_are_refused_with_what_to_do() -> None:
    topics = SETTINGS.topics
    fake = _FakeAdmin({topics.predictions: 4, topics.outcomes: 6, topics.repartition: 4})
    with pytest.raises(PartitionCountError) as refused:
        check_join_topics(admin(fake), SETTINGS)
    message = str(refused.value)
    assert f"{topics.outcomes} 6" in message and f"{topics.predictions} 4" in message
    assert "--partitions 6" in message and "SAFELOOP_PARTITIONS=6" in message
    assert fake.created == []


def test_a_changelog_with_another_count_is_refused() -> None:
    topics = SETTINGS.topics
    fake = _FakeAdmin(
        {topics.predictions: 4, topics.outcomes: 4, topics.repartition: 4, "t.app-changelog": 2}
    )
    with pytest.raises(PartitionCountError, match=r"t\.app-changelog 2"):
        check_join_topics(admin(fake), SETTINGS, ["t.app-changelog"])


def test_topics_agreeing_with_each_other_but_not_with_the_setting_are_refused() -> None:
    topics = SETTINGS.topics
    fake = _FakeAdmin({topics.predictions: 8, topics.outcomes: 8, topics.repartition: 8})
    with pytest.raises(PartitionCountError, match="SAFELOOP_PARTITIONS=8"):
        check_join_topics(admin(fake), SETTINGS)
