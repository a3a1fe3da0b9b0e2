"""The join's topics, checked at start: one partition count for predictions, outcomes, the
repartition topic (created here when missing) and the tables' changelogs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from safeloop.infra.kafka.topics import TopicAdmin, changelog_spec, topic_specs
from safeloop.infra.settings import Settings
from safeloop.streams.exceptions import PartitionCountError

log = logging.getLogger(__name__)


def check_join_topics(
    admin: TopicAdmin, settings: Settings, changelogs: Sequence[str] = ()
) -> None:
    """Create the missing join topics; raise PartitionCountError, saying what to do, when the
    existing ones (changelogs included) and SAFELOOP_PARTITIONS disagree on the count."""
    topics = settings.topics
    joined = (topics.predictions, topics.outcomes, topics.repartition)
    counts = admin.partition_counts()
    found = {name: counts[name] for name in (*joined, *changelogs) if name in counts}
    if any(count != settings.partitions for count in found.values()):
        raise PartitionCountError(_advice(found, settings.partitions))
    # The changelogs too, before faust would: its creation gives up at the first refusal (all
    # brokers fenced for a second stopped a worker), and sets no min.insync.replicas.
    wanted = [spec for spec in topic_specs(settings) if spec.name in joined]
    created = admin.ensure([*wanted, *(changelog_spec(settings, name) for name in changelogs)])
    if created:
        log.info("created join topics %s with %s partitions", created, settings.partitions)


def _advice(found: dict[str, int], configured: int) -> str:
    listed = ", ".join(f"{name} {count}" for name, count in found.items())
    target = max([configured, *found.values()])
    return (
        "the join pairs a prediction and its outcome by partition, so predictions, outcomes, "
        "the repartition topic and the join's changelogs need one partition count, equal to "
        f"SAFELOOP_PARTITIONS; found {listed} (SAFELOOP_PARTITIONS={configured}). "
        f"Give every one of them {target} partitions (kafka-topics.sh --alter --topic NAME "
        f"--partitions {target}; a topic's partitions can only grow) and set "
        f"SAFELOOP_PARTITIONS={target}; pairs already waiting whose home partition moves end "
        "in feedback_late. Or delete and recreate them (safeloop topics create)."
    )
