"""ClickHouse rows for the tables the worker writes; columns match schemas/clickhouse/*.sql."""

from __future__ import annotations

from collections.abc import Sequence

from safeloop.schemas.events import DeadLetter, FeedbackRecord, OutcomeEvent, PredictionEvent
from safeloop.streams.dead_letters import SourceRecord

PREDICTIONS = "predictions"
OUTCOMES = "outcomes"
FEEDBACK = "feedback"
DEAD_LETTERS = "dead_letters"

# DateTime64(3) columns take epoch milliseconds: clickhouse-connect writes ints as ticks.
COLUMNS: dict[str, tuple[str, ...]] = {
    PREDICTIONS: (
        "prediction_id",
        "model_name",
        "model_version",
        "timestamp",
        "features",
        "prediction",
        "confidence",
        "latency_ms",
        "route",
        "replica_id",
        "routing_key",
        "routing_hash_version",
        "error",
    ),
    OUTCOMES: ("prediction_id", "ground_truth", "timestamp", "source"),
    FEEDBACK: (
        "prediction_id",
        "model_name",
        "model_version",
        "route",
        "replica_id",
        "features",
        "prediction",
        "confidence",
        "prediction_timestamp",
        "status",
        "ground_truth",
        "outcome_timestamp",
        "label_delay_ms",
        "outcome_source",
        "emitted_at",
    ),
    DEAD_LETTERS: (
        "source_topic",
        "source_partition",
        "source_offset",
        "key",
        "value",
        "reason",
        "error_type",
        "timestamp",
        "consumer",
    ),
}


def prediction_row(p: PredictionEvent) -> tuple[object, ...]:
    return (
        p.prediction_id,
        p.model_name,
        p.model_version,
        p.timestamp,
        p.features,
        p.prediction,
        p.confidence,
        p.latency_ms,
        p.route.value,
        p.replica_id,
        p.routing_key,
        p.routing_hash_version,
        p.error,
    )


def outcome_row(o: OutcomeEvent) -> tuple[object, ...]:
    return (o.prediction_id, o.ground_truth, o.timestamp, o.source)


def feedback_row(f: FeedbackRecord) -> tuple[object, ...]:
    return (
        f.prediction_id,
        f.model_name,
        f.model_version,
        f.route.value,
        f.replica_id,
        f.features,
        f.prediction,
        f.confidence,
        f.prediction_timestamp,
        f.status.value,
        f.ground_truth,
        f.outcome_timestamp,
        f.label_delay_ms,
        f.outcome_source,
        f.emitted_at,
    )


def dead_letter_row(d: DeadLetter) -> tuple[object, ...]:
    return (
        d.source_topic,
        d.source_partition,
        d.source_offset,
        d.key,
        d.value,
        d.reason,
        d.error_type,
        d.timestamp,
        d.consumer,
    )


def source_identities(records: Sequence[SourceRecord]) -> list[bytes]:
    """Identities for a dedup token: where each row came from."""
    return [f"{r.topic}:{r.partition}:{r.offset}".encode() for r in records]


def feedback_identities(records: Sequence[FeedbackRecord]) -> list[bytes]:
    return [f"{f.prediction_id}:{f.route}:{f.status}:{f.emitted_at}".encode() for f in records]
