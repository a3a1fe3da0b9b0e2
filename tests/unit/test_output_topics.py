"""OutputTopics' flush barrier: it waits for what was sent before it, re-sends failures, and is
not held up by records sent while it waits (the producer's queue is never empty under load)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from safeloop.streams.exceptions import StreamError
from safeloop.streams.outputs import OutputTopics


@dataclass
class FakeMessage:
    _topic: str
    _key: bytes | None
    _value: bytes | None
    _partition: int
    _offset: int

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> None:
        return None


@dataclass
class FakeProducer:
    """Queues records; each poll answers what was queued before it (failing what `fail` says
    once), then runs `on_poll` (a record sent meanwhile by the stream, say)."""

    queued: list[tuple[Callable[..., None], FakeMessage]] = field(default_factory=list)
    produced: list[tuple[str, bytes | None]] = field(default_factory=list)
    fail_once: set[bytes] = field(default_factory=set)
    answering: bool = True
    on_poll: Callable[[], None] | None = None
    polls: int = 0

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int = 0, **kw: Any
    ) -> None:
        offset = len(self.produced)
        self.produced.append((topic, key))
        self.queued.append((kw["on_delivery"], FakeMessage(topic, key, value, partition, offset)))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        answered, self.queued = (self.queued, []) if self.answering else ([], self.queued)
        for callback, message in answered:
            if message.key() in self.fail_once:
                self.fail_once.discard(message.key() or b"")
                callback("broker said no", message)
            else:
                callback(None, message)
        if self.on_poll is not None:
            self.on_poll()
        return len(answered)

    def flush(self, timeout: float = 0) -> int:
        # librdkafka's: poll until nothing is queued or in flight, or the time is up.
        for _ in range(100):
            if not self.queued:
                break
            self.poll()
        return len(self.queued)


def test_the_barrier_passes_though_records_keep_arriving_while_it_waits() -> None:
    producer = FakeProducer()
    outputs = OutputTopics({}, producer=producer)
    for i in range(3):
        outputs.send("feedback", f"before-{i}".encode(), b"v")
    # Each poll, the stream sends one more record: the queue is never empty.
    producer.on_poll = lambda: outputs.send("feedback", f"during-{producer.polls}".encode(), b"v")
    outputs.flush(timeout_s=5)
    assert producer.polls == 1
    assert producer.queued, "records sent during the barrier are still outstanding"


def test_a_failed_delivery_is_re_sent_and_waited_for() -> None:
    producer = FakeProducer(fail_once={b"k1"})
    outputs = OutputTopics({}, producer=producer)
    outputs.send("feedback", b"k0", b"v")
    outputs.send("feedback", b"k1", b"v")
    outputs.flush(timeout_s=5)
    assert [key for _, key in producer.produced] == [b"k0", b"k1", b"k1"]
    assert outputs.failures == 1
    assert not producer.queued


def test_records_a_timed_out_barrier_waited_for_are_owed_by_the_next_one() -> None:
    producer = FakeProducer(answering=False)
    outputs = OutputTopics({}, producer=producer)
    outputs.send("feedback", b"k0", b"v")
    with pytest.raises(StreamError, match="1 output records not yet acknowledged"):
        outputs.flush(timeout_s=0.01)
    # Nothing new was sent, but the next barrier still waits for k0.
    with pytest.raises(StreamError, match="1 output records"):
        outputs.flush(timeout_s=0.01)
    producer.answering = True
    outputs.flush(timeout_s=5)


def test_acknowledged_changelog_offsets_are_tracked_per_partition() -> None:
    producer = FakeProducer()
    outputs = OutputTopics({}, producer=producer)
    outputs.track_offsets({"changelog"})
    outputs.send("changelog", b"a", b"v", partition=1)
    outputs.send("feedback", b"b", b"v")
    outputs.send("changelog", b"c", b"v", partition=1)
    outputs.flush(timeout_s=5)
    assert outputs.take_offsets() == {("changelog", 1): 2}
    assert outputs.take_offsets() == {}


def test_send_many_is_waited_for_as_each_send_and_failures_are_re_sent() -> None:
    producer = FakeProducer(fail_once={b"k2"})
    outputs = OutputTopics({}, producer=producer)
    outputs.send_many("changelog", [(b"k1", b"a"), (b"k2", b"b")], partition=3)
    producer.answering = False
    with pytest.raises(StreamError):
        outputs.flush(timeout_s=0.01)
    producer.answering = True
    outputs.flush(timeout_s=5)
    # The failed record went again, and the barrier waited for both.
    assert producer.produced == [("changelog", b"k1"), ("changelog", b"k2"), ("changelog", b"k2")]
    assert outputs.sent == 2


def test_send_many_counts_what_it_queued_before_a_barrier_can_look() -> None:
    producer = FakeProducer()
    outputs = OutputTopics({}, producer=producer)
    looked: list[bool] = []

    def produce(topic: str, value: bytes | None, key: bytes | None, **kw: Any) -> None:
        # A barrier swapping the epoch between two queued records still waits for both.
        if key == b"k2":
            producer.answering = False
            with pytest.raises(StreamError):
                outputs.flush(timeout_s=0.01)
            looked.append(True)
            producer.answering = True
        FakeProducer.produce(producer, topic, value, key, **kw)

    producer.produce = produce  # type: ignore[method-assign]
    outputs.send_many("feedback", [(b"k1", b"a"), (b"k2", b"b")])
    assert looked == [True]
    outputs.flush(timeout_s=5)
    assert [key for _, key in producer.produced] == [b"k1", b"k2"]
