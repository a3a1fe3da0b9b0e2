"""Guard summaries shared between the metrics instances of one consumer group.

Each instance reads some partitions of `predictions`; the canary must be judged on all of
them. Every instance publishes, per partition it reads, the `HealthSummary` of each served
(model, version, route) to the compacted `metrics-summaries` topic (key: the partition), and
reads everybody's. The judge (the instance reading partition 0, so Kafka's group protocol
elects it) merges its own partitions' windows with the others' newest summaries.

On a rebalance the partition's last published summary stays on the topic: the judge keeps
using it until the new owner has rebuilt the window from the log (`rebuild`) and published
its own, so a handover never leaves the guard blind. An instance that dies leaves its last
summaries too; the group hands its partitions over after `session.timeout.ms`.

The payload is JSON: it is internal state of one service, read only by its own instances
(a different version of the summary shape is refused by `version`, not resolved).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException, Producer

from safeloop.schemas.events import Route
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.metrics.health_summary import HealthSummary
from safeloop.services.metrics.keyed import WindowKey

logger = logging.getLogger(__name__)

VERSION = 1
Summaries = Mapping[int, Mapping[WindowKey, HealthSummary]]


@dataclass(frozen=True, slots=True)
class Published:
    """One partition's summaries as an instance last published them."""

    instance: str
    published_ms: int
    summaries: dict[WindowKey, HealthSummary]


@dataclass(slots=True)
class ExchangeCounts:
    published: int = 0
    publish_failures: int = 0
    received: int = 0
    refused: int = 0


class SummaryExchange:
    """Publishes this instance's partition summaries; keeps the others' newest per partition."""

    def __init__(
        self,
        producer: Producer,
        reader: BroadcastReader,
        topic: str,
        instance: str,
        publish_interval_ms: int = 200,
    ) -> None:
        self._producer = producer
        self._reader = reader
        self._topic = topic
        self.instance = instance
        self.publish_interval_ms = publish_interval_ms
        self._published_at = 0.0
        self._latest: dict[int, Published] = {}
        self.counts = ExchangeCounts()

    def start(self) -> None:
        """Assign every partition of the topic from its start (the compacted newest state)."""
        self._reader.assign_from_beginning()

    def due(self) -> bool:
        """Whether `publish_interval_ms` has passed since the last publish."""
        return (time.monotonic() - self._published_at) * 1000 >= self.publish_interval_ms

    def publish(self, summaries: Summaries) -> None:
        """Send each partition's summaries (call when `due`)."""
        self._published_at = time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        for partition, by_key in summaries.items():
            value = {
                "version": VERSION,
                "instance": self.instance,
                "published_ms": now_ms,
                "partition": partition,
                "keys": [
                    {
                        "model": key.model_name,
                        "version": key.model_version,
                        "route": key.route.value,
                        "health": summary.to_json(),
                    }
                    for key, summary in by_key.items()
                ],
            }
            try:
                self._producer.produce(
                    self._topic, key=str(partition).encode(), value=json.dumps(value).encode()
                )
                self.counts.published += 1
            except (BufferError, KafkaException) as exc:
                self.counts.publish_failures += 1
                logger.warning("guard summary of partition %s not sent: %s", partition, exc)
        self._producer.poll(0)

    def poll(self) -> int:
        """Read what the others published since the last call; returns how many records."""
        messages = self._reader.poll(0.0)
        for message in messages:
            value = message.value()
            if value is None or message.error() is not None:
                continue
            published = _decode(value)
            if published is None:
                self.counts.refused += 1
                continue
            partition, entry = published
            self.counts.received += 1
            if entry.instance != self.instance:
                self._latest[partition] = entry
        return len(messages)

    def others(self, owned: frozenset[int]) -> dict[int, dict[WindowKey, HealthSummary]]:
        """The newest summaries of the partitions this instance does not read."""
        return {p: e.summaries for p, e in self._latest.items() if p not in owned}

    def close(self) -> None:
        self._producer.flush(5)
        self._reader.close()


def _decode(value: bytes) -> tuple[int, Published] | None:
    try:
        raw = json.loads(value)
        if raw.get("version") != VERSION:
            return None
        summaries = {
            WindowKey(str(k["model"]), str(k["version"]), Route(k["route"])): (
                HealthSummary.from_json(k["health"])
            )
            for k in raw["keys"]
        }
        return int(raw["partition"]), Published(
            str(raw["instance"]), int(raw["published_ms"]), summaries
        )
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("unreadable guard summary: %s", exc)
        return None
