"""The bytes the join state is stored as in RocksDB and its changelog."""

from __future__ import annotations

from _stream_events import outcome, prediction

from schemas.events import Route
from streams.state import EarlyOutcome, PendingPrediction
from streams.table_store import decode_early, decode_pending, encode_early, encode_pending


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
