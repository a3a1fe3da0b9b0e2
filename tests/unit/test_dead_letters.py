"""Bad input becomes a dead letter with a stable reason, its source and its original bytes."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
from _stream_events import outcome, prediction

from safeloop.infra.exceptions import RecordRejectedError
from safeloop.infra.kafka.dead_letters import DeadLetterCounts, SourceRecord, dead_letter
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent
from safeloop.streams.decoding import decode_outcome, decode_prediction

NOW_MS = int(time.time() * 1000)


def record(value: bytes | None, key: bytes | None = b"p1") -> SourceRecord:
    return SourceRecord("predictions", 2, 41, key, value)


def good(**changes: object) -> PredictionEvent:
    return replace(prediction(ts=NOW_MS), **changes)  # type: ignore[arg-type]


def test_valid_prediction_and_outcome_decode() -> None:
    event = decode_prediction(record(PREDICTION_CODEC.encode(good())), NOW_MS)
    assert event.prediction_id == "p1"
    out = decode_outcome(record(OUTCOME_CODEC.encode(outcome(ts=NOW_MS))), NOW_MS)
    assert out.ground_truth == 1.0


@pytest.mark.parametrize("key", [b"other", None, b"p1"])
def test_a_key_other_than_the_prediction_id_is_no_reason_to_reject(key: bytes | None) -> None:
    # Where the record belongs comes from its body (the processor re-routes it), not its key.
    event = decode_prediction(record(PREDICTION_CODEC.encode(good()), key), NOW_MS)
    assert event.prediction_id == "p1"


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"\x00garbage", b"p1", "bad_marker"),
        (b"\xc3\x01" + b"\x11" * 8 + b"body", b"p1", "unknown_fingerprint"),
        (PREDICTION_CODEC.encode(good())[:14], b"p1", "malformed_body"),
        (PREDICTION_CODEC.encode(good(prediction_id="")), b"", "invalid_field"),
        (PREDICTION_CODEC.encode(good(prediction=math.nan)), b"p1", "invalid_field"),
        (PREDICTION_CODEC.encode(good(prediction=math.inf)), b"p1", "invalid_field"),
        (PREDICTION_CODEC.encode(good(latency_ms=-1.0)), b"p1", "invalid_field"),
        (PREDICTION_CODEC.encode(good(timestamp=NOW_MS + 86_400_000)), b"p1", "invalid_field"),
        (None, b"p1", "bad_marker"),
    ],
)
def test_each_bad_input_kind_has_its_reason(
    value: bytes | None, key: bytes | None, reason: str
) -> None:
    source = record(value, key)
    with pytest.raises(RecordRejectedError) as caught:
        decode_prediction(source, NOW_MS)
    assert caught.value.reason == reason
    assert caught.value.offset == 41
    letter = dead_letter(source, caught.value, "safeloop-streams", NOW_MS)
    assert letter.value == value and letter.key == key
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "predictions",
        2,
        41,
    )
    assert letter.error_type == reason and letter.reason.startswith(reason)


def test_an_outcome_on_the_prediction_decoder_is_an_unknown_schema() -> None:
    with pytest.raises(RecordRejectedError) as caught:
        decode_prediction(record(OUTCOME_CODEC.encode(outcome(ts=NOW_MS))), NOW_MS)
    assert caught.value.reason == "unknown_fingerprint"


def test_counts_per_topic_and_reason() -> None:
    counts = DeadLetterCounts()
    source = record(b"junk")
    error = RecordRejectedError("bad_marker", "junk", topic="predictions", partition=2, offset=41)
    counts.count(dead_letter(source, error, "c", NOW_MS))
    counts.count(dead_letter(source, error, "c", NOW_MS))
    assert counts.total == 2
    assert counts.by_topic_reason[("predictions", "bad_marker")] == 2
