"""`LabelFeed`: the ground truth for served predictions, published as OutcomeEvents later.

The truth is drawn from the same generating relation as the training data
(`services.models.training.true_margin`), so an accurate model is right about as often as it
was on its holdout and the version trained on flipped labels is wrong most of the time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
from confluent_kafka import Producer

from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import OUTCOME_CODEC
from safeloop.schemas.events import OutcomeEvent
from safeloop.services.demo.traffic import Answer
from safeloop.services.models.training import true_margin

logger = logging.getLogger(__name__)

SOURCE = "demo-labels"


class LabelFeed:
    """Publishes each submitted answer's outcome `delay_s` after it was served."""

    def __init__(
        self, settings: Settings, feature_names: Sequence[str], delay_s: float, seed: int = 5
    ) -> None:
        self._producer: Producer | None = make_producer(settings, linger_ms=20)
        self._topic = settings.topics.outcomes
        self._features = tuple(feature_names)
        self._delay_s = delay_s
        self._rng = np.random.default_rng(seed)
        self._pending: deque[tuple[float, Answer]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-labels", daemon=True)
        self.published = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, answer: Answer) -> None:
        with self._lock:
            self._pending.append((time.monotonic() + self._delay_s, answer))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, timeout_s: float = 30.0) -> None:
        """Publish what is still pending (at its due time), then flush the producer."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stop.set()
        self._thread.join(10)
        if self._producer is not None:
            left = self._producer.flush(max(1.0, deadline - time.monotonic()))
            if left:
                logger.warning("%s outcomes not delivered", left)
            self._producer = None  # released now, not when the broker is already gone

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self._take_due()
            producer = self._producer
            if producer is None:
                return
            if due:
                self._publish(producer, due)
            producer.poll(0)
            self._stop.wait(0.05)

    def _take_due(self) -> list[Answer]:
        now = time.monotonic()
        due = []
        with self._lock:
            while self._pending and self._pending[0][0] <= now:
                due.append(self._pending.popleft()[1])
        return due

    def _publish(self, producer: Producer, answers: list[Answer]) -> None:
        rows = np.array([[a.features[name] for name in self._features] for a in answers])
        probability = 1.0 / (1.0 + np.exp(-true_margin(rows)))
        truths = self._rng.random(len(answers)) < probability
        now_ms = time.time_ns() // 1_000_000
        for answer, truth in zip(answers, truths.tolist(), strict=True):
            event = OutcomeEvent(answer.prediction_id, 1.0 if truth else 0.0, now_ms, SOURCE)
            producer.produce(
                self._topic, key=answer.prediction_id.encode(), value=OUTCOME_CODEC.encode(event)
            )
            self.published += 1
