"""A confluent-kafka consumer reading changelog records, scripted: what the librdkafka restore
(streams/changelog_restore.py) reads in unit tests."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, TopicPartition

TOPIC = "app-pending-predictions-changelog"


class ChangelogRecord:
    """A consumed changelog record (or an error), as confluent-kafka's Message answers."""

    def __init__(
        self,
        partition: int,
        offset: int,
        key: bytes = b"",
        value: bytes | None = b"",
        error: KafkaError | None = None,
        topic: str = TOPIC,
    ) -> None:
        self._partition, self._offset, self._topic = partition, offset, topic
        self._key, self._value, self._error = key, value, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class ScriptedConsumer:
    """Answers each consume call with the next list of records (or raises the next exception);
    then nothing."""

    def __init__(self, *rounds: list[Any] | Exception) -> None:
        self.rounds = list(rounds)
        self.assigned: list[TopicPartition] = []
        self.calls = 0
        self.closed = False

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        self.calls += 1
        if not self.rounds:
            return []
        answer = self.rounds.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True
