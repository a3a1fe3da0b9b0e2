"""The topics safeloop needs (TopicSpec) and TopicAdmin, which creates and inspects them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from confluent_kafka import KafkaError, KafkaException

# confluent_kafka.admin has no __all__, so mypy sees ConfigResource/ResourceType as unexported.
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

from safeloop.infra.exceptions import KafkaAdminError
from safeloop.infra.kafka.admin_retry import until_done
from safeloop.infra.kafka.clients import admin_client
from safeloop.infra.settings import Settings, local_min_insync_replicas

log = logging.getLogger(__name__)

_DAY_MS = 24 * 60 * 60 * 1000
_MINUTE_MS = 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic as safeloop wants it: partitions, replication and topic-level config."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Keyed-join inputs: an existing topic with another partition count is an error, not a warning.
    co_partitioned: bool = False


@dataclass(frozen=True)
class TopicDescription:
    """A topic as it exists on the cluster."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict, hash=False)


def _deleted_after(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


def _compacted() -> dict[str, str]:
    """Keep the latest record per key, and make compaction actually run on a small topic."""
    return {
        "cleanup.policy": "compact",
        # The active segment is never cleaned: roll it often so superseded records become cleanable.
        "segment.ms": str(10 * _MINUTE_MS),
        # These topics are tiny, so clean as soon as a tenth of the log is superseded...
        "min.cleanable.dirty.ratio": "0.1",
        "min.compaction.lag.ms": "0",
        # ...and at the latest an hour after a record was superseded.
        "max.compaction.lag.ms": str(60 * _MINUTE_MS),
        # A deleted key (tombstone) stays visible a day, so a replica that was down sees it.
        "delete.retention.ms": str(_DAY_MS),
    }


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic in `settings.topics`, in the order of `TopicNames.all()`."""
    names = settings.topics
    data = settings.partitions
    durability = _durability(settings.replication_factor)

    def spec(name: str, partitions: int, config: dict[str, str], joined: bool = False) -> TopicSpec:
        merged = MappingProxyType({**config, **durability})
        return TopicSpec(name, partitions, settings.replication_factor, merged, joined)

    # Data topics scale with settings.partitions; control-plane topics are small and want one
    # partition, so every reader sees one total order.
    return [
        spec(names.predictions, data, _deleted_after(7), joined=True),
        spec(names.outcomes, data, _deleted_after(7), joined=True),
        spec(names.feedback, data, _deleted_after(7)),
        spec(names.control, 1, _compacted()),
        spec(names.replica_status, 1, _compacted()),
        spec(names.retraining, 1, _deleted_after(7)),
        # Dead letters wait for a human: keep them a month.
        spec(names.dead_letter, data, _deleted_after(30)),
        # The join's re-routed records: read by the processor as soon as written, kept like
        # its sources so a processor that was down a while still finds them.
        spec(names.repartition, data, _deleted_after(7), joined=True),
        # Newest guard summary per partition of predictions; one partition: the judge reads all.
        spec(names.metrics_summaries, 1, _compacted()),
    ]


def changelog_spec(settings: Settings, name: str) -> TopicSpec:
    """A stream table's changelog as faust would create it (compacted, one partition per table
    partition), with the durability of safeloop's own topics, which faust does not set."""
    config = {"cleanup.policy": "compact", **_durability(settings.replication_factor)}
    return TopicSpec(
        name, settings.partitions, settings.replication_factor, MappingProxyType(config), True
    )


def _durability(replication_factor: int) -> dict[str, str]:
    # With acks=all a write must reach all replicas but one: one node may be down (a restart,
    # a crash) without stopping writes, and an acknowledged write survives losing any one.
    if replication_factor <= 1:
        return {}
    return {"min.insync.replicas": str(local_min_insync_replicas(replication_factor))}


class TopicAdmin:
    """Idempotent topic creation and inspection over confluent-kafka's AdminClient."""

    def __init__(self, admin: AdminClient, timeout: float = 30.0) -> None:
        self._admin = admin
        self._timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 30.0) -> TopicAdmin:
        return cls(admin_client(settings), timeout)

    def ensure(self, specs: Sequence[TopicSpec]) -> list[str]:
        """Create the missing topics and return their names; existing ones are checked."""
        existing = self._partition_counts()
        for spec in specs:
            if spec.name in existing:
                self._check_partitions(spec, existing[spec.name])
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return []
        by_name = {spec.name: spec for spec in missing}
        created = until_done(
            lambda names: self._create([by_name[name] for name in names]),
            list(by_name),
            lambda name: f"creating topic {name}",
            retry_for_s=self._timeout,
            retry_every_s=_CREATE_RETRY_EVERY_S,
            answer_timeout_s=self._timeout,
            passing=_PASSING_CREATE_ERRORS,
            # Another process created it between our listing and our request: fine.
            settled=(KafkaError.TOPIC_ALREADY_EXISTS,),
            topic_of=lambda name: name,
        )
        for name in created:
            log.info("created topic %s", name)
        self._wait_until_visible(created)
        return created

    def _create(self, specs: Sequence[TopicSpec]) -> Mapping[str, Future[None]]:
        """One CreateTopics request: a future per topic name."""
        new_topics = [
            NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config))
            for s in specs
        ]
        return self._admin.create_topics(
            new_topics, operation_timeout=self._timeout, request_timeout=self._timeout
        )

    def delete(self, names: Iterable[str]) -> None:
        """Delete topics; ones that do not exist are ignored."""
        names = list(names)
        if not names:
            return
        futures = self._admin.delete_topics(names, operation_timeout=self._timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=self._timeout)
            except KafkaException as exc:
                if _error_code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise KafkaAdminError(f"deleting topic {name} failed: {exc}", topic=name) from exc
            log.info("deleted topic %s", name)

    def partition_counts(self) -> dict[str, int]:
        """Topic name -> partition count, for every topic on the cluster."""
        return self._partition_counts()

    def topic_names(self, include_internal: bool = False) -> list[str]:
        """Sorted topic names; internal ones (`__consumer_offsets`, ...) only if asked."""
        names = self._partition_counts()
        return sorted(n for n in names if include_internal or not n.startswith("__"))

    def describe(self, names: Iterable[str]) -> dict[str, TopicDescription]:
        """Partitions, replication factor and effective config of existing topics."""
        metadata = self._metadata()
        wanted = [n for n in names if n in metadata.topics]
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in wanted]
        configs: dict[str, dict[str, str]] = {}
        if resources:
            for resource, future in self._admin.describe_configs(
                resources, request_timeout=self._timeout
            ).items():
                try:
                    entries = future.result(timeout=self._timeout)
                except KafkaException as exc:
                    name = resource.name
                    raise KafkaAdminError(f"describing {name} failed: {exc}", topic=name) from exc
                configs[resource.name] = {k: e.value for k, e in entries.items() if e.value}
        descriptions: dict[str, TopicDescription] = {}
        for name in wanted:
            partitions = metadata.topics[name].partitions
            replicas = min((len(p.replicas) for p in partitions.values()), default=0)
            descriptions[name] = TopicDescription(name, len(partitions), replicas, configs[name])
        return descriptions

    def _check_partitions(self, spec: TopicSpec, actual: int) -> None:
        if actual == spec.partitions:
            return
        if spec.co_partitioned:
            raise KafkaAdminError(
                f"topic {spec.name} has {actual} partitions but {spec.partitions} are configured "
                "(SAFELOOP_PARTITIONS); predictions, outcomes and join-repartition must have the "
                f"same partition count for the join. Set SAFELOOP_PARTITIONS={actual} (and give "
                "the others as many partitions) or recreate the topics.",
                topic=spec.name,
            )
        log.warning(
            "topic %s has %d partitions, not the configured %d; leaving it as it is",
            spec.name,
            actual,
            spec.partitions,
        )

    def _metadata(self) -> Any:
        try:
            return self._admin.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise KafkaAdminError(f"listing topics failed: {exc}") from exc

    def _partition_counts(self) -> dict[str, int]:
        return {name: len(t.partitions) for name, t in self._metadata().topics.items()}

    def _wait_until_visible(self, names: Sequence[str]) -> None:
        """Creation returns before every broker's metadata has the topic; wait for leaders."""
        deadline = time.monotonic() + self._timeout
        pending = set(names)
        while pending:
            topics = self._metadata().topics
            pending = {
                name
                for name in pending
                if name not in topics
                or topics[name].error is not None
                or any(p.leader < 0 for p in topics[name].partitions.values())
            }
            if not pending:
                return
            if time.monotonic() > deadline:
                raise KafkaAdminError(
                    f"topics {sorted(pending)} were created but have no leader after "
                    f"{self._timeout:.0f}s",
                    topic=sorted(pending)[0],
                )
            time.sleep(0.1)


# Refusals that pass on their own: while the brokers are fenced or not yet registered with the
# controller (a stalled or starting cluster) there are too few to place the replicas on.
_PASSING_CREATE_ERRORS = (
    KafkaError.INVALID_REPLICATION_FACTOR,
    KafkaError.NOT_CONTROLLER,
    KafkaError.REQUEST_TIMED_OUT,
)
_CREATE_RETRY_EVERY_S = 0.5


def _error_code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None
