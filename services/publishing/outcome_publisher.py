"""`OutcomePublisher`: label pipelines publish outcomes; `publish` returns once Kafka has them.

Rows are validated one by one (a bad row is rejected with its reason, the rest go on), encoded
a batch at a time and produced with confirmation: when `publish` returns, every published
outcome is acknowledged by the brokers (acks=all), and a `DeliveryError` says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import Producer

from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.kafka.produce import DELIVERY_TIMEOUT_S, produce_batch_confirmed
from safeloop.infra.settings import Settings
from safeloop.schemas.events import OutcomeEvent
from safeloop.schemas.outcome_batch import OutcomeTuple, encode_outcomes
from safeloop.services.publishing.exceptions import InvalidRecordError
from safeloop.services.publishing.outcome_rows import (
    OutcomeDefaults,
    cells_as_row,
    checked_outcome_tuple,
    outcome_from_cells,
    outcome_tuple,
    prediction_id_of,
)
from safeloop.services.publishing.rejection import Rejection, rejection_of

DEFAULT_SOURCE = "label-pipeline"
DEFAULT_BATCH_SIZE = 20_000


@dataclass
class PublishResult:
    """How many outcomes Kafka confirmed, and each refused record with its reason."""

    published: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def reasons(self) -> dict[str, int]:
        """Rejects counted by `field: problem`, most frequent first."""
        counts: dict[str, int] = {}
        for rejection in self.rejected:
            counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def add(self, other: PublishResult) -> None:
        self.published += other.published
        self.rejected.extend(other.rejected)


def producer_overrides() -> dict[str, Any]:
    """On top of `producer_config`: large batches, since a label file is throughput."""
    return {
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1024 * 1024,
        # `produce_confirmed` needs to hear of failures only: flush() returning 0 with no
        # error reported means every record was acknowledged; no Python callback per success.
        "delivery.report.only.error": True,
    }


class OutcomePublisher:
    """Publishes OutcomeEvents to the `outcomes` topic, keyed by prediction_id (UTF-8).

    `publish` takes OutcomeEvents or mappings with `prediction_id`, `ground_truth` and optional
    `timestamp` (epoch ms or ISO-8601; default: now) and `source` (default: `default_source`).
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        default_source: str = DEFAULT_SOURCE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_s: float = DELIVERY_TIMEOUT_S,
        producer: Producer | None = None,
    ) -> None:
        self._producer = (
            make_producer(settings, **producer_overrides()) if producer is None else producer
        )
        self._topic = settings.topics.outcomes
        self._default_source = default_source
        self._batch_size = batch_size
        self._timeout_s = timeout_s

    @property
    def topic(self) -> str:
        return self._topic

    def publish(
        self,
        records: Iterable[OutcomeEvent | Mapping[str, Any]],
        *,
        default_timestamp_ms: int | None = None,
        first_index: int = 0,
    ) -> PublishResult:
        """Validate, publish and confirm `records`; rejected ones are reported, not raised.

        `default_timestamp_ms` is the timestamp of rows without one (default: now).
        `first_index` numbers the rejections (a file's row offset). Raises `DeliveryError`
        when Kafka did not acknowledge every valid record.
        """
        result = PublishResult()
        batch: list[object] = []
        index = first_index
        for record in records:
            batch.append(record)
            if len(batch) >= self._batch_size:
                result.add(self._publish_batch(batch, index, default_timestamp_ms))
                index += len(batch)
                batch = []
        if batch:
            result.add(self._publish_batch(batch, index, default_timestamp_ms))
        return result

    def validate(
        self,
        records: Iterable[object],
        *,
        default_timestamp_ms: int | None = None,
        default_source: str | None = None,
        first_index: int = 0,
    ) -> tuple[list[OutcomeTuple], list[Rejection]]:
        """The valid outcomes of `records` as tuples, and a `Rejection` for each other one."""
        now_ms = time.time_ns() // 1_000_000
        defaults = OutcomeDefaults(
            default_source or self._default_source,
            now_ms if default_timestamp_ms is None else default_timestamp_ms,
        )
        valid: list[OutcomeTuple] = []
        rejected: list[Rejection] = []
        append = valid.append
        for index, record in enumerate(records, first_index):
            try:
                if type(record) is tuple and len(record) == 4:  # a file read by column
                    plain = outcome_from_cells(record, defaults, now_ms)
                    append(
                        plain
                        if plain is not None
                        else checked_outcome_tuple(cells_as_row(record), defaults, now_ms)
                    )
                elif type(record) is dict:  # skip the dispatch below
                    append(outcome_tuple(record, defaults, now_ms))
                else:
                    append(to_outcome_tuple(record, defaults, now_ms))
            except InvalidRecordError as exc:
                rejected.append(rejection_of(exc, index, prediction_id_of(record)))
        return valid, rejected

    def _publish_batch(
        self,
        batch: list[object],
        first_index: int,
        default_timestamp_ms: int | None,
    ) -> PublishResult:
        valid, rejected = self.validate(
            batch, default_timestamp_ms=default_timestamp_ms, first_index=first_index
        )
        return PublishResult(self.send(valid) if valid else 0, rejected)

    def send(self, outcomes: list[OutcomeTuple]) -> int:
        """Produce already-validated outcome tuples and wait for Kafka to confirm them all."""
        values = encode_outcomes(outcomes)
        records = zip([o[0].encode() for o in outcomes], values, strict=True)
        return produce_batch_confirmed(self._producer, self._topic, records, self._timeout_s)

    def close(self) -> None:
        """Deliver whatever is still queued (nothing, after `publish` returned)."""
        self._producer.flush(self._timeout_s)

    def __enter__(self) -> OutcomePublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def to_outcome_tuple(record: object, defaults: OutcomeDefaults, now_ms: int) -> OutcomeTuple:
    """A validated outcome tuple from an event or a mapping; `InvalidRecordError` if not one.

    A file reader hands over an `InvalidRecordError` for a line it could not parse.
    """
    if type(record) is dict:  # the common case first: isinstance on an ABC costs
        return outcome_tuple(record, defaults, now_ms)
    if isinstance(record, InvalidRecordError):
        raise record
    if isinstance(record, OutcomeEvent):
        record = {
            "prediction_id": record.prediction_id,
            "ground_truth": record.ground_truth,
            "timestamp": record.timestamp,
            "source": record.source,
        }
    elif not isinstance(record, Mapping):
        raise InvalidRecordError(
            "record", "is not an object", f"record={record!r}: is not an object"
        )
    return outcome_tuple(record, defaults, now_ms)
