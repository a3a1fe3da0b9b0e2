"""Publish a label file in confirmed batches, resumable after a crash without doubling.

Per batch: read `batch_size` rows, validate them, record the topic's end offsets in the
checkpoint, produce with confirmation, then record the rows as done. A rerun skips the done
rows; for the batch that was in flight it reads the topic back from the recorded offsets and
leaves out the outcomes the crashed run had already delivered.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from safeloop.schemas.outcome_batch import OutcomeTuple
from safeloop.services.publishing import checkpoint as checkpoints
from safeloop.services.publishing.checkpoint import Checkpoint, FileIdentity
from safeloop.services.publishing.delivered import TopicTail
from safeloop.services.publishing.exceptions import CheckpointError
from safeloop.services.publishing.outcome_publisher import OutcomePublisher
from safeloop.services.publishing.outcome_rows import OUTCOME_COLUMNS
from safeloop.services.publishing.readers import RowSource

log = logging.getLogger(__name__)

MAX_EXAMPLES = 20
DEFAULT_FILE_BATCH = 50_000
# (rows done, estimated total rows)
ProgressCallback = Callable[[int, int], None]


@dataclass
class FileSummary:
    """What a file publish did, over every run that worked on the file."""

    path: str
    topic: str
    rows: int
    published: int
    rejected: dict[str, int]
    examples: list[dict[str, Any]]
    resumed_from_row: int
    already_delivered: int
    already_finished: bool = False
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "topic": self.topic,
            "rows": self.rows,
            "published": self.published,
            "rejected": self.rejected_total,
            "reasons": self.rejected,
            "examples": self.examples,
            "resumed_from_row": self.resumed_from_row,
            "skipped_already_delivered": self.already_delivered,
            "already_finished": self.already_finished,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class FileJob:
    """One file to publish and how."""

    source: RowSource
    checkpoint_path: Path
    default_source: str
    batch_size: int = DEFAULT_FILE_BATCH
    restart: bool = False


def publish_file(
    job: FileJob,
    publisher: OutcomePublisher,
    tail: TopicTail,
    progress: ProgressCallback | None = None,
) -> FileSummary:
    """Publish `job.source` through `publisher`, resuming from its checkpoint if there is one."""
    started = time.monotonic()
    identity = FileIdentity.of(job.source.path)
    state = _starting_state(job, identity, publisher.topic)
    summary_base = state.rows_done
    if state.finished:
        return _summary(job, state, summary_base, 0, started, already_finished=True)
    delivered: Counter[OutcomeTuple] = Counter()
    if state.in_flight_row is not None:
        delivered = tail.outcomes_since(state.in_flight_offsets)
    skipped = 0
    rows = job.source.rows(skip=state.rows_done, columns=OUTCOME_COLUMNS)
    while True:
        batch = list(islice(rows, job.batch_size))
        if not batch:
            break
        valid, rejected = publisher.validate(
            batch,
            default_timestamp_ms=state.default_timestamp_ms,
            default_source=state.source,
            first_index=state.rows_done,
        )
        dropped = 0
        if delivered:
            valid, dropped = _without(valid, delivered)
            skipped += dropped
        state.in_flight_row = state.rows_done
        state.in_flight_offsets = tail.end_offsets()
        checkpoints.save(job.checkpoint_path, state)
        if valid:
            publisher.send(valid)
        state.rows_done += len(batch)
        state.published += len(valid) + dropped
        for rejection in rejected:
            state.rejected[rejection.reason] = state.rejected.get(rejection.reason, 0) + 1
            if len(state.examples) < MAX_EXAMPLES:
                state.examples.append(rejection.to_json())
        state.in_flight_row = None
        state.in_flight_offsets = {}
        checkpoints.save(job.checkpoint_path, state)
        if progress is not None:
            progress(state.rows_done, job.source.total_rows)
    state.finished = True
    checkpoints.save(job.checkpoint_path, state)
    return _summary(job, state, summary_base, skipped, started)


def _starting_state(job: FileJob, identity: FileIdentity, topic: str) -> Checkpoint:
    existing = None if job.restart else checkpoints.load(job.checkpoint_path)
    if existing is not None:
        if existing.source != job.default_source:
            raise CheckpointError(
                f"checkpoint {job.checkpoint_path} was written with --source "
                f"{existing.source!r}; rerun with it, or pass --restart"
            )
        if existing.file != identity or existing.topic != topic:
            raise CheckpointError(
                f"checkpoint {job.checkpoint_path} was written for "
                f"{existing.file.path} ({existing.file.size} bytes) on {existing.topic}, and the "
                f"file or topic differs now: pass --restart to publish it from the first row"
            )
        if existing.in_flight_row is not None:
            log.info("resuming %s at row %s", identity.path, existing.rows_done)
        return existing
    return Checkpoint(
        file=identity,
        topic=topic,
        source=job.default_source,
        default_timestamp_ms=time.time_ns() // 1_000_000,
    )


def _without(
    valid: list[OutcomeTuple], delivered: Counter[OutcomeTuple]
) -> tuple[list[OutcomeTuple], int]:
    kept: list[OutcomeTuple] = []
    skipped = 0
    for outcome in valid:
        if delivered[outcome] > 0:
            delivered[outcome] -= 1
            skipped += 1
        else:
            kept.append(outcome)
    return kept, skipped


def _summary(
    job: FileJob,
    state: Checkpoint,
    resumed_from: int,
    skipped: int,
    started: float,
    *,
    already_finished: bool = False,
) -> FileSummary:
    return FileSummary(
        path=str(job.source.path),
        topic=state.topic,
        rows=state.rows_done,
        published=state.published,
        rejected=dict(sorted(state.rejected.items(), key=lambda item: (-item[1], item[0]))),
        examples=list(state.examples),
        resumed_from_row=resumed_from,
        already_delivered=skipped,
        already_finished=already_finished,
        seconds=time.monotonic() - started,
    )
