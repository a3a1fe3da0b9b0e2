"""Where a restarted metrics consumer re-reads from, and when its windows count as rebuilt."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from safeloop.services.monitor.rebuild import ReplayStart, ReplayTracker, replay_starts


class FakeConsumer:
    """Committed offsets and offsets-for-times per partition, as a broker would answer."""

    def __init__(self, committed: dict[int, int], at_time: dict[int, int]) -> None:
        self._committed = committed
        self._at_time = at_time
        self.asked_ms: set[int] = set()

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self._committed[tp.partition])
            for tp in partitions
        ]

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float
    ) -> list[TopicPartition]:
        self.asked_ms |= {tp.offset for tp in partitions}
        return [
            TopicPartition(tp.topic, tp.partition, self._at_time[tp.partition]) for tp in partitions
        ]


def test_only_partitions_with_records_before_their_commit_are_replayed() -> None:
    consumer = FakeConsumer(
        # 0: replay 40..100; 1: never committed (read from the start anyway);
        # 2: no record since from_ms; 3: the first record since is already uncommitted.
        committed={0: 100, 1: -1001, 2: 50, 3: 10},
        at_time={0: 40, 1: 0, 2: -1, 3: 12},
    )
    starts = replay_starts(consumer, "predictions", [0, 1, 2, 3], 1_000)  # type: ignore[arg-type]
    assert starts == [ReplayStart(0, 40, 100)]
    assert consumer.asked_ms == {1_000}


def test_replayed_records_are_those_before_the_commit_and_the_rebuild_ends_there() -> None:
    tracker = ReplayTracker()
    tracker.begin([ReplayStart(0, 40, 100), ReplayStart(1, 5, 7)])
    assert tracker.is_replay(0, 40) and tracker.is_replay(0, 99)
    assert not tracker.is_replay(0, 100)
    assert not tracker.is_replay(2, 0), "a partition without a replay reads new records"
    assert tracker.replayed == 2
    tracker.reached({0: 100, 1: 6})
    assert tracker.pending() == [1] and not tracker.done
    # A transaction marker at offset 6: the position passes the commit without a record at 6.
    tracker.reached({1: 8})
    assert tracker.done


def test_a_revoked_partition_stops_replaying() -> None:
    tracker = ReplayTracker()
    tracker.begin([ReplayStart(3, 0, 10)])
    tracker.drop([3])
    assert tracker.done and not tracker.is_replay(3, 1)


def test_released_partitions_are_re_read_from_where_reading_got_not_the_window_start() -> None:
    consumer = FakeConsumer(
        # 0: read to 300, committed 100 (nobody read on); 1: read to 300, another member
        # committed 500 meanwhile; 2: not released, rebuilt from from_ms as after a restart.
        committed={0: 100, 1: 500, 2: 100},
        at_time={2: 40},
    )
    starts = replay_starts(
        consumer,  # type: ignore[arg-type]
        "predictions",
        [0, 1, 2],
        1_000,
        {0: 300, 1: 300},
    )
    assert starts == [ReplayStart(1, 300, 500), ReplayStart(2, 40, 100)]


def test_released_partitions_are_caught_up_even_when_rebuilding_is_off() -> None:
    consumer = FakeConsumer(committed={0: 500, 1: 100}, at_time={})
    starts = replay_starts(consumer, "predictions", [0, 1], None, {0: 300})  # type: ignore[arg-type]
    assert starts == [ReplayStart(0, 300, 500)]
    assert consumer.asked_ms == set()
