"""A batch of raw records through decode, the join and dead letters, and the /metrics text."""

from __future__ import annotations

import time

from _stream_events import outcome, prediction

from safeloop.infra.kafka.dead_letters import SourceRecord
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import FeedbackStatus
from safeloop.streams.join import JoinWindow
from safeloop.streams.observability import StreamSnapshot, render_prometheus
from safeloop.streams.processor import BatchProcessor
from safeloop.streams.sink import SinkStats
from safeloop.streams.state import EarlyOutcome, InMemoryStateStore, PendingPrediction
from safeloop.streams.windows import JoinWindows

NOW_MS = int(time.time() * 1000)


def make_processor() -> BatchProcessor:
    join = JoinWindow(
        InMemoryStateStore[PendingPrediction](),
        InMemoryStateStore[EarlyOutcome](),
        JoinWindows(default_window_ms=60_000),
        lambda: NOW_MS,
    )
    return BatchProcessor(join, "predictions", "outcomes", "test", clock_ms=lambda: NOW_MS)


def test_a_mixed_batch_joins_good_records_and_dead_letters_bad_ones() -> None:
    processor = make_processor()
    records = [
        SourceRecord("outcomes", 1, 7, b"a", OUTCOME_CODEC.encode(outcome("a", ts=NOW_MS))),
        SourceRecord(
            "predictions", 1, 3, b"a", PREDICTION_CODEC.encode(prediction("a", ts=NOW_MS))
        ),
        SourceRecord("predictions", 1, 4, b"b", b"junk"),
        SourceRecord("elsewhere", 0, 0, None, b""),
    ]
    result = processor.process(records)
    assert [(f.prediction_id, f.status) for f in result.feedback] == [("a", FeedbackStatus.JOINED)]
    assert [d.error_type for d in result.dead_letters] == ["bad_marker", "unknown_topic"]
    assert len(result.predictions) == 1 and len(result.outcomes) == 1
    assert len(result.releases) == 1  # the early outcome, once the pair is flushed
    assert processor.consumed == {"outcomes": 1, "predictions": 2, "elsewhere": 1}
    assert processor.dead_letter_counts.total == 2


def test_metrics_render_in_prometheus_text_format() -> None:
    processor = make_processor()
    processor.process([SourceRecord("predictions", 0, 1, b"x", b"junk")])
    text = render_prometheus(
        StreamSnapshot(
            join=processor.join.counters,
            sink=SinkStats(batches=2, rows=10, retries=1, flush_ms_total=1500.0),
            dead_letters=processor.dead_letter_counts,
            lag={("predictions", 0): 5},
            pending_predictions={0: 3},
            early_outcomes={0: 1},
            consumed=dict(processor.consumed),
            rocksdb_block_cache_bytes=3_000_000,
            rocksdb_memtable_bytes=1_000_000,
        )
    )
    assert 'safeloop_stream_lag{topic="predictions",partition="0"} 5' in text
    assert "safeloop_stream_rocksdb_block_cache_bytes 3000000" in text
    assert "safeloop_stream_rocksdb_memtable_bytes 1000000" in text
    assert 'safeloop_dead_letters_total{topic="predictions",reason="bad_marker"} 1' in text
    assert 'safeloop_join_pending{partition="0"} 3' in text
    assert "safeloop_sink_retries_total 1" in text
    assert "safeloop_sink_flush_seconds_total 1.5" in text
    assert "# TYPE safeloop_join_expired_total counter" in text
    assert text.endswith("\n")


def test_a_batch_is_repeated_only_when_the_join_saw_some_of_its_input_before() -> None:
    # `repeated` makes the sink check the batch against ClickHouse: the three-pass process must
    # carry the join's flag, set for replayed input only, never for first input.
    processor = make_processor()
    pair = [
        SourceRecord("outcomes", 0, 1, b"a", OUTCOME_CODEC.encode(outcome("a", ts=NOW_MS))),
        SourceRecord(
            "predictions", 0, 1, b"a", PREDICTION_CODEC.encode(prediction("a", ts=NOW_MS))
        ),
    ]
    first = processor.process(pair)
    assert len(first.feedback) == 1 and not first.repeated
    fresh = SourceRecord(
        "predictions", 0, 2, b"b", PREDICTION_CODEC.encode(prediction("b", ts=NOW_MS))
    )
    assert not processor.process([fresh]).repeated
    replayed = processor.process([pair[1]])
    assert replayed.repeated and len(replayed.feedback) == 1
    # Within one batch too: the second copy of a prediction reads the first one's write.
    copy = PREDICTION_CODEC.encode(prediction("c", ts=NOW_MS))
    twice = [SourceRecord("predictions", 0, offset, b"c", copy) for offset in (3, 4)]
    assert processor.process(twice).repeated
