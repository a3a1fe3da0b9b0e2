"""Table recovery through librdkafka (streams/changelog_restore.py), with a scripted consumer
and real RocksDB databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from _fake_restore_consumer import TOPIC, ChangelogRecord, ScriptedConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from safeloop.streams.changelog_restore import (
    BULK_LOAD_OPTIONS,
    DEFAULT_OPTIONS,
    RestoreTarget,
    restore_partitions,
    total_remaining,
    write_restored,
)

OFFSET_KEY = b"__faust\0offset__"


class FakeClock:
    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


@pytest.fixture
def dbs(tmp_path: Path) -> Iterator[list[rocksdict.Rdict]]:
    opened = [
        rocksdict.Rdict(str(tmp_path / str(p)), rocksdict.Options(raw_mode=True)) for p in (0, 1)
    ]
    yield opened
    for db in opened:
        db.close()


def _target(db: Any, partition: int, next_offset: int, last_offset: int) -> RestoreTarget:
    return RestoreTarget(TOPIC, partition, next_offset, last_offset, db, OFFSET_KEY)


def _items(db: rocksdict.Rdict) -> dict[bytes, bytes]:
    return {k: v for k, v in db.items() if k != OFFSET_KEY}


def _restore(consumer: ScriptedConsumer, targets: list[RestoreTarget], **kwargs: Any) -> Any:
    return asyncio.run(restore_partitions(consumer, targets, budget_s=60.0, **kwargs))


def test_restore_writes_each_partition_up_to_its_last_offset_with_that_offset(
    dbs: list[rocksdict.Rdict],
) -> None:
    consumer = ScriptedConsumer(
        [
            ChangelogRecord(0, 5, b"a", b"1"),
            ChangelogRecord(1, 0, b"x", b"9"),
            ChangelogRecord(0, 6, b"b", b"2"),
        ],
        # A delete, an overwrite, and a record past partition 0's last offset (written later,
        # by whoever owned it meanwhile): not restored here, faust's recovery decides on it.
        [
            ChangelogRecord(0, 7, b"a", None),
            ChangelogRecord(0, 8, b"b", b"3"),
            ChangelogRecord(0, 9, b"c", b"late"),
        ],
    )
    counted: list[int] = []
    written = _restore(
        consumer, [_target(dbs[0], 0, 5, 8), _target(dbs[1], 1, 0, 0)], on_written=counted.append
    )
    assert [(tp.partition, tp.offset) for tp in consumer.assigned] == [(0, 5), (1, 0)]
    assert written == {(TOPIC, 0): 8, (TOPIC, 1): 0}
    assert _items(dbs[0]) == {b"b": b"3"}
    assert dbs[0][OFFSET_KEY] == b"8"
    assert _items(dbs[1]) == {b"x": b"9"} and dbs[1][OFFSET_KEY] == b"0"
    assert sum(counted) == 5
    # Everything restored: it stopped asking without waiting for more.
    assert consumer.calls == 2


def test_a_partition_ending_short_of_its_last_offset_ends_its_restore(
    dbs: list[rocksdict.Rdict],
) -> None:
    # The highwater counts a transaction marker the consumer never delivers.
    eof = KafkaError(KafkaError._PARTITION_EOF)
    consumer = ScriptedConsumer(
        [ChangelogRecord(0, 0, b"a", b"1"), ChangelogRecord(0, 1, error=eof)]
    )
    assert _restore(consumer, [_target(dbs[0], 0, 0, 1)]) == {(TOPIC, 0): 0}
    assert consumer.calls == 1


def test_an_error_stops_the_restore_with_what_came_before_it_written(
    dbs: list[rocksdict.Rdict],
) -> None:
    refused = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    consumer = ScriptedConsumer(
        [
            ChangelogRecord(0, 0, b"a", b"1"),
            ChangelogRecord(1, 0, error=refused),
            ChangelogRecord(0, 1, b"b", b"2"),
        ],
        [ChangelogRecord(0, 2, b"c", b"3")],
    )
    written = _restore(consumer, [_target(dbs[0], 0, 0, 9), _target(dbs[1], 1, 0, 9)])
    assert written == {(TOPIC, 0): 0}
    assert _items(dbs[0]) == {b"a": b"1"} and dbs[0][OFFSET_KEY] == b"0"
    assert consumer.calls == 1


def test_a_failing_consumer_stops_the_restore_without_raising(dbs: list[rocksdict.Rdict]) -> None:
    consumer = ScriptedConsumer(
        [ChangelogRecord(0, 0, b"a", b"1")], KafkaException(KafkaError(KafkaError._TRANSPORT))
    )
    assert _restore(consumer, [_target(dbs[0], 0, 0, 9)]) == {(TOPIC, 0): 0}


def test_the_budget_stops_a_restore_that_is_not_done(dbs: list[rocksdict.Rdict]) -> None:
    consumer = ScriptedConsumer(*[[ChangelogRecord(0, i, b"k%d" % i, b"v")] for i in range(10)])
    written = asyncio.run(
        restore_partitions(
            consumer, [_target(dbs[0], 0, 0, 9)], budget_s=3.5, clock=FakeClock(step_s=1.0)
        )
    )
    # A second per reading of the clock, two readings a round: the deadline (1 + 3.5 s) has
    # passed after two rounds.
    assert written == {(TOPIC, 0): 1}
    assert dbs[0][OFFSET_KEY] == b"1"


def test_a_restore_hearing_nothing_gives_up_before_its_budget(dbs: list[rocksdict.Rdict]) -> None:
    consumer = ScriptedConsumer()  # a broker that answers nothing
    written = asyncio.run(
        restore_partitions(
            consumer,
            [_target(dbs[0], 0, 0, 9)],
            budget_s=60.0,
            idle_limit_s=3.0,
            clock=FakeClock(step_s=1.0),
        )
    )
    assert written == {}
    assert consumer.calls == 2


def test_a_refused_assignment_stops_the_restore_without_raising(
    dbs: list[rocksdict.Rdict],
) -> None:
    class Refusing(ScriptedConsumer):
        def assign(self, partitions: list[TopicPartition]) -> None:
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG))

    consumer = Refusing([ChangelogRecord(0, 0, b"a", b"1")])
    assert _restore(consumer, [_target(dbs[0], 0, 0, 9)]) == {}
    assert consumer.calls == 0


def test_nothing_to_restore_opens_no_assignment(dbs: list[rocksdict.Rdict]) -> None:
    consumer = ScriptedConsumer([ChangelogRecord(0, 0)])
    assert _restore(consumer, [_target(dbs[0], 0, 5, 4)]) == {}
    assert consumer.assigned == [] and consumer.calls == 0


def test_remaining_counts_offsets_left_including_the_last() -> None:
    targets = [_target(None, 0, 0, 9), _target(None, 1, 5, 4), _target(None, 2, -0, -1)]
    assert [t.remaining for t in targets] == [10, 0, 0]
    assert total_remaining(targets) == 10


def test_write_restored_is_one_batch_with_the_offset(dbs: list[rocksdict.Rdict]) -> None:
    dbs[0][b"gone"] = b"x"
    write_restored(dbs[0], OFFSET_KEY, [(b"a", b"1"), (b"gone", None)], 41)
    assert _items(dbs[0]) == {b"a": b"1"}
    assert dbs[0][OFFSET_KEY] == b"41"


class OptionsSpy:
    """A partition database recording the options set on it."""

    def __init__(self, db: rocksdict.Rdict) -> None:
        self.db, self.options_set = db, []

    def write(self, write_batch: rocksdict.WriteBatch) -> None:
        self.db.write(write_batch)

    def set_options(self, options: dict[str, str]) -> None:
        self.db.set_options(options)  # RocksDB takes them: the names and values are valid
        self.options_set.append(options)


def test_level0_compaction_waits_for_the_end_of_the_restore_even_a_failed_one(
    dbs: list[rocksdict.Rdict],
) -> None:
    spy = OptionsSpy(dbs[0])
    _restore(ScriptedConsumer([ChangelogRecord(0, 0, b"a", b"1")]), [_target(spy, 0, 0, 0)])
    assert spy.options_set == [BULK_LOAD_OPTIONS, DEFAULT_OPTIONS]
    spy.options_set.clear()

    class Exploding(ScriptedConsumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
            raise RuntimeError("not a Kafka error")

    with pytest.raises(RuntimeError):
        _restore(Exploding(), [_target(spy, 0, 1, 5)])
    assert spy.options_set == [BULK_LOAD_OPTIONS, DEFAULT_OPTIONS]


def test_a_database_closed_during_the_restore_ends_it_quietly(tmp_path: Path) -> None:
    # A rebalance cancelling the restore can close the partition's database before the
    # restore sets its compaction back.
    db = rocksdict.Rdict(str(tmp_path / "closed"), rocksdict.Options(raw_mode=True))

    class ClosingConsumer(ScriptedConsumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
            db.close()
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    assert _restore(ClosingConsumer(), [_target(db, 0, 0, 9)]) == {}
