"""Retraining decisions out: keyed by model on the `retraining` topic, and into ClickHouse."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from clickhouse_connect.driver import Client
from confluent_kafka import KafkaError, Message, Producer

from safeloop.schemas.codec import RETRAINING_CODEC
from safeloop.schemas.events import RetrainingDecision
from safeloop.services.retraining.exceptions import DecisionPublishError

logger = logging.getLogger(__name__)

TABLE = "retraining_decisions"
COLUMNS = (
    "decision_id",
    "model_name",
    "model_version",
    "timestamp",
    "should_retrain",
    "urgency",
    "reason",
    "max_psi",
    "performance_drop",
    "drifted_features",
)
DELIVERY_TIMEOUT_S = 15.0


def decision_values(decision: RetrainingDecision) -> tuple[object, ...]:
    return (
        decision.decision_id,
        decision.model_name,
        decision.model_version,
        decision.timestamp,
        decision.should_retrain,
        decision.urgency.value,
        decision.reason,
        decision.max_psi,
        decision.performance_drop,
        list(decision.drifted_features),
    )


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
        errors: list[KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                errors.append(error)

        for decision in decisions:
            self._producer.produce(
                self._topic,
                key=decision.model_name.encode(),
                value=RETRAINING_CODEC.encode(decision),
                on_delivery=delivered,
            )
        remaining = self._producer.flush(DELIVERY_TIMEOUT_S)
        if remaining or errors:
            reason = errors[0] if errors else f"{remaining} not acknowledged"
            raise DecisionPublishError(f"retraining decisions not published: {reason}")
        token = "|".join(decision.decision_id for decision in decisions)
        try:
            self._client.insert(
                TABLE,
                [decision_values(decision) for decision in decisions],
                column_names=list(COLUMNS),
                settings={"insert_deduplicate": 1, "insert_deduplication_token": token},
            )
        except Exception as exc:
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
