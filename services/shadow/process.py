"""`safeloop shadow-scorer`: consume `predictions`, score shadows, publish, then commit.

Offsets are committed only after the batch's shadow answers are acknowledged by Kafka, so a
crash re-scores (the answers keep their request's timestamp and id: the same ClickHouse row).
The control topic is followed between batches, so turning a shadow on or off takes effect on
the next batch; requests are scored under the config current when they are read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer, TopicPartition

from safeloop.infra.exceptions import DeliveryError, WarehouseError
from safeloop.infra.kafka.produce import produce_confirmed
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent
from safeloop.schemas.tables import PERFORMANCE_METRICS
from safeloop.services.control.follower import ControlFollower
from safeloop.services.monitor.consumer import EventConsumer
from safeloop.services.monitor.writer import MetricWriter
from safeloop.services.shadow.exceptions import ShadowPublishError
from safeloop.services.shadow.scorer import ShadowScorer

logger = logging.getLogger(__name__)

BATCH_RECORDS = 1_000
POLL_TIMEOUT_S = 0.1
RETRY_AFTER_FAILURE_S = 1.0
LOG_EVERY_S = 60.0
AGREEMENT_EVERY_S = 5.0


class ShadowScorerProcess:
    """The scorer's loop; `run(stop)` returns once `stop` is set."""

    def __init__(
        self,
        consumer: EventConsumer[PredictionEvent],
        follower: ControlFollower,
        producer: Producer,
        topic: str,
        scorer: ShadowScorer,
        *,
        writer: Callable[[], MetricWriter] | None = None,
    ) -> None:
        """`writer` makes where agreement rows go every few seconds (None: nowhere); it is
        called when first needed, so ClickHouse being away never stops the scoring."""
        self.consumer = consumer
        self.follower = follower
        self._producer = producer
        self._topic = topic
        self.scorer = scorer
        self._make_writer = writer
        self._writer: MetricWriter | None = None
        self.agreement_write_failures = 0
        self.published = 0
        self.publish_failures = 0
        # Set once the consumer group has assigned partitions (what a health probe waits for).
        self.ready = threading.Event()
        # Answers of the last batch, with its offsets, until Kafka acknowledged them.
        self._pending: tuple[list[tuple[bytes, bytes]], list[TopicPartition]] | None = None

    def run(self, stop: threading.Event) -> None:
        logged_at = written_at = time.monotonic()
        logger.info("shadow scorer %s running", self.scorer.scorer_id)
        try:
            while not stop.is_set():
                try:
                    self.step()
                except ShadowPublishError as exc:
                    logger.error("%s; retrying in %.0f s", exc, RETRY_AFTER_FAILURE_S)
                    stop.wait(RETRY_AFTER_FAILURE_S)
                if time.monotonic() - written_at >= AGREEMENT_EVERY_S:
                    written_at = time.monotonic()
                    self.write_agreement()
                if time.monotonic() - logged_at >= LOG_EVERY_S:
                    logged_at = time.monotonic()
                    counts = self.scorer.counts
                    logger.info(
                        "shadow scorer: %s scored, %s failed, %s unloadable, %s published",
                        counts.scored,
                        counts.failed,
                        counts.unloadable,
                        self.published,
                    )
        finally:
            counts = self.scorer.counts
            logger.info(
                "shadow scorer stopped: %s scored, %s failed, %s unloadable, %s published",
                counts.scored,
                counts.failed,
                counts.unloadable,
                self.published,
            )
            self.consumer.close()
            self.follower.close()
            self._producer.flush(10.0)

    def write_agreement(self) -> int:
        """Write the agreement rows now; returns how many (0 on a ClickHouse failure, logged)."""
        if self._make_writer is None:
            return 0
        rows = self.scorer.agreement.rows()
        try:
            if self._writer is None:
                self._writer = self._make_writer()
            self._writer.write(PERFORMANCE_METRICS, rows)
        except WarehouseError as exc:
            self.agreement_write_failures += 1
            logger.warning("shadow agreement rows not written, next time: %s", exc)
            return 0
        return len(rows)

    def step(self) -> int:
        """One batch: follow control, read, score, publish, commit; returns answers published.

        A batch whose answers Kafka did not acknowledge is kept and sent again first (nothing
        new is read meanwhile), so its offsets are never committed before its answers.
        """
        self.follower.poll(0.0)
        if self._pending is None:
            events = self.consumer.poll(BATCH_RECORDS, POLL_TIMEOUT_S)
            if self.consumer.membership.assigned_at is not None:
                self.ready.set()
            answers = self.scorer.score(events)
            records = [(a.prediction_id.encode(), PREDICTION_CODEC.encode(a)) for a in answers]
            self._pending = (records, self.consumer.positions())
        records, positions = self._pending
        if records:
            try:
                produce_confirmed(self._producer, self._topic, records)
            except DeliveryError as exc:
                self.publish_failures += 1
                raise ShadowPublishError(
                    f"{len(records)} shadow answers not published: {exc}"
                ) from exc
            self.published += len(records)
        self._pending = None
        if positions:
            try:
                self.consumer.commit(positions)
            except KafkaException as exc:
                # The answers are in Kafka; a later commit covers these offsets too.
                logger.warning("shadow scorer commit failed, the next one covers it: %s", exc)
        return len(records)
