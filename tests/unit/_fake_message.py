"""A consumed record of partition 0 of `predictions`, as confluent-kafka's Message answers."""

from __future__ import annotations

import time

from _stream_events import prediction

from safeloop.schemas.codec import PREDICTION_CODEC

TOPIC = "predictions"
VALUE = PREDICTION_CODEC.encode(prediction(ts=time.time_ns() // 1_000_000))


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return VALUE
