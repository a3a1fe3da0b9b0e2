"""A decoding consumer for the metrics process: bad records become dead letters, never crashes.

Offsets are not committed automatically: `positions()` says how far the caller has read, and
`commit(positions)` is called by the caller once what it derived from those records (a
snapshot in ClickHouse) is stored, after the dead letters are acknowledged by Kafka.

With `replay_from` set, every assignment first re-reads the partitions' recent past to rebuild
the caller's windows (see `rebuild`): those records are returned like any other but never
dead-lettered again, and `positions()` never goes below the committed offsets. A partition a
rebalance gives back (revoked, or lost with the session) is not rebuilt: its windows are
intact, so reading resumes where it got, re-reading only what another member committed since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from safeloop.infra.exceptions import ConsumerFencedError, RecordRejectedError
from safeloop.infra.kafka.access import is_refusal, refusal_of
from safeloop.infra.kafka.dead_letters import SourceRecord, dead_letter, decode_or_reject
from safeloop.schemas.codec import DEAD_LETTER_CODEC, EventCodec
from safeloop.schemas.events import DeadLetter
from safeloop.services.monitor.rebuild import (
    ReplayFrom,
    ReplayStart,
    ReplayTracker,
    replay_starts,
)

logger = logging.getLogger(__name__)

E = TypeVar("E")
Validator = Callable[[E, int], None]

DEAD_LETTER_FLUSH_TIMEOUT_S = 10.0
# How long closing waits for the group to take the partitions back (a dead coordinator).
LEAVE_TIMEOUT_S = 5.0
LAG_REFRESH_S = 1.0
# Broker round trips measuring where "caught up" is, after the first assignment and again each
# time the previous measure is reached.
CATCH_UP_PROBE_TIMEOUT_S = 5.0
# A static member whose session ran out while its coordinator was away gets its member id
# reset; a commit queued during the outage then reaches the new coordinator under the blank id
# and is refused as fenced, which librdkafka makes fatal (librdkafka#3437, #5585). Nobody else
# holds the id: the consumer joins again with a new client, once per this many seconds; a
# second fencing within it is another live process with the same id.
REJOIN_AFTER_COMMIT_FENCED_S = 60.0
_COMMIT_FENCED = "OffsetCommit failed"


@dataclass(slots=True)
class ConsumerCounts:
    """Totals since start, for logs and the benchmark."""

    records: int = 0
    events: int = 0
    dead_lettered: int = 0
    dead_letter_failures: int = 0
    commits: int = 0
    commit_failures: int = 0
    # Lag probes that failed (partition not fetched yet, broker away).
    lag_unknown: int = 0
    # Failed attempts to measure the catch-up target (retried on the next poll).
    catch_up_probe_failures: int = 0
    # Partitions a rebalance took away and gave straight back: resumed where reading was,
    # windows intact, nothing re-read.
    partitions_kept: int = 0
    # New clients after the consumer's own queued commit fenced it (REJOIN_AFTER_COMMIT_FENCED_S).
    rejoins_after_fencing: int = 0


@dataclass(slots=True)
class GroupMembership:
    """What the group gave this consumer, as seen by the polling thread (for /healthz)."""

    # Monotonic time of the last assignment callback; None until the group first answered.
    assigned_at: float | None = None
    # Monotonic time the assignment was revoked or lost; None while assigned.
    unassigned_at: float | None = None
    partitions: frozenset[int] = frozenset()
    # Monotonic time `poll` last returned.
    polled_at: float | None = None
    # Monotonic time this consumer first came within one poll's batch of its partitions' end
    # offsets, measured after the assignment and again each time the last measure was
    # reached (windows primed: /readyz); None until then.
    caught_up_at: float | None = None
    # Records still to read to get there; None until measured.
    catch_up_remaining: int | None = None
    # Monotonic time the windows were rebuilt from the records read before the current
    # assignment (at once when nothing needed re-reading); None until then.
    rebuilt_at: float | None = None


class CommitListener:
    """Counts and logs the coordinator's answers to asynchronous commits: a consumer's
    `on_commit`, which librdkafka calls from `poll`."""

    def __init__(self, name: str, counts: ConsumerCounts) -> None:
        self.name = name
        self.counts = counts

    def __call__(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = error or next((tp.error for tp in partitions if tp.error is not None), None)
        if failed is None:
            self.counts.commits += 1
            return
        self.counts.commit_failures += 1
        logger.warning("%s: offset commit failed (re-read on restart): %s", self.name, failed)


class EventConsumer(Generic[E]):
    """Subscribes one group to one topic and returns decoded events in batches."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        codec: EventCodec[E],
        dead_letters: Producer,
        dead_letter_topic: str,
        *,
        name: str,
        validate: Validator[E] | None = None,
        counts: ConsumerCounts | None = None,
        new_client: Callable[[], Consumer] | None = None,
    ) -> None:
        """`new_client` makes another client like `consumer` (same group and instance id), for
        rejoining after a fencing that a commit of its own caused."""
        self._consumer = consumer
        self._new_client = new_client
        self._rejoined_at: float | None = None
        self.topic = topic
        self._codec = codec
        self._dead_letters = dead_letters
        self._dead_letter_topic = dead_letter_topic
        self.name = name
        self._validate = validate
        # The partition of each event the last `poll` returned, in the same order.
        self.last_partitions: list[int] = []
        # When set: the event time from which each assignment re-reads its partitions.
        self.replay_from: ReplayFrom | None = None
        self.replay = ReplayTracker()
        # partition -> next offset to commit (last new record + 1; a replay's end while one runs)
        self._positions: dict[int, int] = {}
        # partition -> next offset to read: the windows hold every record before it.
        self._read: dict[int, int] = {}
        # partition -> next offset to read, of partitions revoked or lost by a rebalance still
        # under way: if it gives them back (a coordinator moving, a member leaving, a session
        # lost while the broker restarted), reading resumes there and nothing is counted twice.
        self._released: dict[int, int] = {}
        # Shared with the consumer's `CommitListener`, if it has one.
        self.counts = ConsumerCounts() if counts is None else counts
        self.membership = GroupMembership()
        # partition -> high watermark - next offset to read, from the client's cached watermarks
        self.lag: dict[int, int] = {}
        self._lag_refreshed = 0.0
        # partition -> offset to reach (its high watermark when first assigned); None until
        # measured. Emptied as partitions reach it; then `membership.caught_up_at` is set.
        self._catch_up: dict[int, int] | None = None
        self._subscribe()

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def poll(self, max_records: int, timeout_s: float) -> list[E]:
        """Up to `max_records` decoded events, waiting at most `timeout_s` for the first."""
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        events: list[E] = []
        partitions: list[int] = []
        now_ms = time.time_ns() // 1_000_000
        for message in messages:
            error = message.error()
            if error is not None:
                # librdkafka's fatal state (a static member fenced by another with its id)
                # comes as a message with code _FATAL; the client is useless from then on.
                if error.code() == KafkaError._FATAL:
                    self._rejoin_after_fencing(error.str())
                    break
                if is_refusal(error):
                    refusal = refusal_of(
                        self._consumer, error, operation="read", resource=f"topic {self.topic}"
                    )
                    if refusal is not None:
                        raise refusal
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("%s reading %s: %s", self.name, self.topic, error)
                continue
            self.counts.records += 1
            partition, offset = _partition(message), _offset(message)
            replayed = self.replay.is_replay(partition, offset)
            self._read[partition] = offset + 1
            if not replayed:
                self._positions[partition] = offset + 1
            event = self._decode(message, now_ms, replayed=replayed)
            if event is not None:
                events.append(event)
                partitions.append(partition)
        self.last_partitions = partitions
        self.counts.events += len(events)
        now = time.monotonic()
        self.membership.polled_at = now
        if self.membership.rebuilt_at is None and self.membership.assigned_at is not None:
            self._follow_rebuild(now)
        if self.membership.caught_up_at is None and self.membership.assigned_at is not None:
            self._follow_catch_up(now, max_records)
        if now - self._lag_refreshed >= LAG_REFRESH_S:
            self._lag_refreshed = now
            self._refresh_lag()
        return events

    def _rejoin_after_fencing(self, reason: str) -> None:
        """Replace a client fenced by its own queued commit (REJOIN_AFTER_COMMIT_FENCED_S);
        raise ConsumerFencedError for any other fencing."""
        now = time.monotonic()
        if (
            self._new_client is None
            or _COMMIT_FENCED not in reason
            or (
                self._rejoined_at is not None
                and now - self._rejoined_at < REJOIN_AFTER_COMMIT_FENCED_S
            )
        ):
            raise ConsumerFencedError(self.name, self.topic, reason)
        logger.warning(
            "%s: fenced by a commit of its own queued before its session ran out; joining the "
            "group again with a new client (%s)",
            self.name,
            reason,
        )
        self._rejoined_at = now
        self.counts.rejoins_after_fencing += 1
        if self.membership.partitions:
            # As if lost: if the rejoin gives them back, reading resumes where it got.
            self._lost(
                self._consumer, [TopicPartition(self.topic, p) for p in self.membership.partitions]
            )
        fenced, self._consumer = self._consumer, self._new_client()
        try:
            fenced.close()
        except (KafkaException, RuntimeError) as exc:
            logger.debug("%s: closing the fenced client: %s", self.name, exc)
        self._subscribe()

    def positions(self) -> list[TopicPartition]:
        """Where reading has got to, per partition: what a commit after the side effect stores."""
        return [TopicPartition(self.topic, p, o) for p, o in sorted(self._positions.items())]

    def commit(self, positions: list[TopicPartition], *, wait: bool = True) -> None:
        """Flush dead letters, then commit `positions`; KafkaException on failure.

        `wait=False` sends the commit and returns (or skips it while dead letters are still
        unacknowledged): a coordinator that died would otherwise hold the caller for up to a
        session time-out. Its answer then reaches the consumer's
        `on_commit` (a `CommitListener` counting into these counts) on a later `poll`."""
        if not positions:
            return
        remaining = self._dead_letters.flush(DEAD_LETTER_FLUSH_TIMEOUT_S if wait else 0.0)
        if remaining and not wait:
            # Not yet: the next commit carries these positions, once the dead letters are in.
            logger.debug("commit deferred: %d dead letters not acknowledged yet", remaining)
            return
        if remaining:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, f"{remaining} dead letters not acknowledged")
            )
        try:
            if wait:
                self._consumer.commit(offsets=positions, asynchronous=False)
            else:
                self._consumer.commit(offsets=positions, asynchronous=True)
        except KafkaException:
            self.counts.commit_failures += 1
            raise
        if wait:
            self.counts.commits += 1

    def close(self) -> None:
        self._dead_letters.flush(DEAD_LETTER_FLUSH_TIMEOUT_S)
        self._leave_group()
        self._consumer.close()

    def _leave_group(self) -> None:
        """Unsubscribe and serve the revocation, after which the client leaves the group: a
        static member's close() alone does not (KIP-345), and its partitions would wait out
        its session instead of going to the others at once."""
        try:
            self._consumer.unsubscribe()
            deadline = time.monotonic() + LEAVE_TIMEOUT_S
            while self.membership.partitions and time.monotonic() < deadline:
                self._consumer.poll(0.05)  # records now are the next owner's to read
        except KafkaException as exc:
            logger.warning(
                "%s: leaving the group failed (its partitions move when its session expires): %s",
                self.name,
                exc,
            )

    @property
    def rebuilt(self) -> bool:
        """Assigned, and the windows hold what was read before the assignment."""
        return self.membership.rebuilt_at is not None

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        membership = self.membership
        membership.assigned_at = time.monotonic()
        membership.unassigned_at = None
        membership.rebuilt_at = None
        membership.partitions = frozenset(tp.partition for tp in partitions)
        released = {
            tp.partition: self._released[tp.partition]
            for tp in partitions
            if tp.partition in self._released
        }
        self._released = {}
        starts = self._replay_starts(consumer, [tp.partition for tp in partitions], released)
        # Given back with nobody having read on past us (committed at or before where our
        # reading got): resume there, windows intact, nothing re-read.
        replaying = {start.partition for start in starts}
        kept = {p: offset for p, offset in released.items() if p not in replaying}
        self._positions.update(kept)
        self._read.update(kept)
        self.counts.partitions_kept += len(kept)
        offsets = {**{start.partition: start.offset for start in starts}, **kept}
        if offsets:
            # Eager protocol: the assignment made in this callback is the one that counts.
            consumer.assign(
                [
                    TopicPartition(self.topic, tp.partition, offsets.get(tp.partition, tp.offset))
                    for tp in partitions
                ]
            )
        if starts:
            self._begin_replay(starts)

    def _replay_starts(
        self, consumer: Consumer, partitions: list[int], released: dict[int, int]
    ) -> list[ReplayStart]:
        """Where the partitions must be re-read from: from `replay_from`, or from where this
        consumer's reading got for those in `released` (up to what others committed since)."""
        from_ms = None if self.replay_from is None else self.replay_from()
        try:
            return replay_starts(consumer, self.topic, partitions, from_ms, released)
        except KafkaException as exc:
            # Judging on windows that refill is what happened before rebuilds existed; the
            # released partitions resume where reading got, as when nobody read on.
            self.replay.failures += 1
            logger.error("%s: cannot rebuild windows from %s: %s", self.name, self.topic, exc)
            return []

    def _begin_replay(self, starts: list[ReplayStart]) -> None:
        self.replay.begin(starts)
        for start in starts:
            self._positions[start.partition] = start.until
            self._read[start.partition] = start.offset
        logger.info(
            "%s: re-reading %s records of %s to rebuild the windows",
            self.name,
            sum(start.until - start.offset for start in starts),
            self.topic,
        )

    def _follow_rebuild(self, now: float) -> None:
        pending = self.replay.pending()
        if pending:
            tps = [TopicPartition(self.topic, p) for p in pending]
            try:
                positions = {tp.partition: tp.offset for tp in self._consumer.position(tps)}
            except KafkaException:
                return
            self.replay.reached(positions)
        if self.replay.done:
            self.membership.rebuilt_at = now
            if self.replay.replayed:
                logger.info("%s: windows rebuilt from %s", self.name, self.topic)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A clean revoke: if the same rebalance gives them back, reading resumes where it got."""
        self._release(partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost (the session expired): if they come back, reading resumes where it got, and
        whatever another member read and committed meanwhile is re-read into the windows."""
        self._release(partitions)

    def _release(self, partitions: list[TopicPartition]) -> None:
        self._released = {
            tp.partition: self._read[tp.partition]
            for tp in partitions
            if tp.partition in self._read
        }
        self._unassign(partitions)

    def _unassign(self, partitions: list[TopicPartition]) -> None:
        membership = self.membership
        membership.unassigned_at = time.monotonic()
        membership.rebuilt_at = None
        membership.partitions = frozenset()
        self.lag = {}
        # Another member owns them now: their progress is its to commit.
        revoked = [tp.partition for tp in partitions]
        self.replay.drop(revoked)
        for partition in revoked:
            self._positions.pop(partition, None)
            self._read.pop(partition, None)

    def _follow_catch_up(self, now: float, batch_records: int) -> None:
        """Measure the end offsets after the first assignment and watch them reached; then
        measure again, until the end is within one poll's batch (`batch_records`)."""
        if self._catch_up is None:
            self._catch_up = self._catch_up_targets()
            if self._catch_up is None:
                return
        remaining = self._left_to_read(self._catch_up)
        if self._catch_up:
            self.membership.catch_up_remaining = remaining
            return
        # The end moved while this consumer read up to it: a slow start (re-reading minutes of
        # traffic on a busy machine) leaves a backlog that a breach would wait behind.
        fresh = self._catch_up_targets()
        if fresh is None:
            return  # measured again on the next poll
        remaining = self._left_to_read(fresh)
        self.membership.catch_up_remaining = remaining
        if remaining > batch_records:
            self._catch_up = fresh
            return
        self.membership.caught_up_at = now
        logger.info(
            "%s caught up with %s (%d records behind its end)", self.name, self.topic, remaining
        )

    def _left_to_read(self, targets: dict[int, int]) -> int:
        """Records left before each partition reaches its target; drops reached partitions."""
        partitions = [TopicPartition(self.topic, p) for p in sorted(targets)]
        try:
            positions = {tp.partition: tp.offset for tp in self._consumer.position(partitions)}
        except KafkaException:
            positions = {}
        remaining = 0
        for partition, target in list(targets.items()):
            # Positions, not last offsets seen: transaction markers leave gaps.
            reached = max(positions.get(partition, -1), self._positions.get(partition, -1))
            if reached >= target:
                del targets[partition]
            else:
                remaining += target - max(reached, 0)
        return remaining

    def _catch_up_targets(self) -> dict[int, int] | None:
        """Partition -> high watermark, for partitions whose committed offset is below it."""
        partitions = [TopicPartition(self.topic, p) for p in sorted(self.membership.partitions)]
        try:
            committed = self._consumer.committed(partitions, timeout=CATCH_UP_PROBE_TIMEOUT_S)
            targets = {}
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition), timeout=CATCH_UP_PROBE_TIMEOUT_S
                )
                # No committed offset: the group starts at the earliest record (see clients.py).
                start = tp.offset if tp.offset >= 0 else low
                if start < high:
                    targets[tp.partition] = int(high)
        except KafkaException as exc:
            self.counts.catch_up_probe_failures += 1
            logger.warning("%s: cannot measure the end of %s yet: %s", self.name, self.topic, exc)
            return None
        return targets

    def _refresh_lag(self) -> None:
        """Lag per assigned partition from cached watermarks (no broker round trip)."""
        lag: dict[int, int] = {}
        for partition in sorted(self.membership.partitions):
            tp = TopicPartition(self.topic, partition)
            try:
                watermarks = self._consumer.get_watermark_offsets(tp, cached=True)
                position = self._consumer.position([tp])[0].offset
            except KafkaException as exc:
                # Not fetched from yet, or the broker is away: this partition's lag is unknown.
                self.counts.lag_unknown += 1
                logger.debug("%s: no lag for %s[%s]: %s", self.name, self.topic, partition, exc)
                continue
            if watermarks is None:
                continue
            _low, high = watermarks
            position = self._positions.get(partition, position)
            if high >= 0 and position >= 0:
                lag[partition] = max(high - position, 0)
        self.lag = lag

    def _decode(self, message: Message, now_ms: int, *, replayed: bool = False) -> E | None:
        record = SourceRecord(
            topic=message.topic() or self.topic,
            partition=_partition(message),
            offset=_offset(message),
            key=message.key(),
            value=message.value(),
        )
        validate = self._validate
        try:
            return decode_or_reject(
                record,
                self._codec,
                validate=None if validate is None else lambda event: validate(event, now_ms),
            )
        except RecordRejectedError as exc:
            if not replayed:  # a replayed record's dead letter was sent the first time
                self._dead_letter(dead_letter(record, exc, self.name, now_ms))
            return None

    def _dead_letter(self, letter: DeadLetter) -> None:
        self.counts.dead_lettered += 1
        logger.warning(
            "%s: dead letter for %s[%s]@%s: %s",
            self.name,
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.reason,
        )
        try:
            self._dead_letters.produce(
                self._dead_letter_topic,
                key=letter.key,
                value=DEAD_LETTER_CODEC.encode(letter),
                on_delivery=self._delivered,
            )
        except (BufferError, KafkaException) as error:
            self.counts.dead_letter_failures += 1
            logger.error("%s: dead letter not sent: %s", self.name, error)
        self._dead_letters.poll(0)

    def _delivered(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.counts.dead_letter_failures += 1
            logger.error("%s: dead letter lost: %s", self.name, error)


def _partition(message: Message) -> int:
    partition = message.partition()
    return -1 if partition is None else int(partition)


def _offset(message: Message) -> int:
    offset = message.offset()
    return -1 if offset is None else int(offset)
