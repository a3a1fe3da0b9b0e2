"""The bytes the join state is stored as in RocksDB and its changelog."""

from __future__ import annotations

from _stream_events import outcome, prediction

from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import Route
from safeloop.streams.state import EarlyOutcome, PendingPrediction
from safeloop.streams.table_store import decode_early, decode_pending, encode_early, encode_pending


def test_pending_entry_round_trips_with_and_without_outcome() -> None:
    routes = (prediction(), prediction(route=Route.SHADOW, version="v2", value=None))
    for entry in (
        PendingPrediction(routes, None, 123),
        PendingPrediction(routes, outcome(), 2**40),
        PendingPrediction((prediction(),), outcome(truth=0.0), 5),
    ):
        assert decode_pending(encode_pending(entry)) == entry


def test_early_outcome_round_trips() -> None:
    entry = EarlyOutcome(outcome(), 99)
    assert decode_early(encode_early(entry)) == entry


def test_consumed_bytes_are_stored_as_they_came() -> None:
    event, label = prediction(), outcome()
    raw_prediction, raw_outcome = PREDICTION_CODEC.encode(event), OUTCOME_CODEC.encode(label)
    entry = PendingPrediction((event,), label, 7, (raw_prediction,), raw_outcome)
    stored = encode_pending(entry)
    assert stored == encode_pending(PendingPrediction((event,), label, 7))
    back = decode_pending(stored)
    assert back == entry
    assert back.raw_predictions == (raw_prediction,)
    assert back.raw_outcome == raw_outcome
    early = decode_early(encode_early(EarlyOutcome(label, 9, raw_outcome)))
    assert early.raw_outcome == raw_outcome


def test_raw_bytes_do_not_take_part_in_equality() -> None:
    event = prediction()
    assert PendingPrediction((event,), None, 1, (b"x",)) == PendingPrediction((event,), None, 1)
