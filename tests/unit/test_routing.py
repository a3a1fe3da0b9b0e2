"""The routing decision: a record off its prediction_id's home partition is re-routed (once,
keyed by prediction_id, to its home partition, with its kind) and joined when it comes back."""

from __future__ import annotations

import time

from _stream_events import outcome, prediction

from safeloop.infra.kafka.dead_letters import SourceRecord
from safeloop.infra.kafka.partitioner import default_partition
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import FeedbackStatus
from safeloop.streams.join import JoinWindow
from safeloop.streams.observability import StreamSnapshot, render_prometheus
from safeloop.streams.processor import BatchProcessor
from safeloop.streams.routing import KIND_HEADER, HomePartitions, RecordKind, Reroute
from safeloop.streams.sink import SinkStats
from safeloop.streams.state import EarlyOutcome, InMemoryStateStore, PendingPrediction
from safeloop.streams.windows import JoinWindows

NOW_MS = int(time.time() * 1000)
PARTITIONS = 4


def make_processor() -> BatchProcessor:
    join = JoinWindow(
        InMemoryStateStore[PendingPrediction](),
        InMemoryStateStore[EarlyOutcome](),
        JoinWindows(default_window_ms=60_000),
        lambda: NOW_MS,
    )
    return BatchProcessor(
        join,
        "predictions",
        "outcomes",
        "test",
        clock_ms=lambda: NOW_MS,
        repartition_topic="repartition",
        partitions=PARTITIONS,
    )


def home(pid: str) -> int:
    return default_partition(pid.encode(), PARTITIONS)


def away(pid: str) -> int:
    return (home(pid) + 1) % PARTITIONS


def back(reroute: Reroute, offset: int = 0) -> SourceRecord:
    """The re-routed copy as the processor reads it from the repartition topic."""
    return SourceRecord(
        "repartition",
        reroute.partition,
        offset,
        reroute.key,
        reroute.value,
        tuple((name, bytes(value or b"")) for name, value in reroute.headers),
    )


def test_the_home_partition_is_the_java_default_partitioners_choice() -> None:
    homes = HomePartitions(PARTITIONS)
    assert [homes.of(f"id-{i}") for i in range(50)] == [home(f"id-{i}") for i in range(50)]
    assert {homes.of(f"id-{i}") for i in range(50)} == set(range(PARTITIONS))


def test_a_record_on_its_home_partition_is_joined_whatever_its_key() -> None:
    processor = make_processor()
    raw_p = PREDICTION_CODEC.encode(prediction("a", ts=NOW_MS))
    raw_o = OUTCOME_CODEC.encode(outcome("a", ts=NOW_MS))
    result = processor.process(
        [
            SourceRecord("predictions", home("a"), 1, None, raw_p),
            SourceRecord("outcomes", home("a"), 1, b"some-other-key", raw_o),
        ]
    )
    assert [(f.prediction_id, f.status) for f in result.feedback] == [("a", FeedbackStatus.JOINED)]
    assert result.reroutes == [] and result.dead_letters == []
    assert processor.rerouted == {}


def test_a_misrouted_record_is_rerouted_to_its_home_with_its_id_as_key_and_not_written() -> None:
    processor = make_processor()
    raw = OUTCOME_CODEC.encode(outcome("b", ts=NOW_MS))
    result = processor.process([SourceRecord("outcomes", away("b"), 9, None, raw)])
    assert result.reroutes == [Reroute(home("b"), b"b", raw, RecordKind.OUTCOME)]
    assert result.reroutes[0].headers == [(KIND_HEADER, b"outcome")]
    # Its rows come from the copy, once: nothing joined, stored or written here.
    assert result.outcomes == [] and result.feedback == [] and result.dead_letters == []
    assert processor.join.early_size() == 0
    assert processor.rerouted == {"outcomes": 1}


def test_misrouted_prediction_and_outcome_pair_once_their_copies_come_back() -> None:
    processor = make_processor()
    raw_p = PREDICTION_CODEC.encode(prediction("c", ts=NOW_MS))
    raw_o = OUTCOME_CODEC.encode(outcome("c", ts=NOW_MS))
    first = processor.process(
        [
            SourceRecord("predictions", away("c"), 3, b"c", raw_p),
            SourceRecord("outcomes", away("c"), 4, b"c", raw_o),
        ]
    )
    assert [r.kind for r in first.reroutes] == [RecordKind.PREDICTION, RecordKind.OUTCOME]
    second = processor.process([back(r, offset) for offset, r in enumerate(first.reroutes)])
    assert second.reroutes == []
    assert [(f.prediction_id, f.status) for f in second.feedback] == [("c", FeedbackStatus.JOINED)]
    assert [p.prediction_id for p in second.predictions] == ["c"]
    assert [o.prediction_id for o in second.outcomes] == ["c"]
    assert processor.rerouted == {"predictions": 1, "outcomes": 1}


def test_a_repartition_record_without_its_kind_is_a_dead_letter() -> None:
    processor = make_processor()
    raw = OUTCOME_CODEC.encode(outcome("d", ts=NOW_MS))
    result = processor.process([SourceRecord("repartition", home("d"), 0, b"d", raw)])
    assert [d.error_type for d in result.dead_letters] == ["unknown_kind"]


def test_an_invalid_record_is_dead_lettered_where_it_was_read_not_rerouted() -> None:
    processor = make_processor()
    result = processor.process([SourceRecord("outcomes", 0, 5, None, b"junk")])
    assert result.reroutes == []
    assert [(d.error_type, d.source_partition) for d in result.dead_letters] == [("bad_marker", 0)]


def test_rerouted_counts_are_exported_per_source_topic() -> None:
    processor = make_processor()
    raw = OUTCOME_CODEC.encode(outcome("e", ts=NOW_MS))
    processor.process([SourceRecord("outcomes", away("e"), 1, None, raw)])
    text = render_prometheus(
        StreamSnapshot(
            join=processor.join.counters,
            sink=SinkStats(),
            dead_letters=processor.dead_letter_counts,
            rerouted=dict(processor.rerouted),
        )
    )
    assert 'safeloop_stream_rerouted_total{topic="outcomes"} 1' in text
