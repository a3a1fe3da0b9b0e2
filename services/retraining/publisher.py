"""Retraining decisions out: keyed by model on the `retraining` topic, and into ClickHouse."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from clickhouse_connect.driver import Client
from confluent_kafka import Producer

from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.exceptions import DeliveryError, WarehouseError
from safeloop.infra.kafka.produce import produce_confirmed
from safeloop.schemas.codec import RETRAINING_CODEC
from safeloop.schemas.events import RetrainingDecision
from safeloop.schemas.tables import RETRAINING_DECISIONS
from safeloop.services.retraining.exceptions import DecisionPublishError

logger = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 15.0


class RetrainingPublisher:
    """`publish` sends to Kafka and waits for the acks, then inserts (deduplicated by ids)."""

    def __init__(self, producer: Producer, topic: str, client: Client) -> None:
        self._producer = producer
        self._topic = topic
        self._client = client
        self.published = 0

    def publish(self, decisions: Sequence[RetrainingDecision]) -> None:
        if not decisions:
            return
        records = [(d.model_name.encode(), RETRAINING_CODEC.encode(d)) for d in decisions]
        try:
            produce_confirmed(self._producer, self._topic, records, DELIVERY_TIMEOUT_S)
        except DeliveryError as exc:
            raise DecisionPublishError(f"retraining decisions not published: {exc}") from exc
        try:
            insert_idempotent(
                self._client, RETRAINING_DECISIONS, RETRAINING_DECISIONS.rows(decisions)
            )
        except WarehouseError as exc:
            raise DecisionPublishError(f"retraining decisions not stored: {exc}") from exc
        self.published += len(decisions)
        for decision in decisions:
            logger.info(
                "retraining %s %s: %s (%s)",
                decision.model_name,
                decision.model_version,
                decision.urgency.value,
                decision.reason,
            )
