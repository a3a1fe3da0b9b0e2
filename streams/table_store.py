"""The join state in faust tables (RocksDB via rocksdict, changelogged), with its codec."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

import rocksdict

from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.streams.exceptions import StreamError
from safeloop.streams.faust_adapter import partition_db, visible_items
from safeloop.streams.state import (
    EarlyOutcome,
    PendingPrediction,
    StoredEntry,
    Swap,
    new_early,
    new_pending,
)

V = TypeVar("V")

_HEADER = struct.Struct(">qB")  # expires_at_ms, number of predictions
_LENGTH = struct.Struct(">I")


def encode_pending(entry: PendingPrediction) -> bytes:
    """Bytes of a pending entry: expiry, predictions and the outcome, length-prefixed Avro.

    The events' consumed bytes are stored as they came when the entry carries them.
    """
    parts = [_HEADER.pack(entry.expires_at_ms, len(entry.predictions))]
    raws = entry.raw_predictions
    if raws is None or len(raws) != len(entry.predictions):
        raws = tuple(PREDICTION_CODEC.encode(p) for p in entry.predictions)
    for body in raws:
        parts += [_LENGTH.pack(len(body)), body]
    if entry.outcome is not None:
        raw_outcome = entry.raw_outcome
        parts.append(
            raw_outcome if raw_outcome is not None else OUTCOME_CODEC.encode(entry.outcome)
        )
    return b"".join(parts)


def decode_pending(data: bytes) -> PendingPrediction:
    expires_at_ms, count = _HEADER.unpack_from(data)
    position = _HEADER.size
    predictions = []
    raws = []
    for _ in range(count):
        (length,) = _LENGTH.unpack_from(data, position)
        position += _LENGTH.size
        body = data[position : position + length]
        raws.append(body)
        predictions.append(PREDICTION_CODEC.decode(body))
        position += length
    outcome = None
    raw_outcome = None
    if position < len(data):
        raw_outcome = data[position:]
        outcome = OUTCOME_CODEC.decode(raw_outcome)
    return new_pending(tuple(predictions), outcome, expires_at_ms, tuple(raws), raw_outcome)


def peek_entry(data: bytes) -> tuple[int, int, bool]:
    """(expires_at_ms, predictions, has_outcome) of either encoding, without decoding Avro."""
    expires_at_ms, count = _HEADER.unpack_from(data)
    position = _HEADER.size
    for _ in range(count):
        (length,) = _LENGTH.unpack_from(data, position)
        position += _LENGTH.size + length
    return expires_at_ms, count, position < len(data)


def encode_early(entry: EarlyOutcome) -> bytes:
    raw = entry.raw_outcome
    return _HEADER.pack(entry.expires_at_ms, 0) + (
        raw if raw is not None else OUTCOME_CODEC.encode(entry.outcome)
    )


def decode_early(data: bytes) -> EarlyOutcome:
    expires_at_ms, _ = _HEADER.unpack_from(data)
    raw = data[_HEADER.size :]
    return new_early(OUTCOME_CODEC.decode(raw), expires_at_ms, raw)


class ChangelogSender(Protocol):
    """Sends one record to one partition of a topic (flushed before source offsets commit)."""

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None: ...

    def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
    ) -> None: ...


# A key the current batch deleted.
_DELETED: Any = object()


class FaustTableStore(Generic[V]):
    """A `StateStore` over a faust Table with the RocksDB store, addressed by partition.

    Writes go to the partition's RocksDB and to the same partition of the table's changelog
    topic, as faust's own `table[key] = value` does, so faust restores the table from it after
    a crash or a rebalance. The changelog records go through `changelog` (confluent-kafka,
    flushed by the sink before offsets are committed) because faust's own producer path costs
    several times the rest of the join per record.

    Within a batch (`begin_batch` .. `end_batch`) the batch's keys are read with one multi-get
    per partition, reads and writes stay decoded in memory, and `end_batch` writes each changed
    key once: one RocksDB WriteBatch per partition and one changelog record per key (its last
    value; a prediction and its outcome in the same batch cost one write, not two).
    """

    def __init__(
        self,
        table: Any,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
        changelog: ChangelogSender | None = None,
    ) -> None:
        self.table = table
        self._encode = encode
        self._decode = decode
        self._changelog = changelog
        self._topic: str | None = None
        # Inside a batch: partition -> key -> raw bytes read (None: absent).
        self._read: dict[int, dict[bytes, bytes | None]] | None = None
        # Inside a batch: partition -> key -> value written (_DELETED: deleted).
        self._written: dict[int, dict[bytes, Any]] = {}
        # What the previous batch wrote, decoded: an outcome a batch after its prediction pairs
        # without decoding the stored entry again. Bounded by one batch; dropped on any write
        # outside a batch.
        self._recent: dict[int, dict[bytes, Any]] = {}

    def _db(self, partition: int) -> Any:
        db = partition_db(self.table, partition)
        if db is None:
            raise StreamError(f"table {self.table.name} needs the rocksdb:// store")
        return db

    def _send_many(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        if self._changelog is None:
            for key, value in records:
                self._send(partition, key, value)
            return
        if self._topic is None:
            self._topic = self.table.changelog_topic.get_topic_name()
        self._changelog.send_many(self._topic, records, partition)

    def _send(self, partition: int, key: bytes, value: bytes | None) -> None:
        if self._changelog is None:
            self.table.send_changelog(
                partition, key, value, key_serializer="raw", value_serializer="raw"
            )
            return
        if self._topic is None:
            self._topic = self.table.changelog_topic.get_topic_name()
        self._changelog.send(self._topic, key, value, partition)

    def begin_batch(self, keys: dict[int, list[str]]) -> None:
        read: dict[int, dict[bytes, bytes | None]] = {}
        for partition, partition_keys in keys.items():
            raw_keys = list(dict.fromkeys(key.encode() for key in partition_keys))
            values = self._db(partition).get(raw_keys) if raw_keys else []
            read[partition] = dict(zip(raw_keys, values, strict=True))
        self._read = read
        self._written = {}

    def new_in_batch(self, partition: int, key: str) -> bool:
        if self._read is None:
            return False
        raw_key = key.encode()
        value = self._written.get(partition, {}).get(raw_key)
        if value is None or value is _DELETED:
            return False
        read = self._read.get(partition, {})
        return raw_key in read and read[raw_key] is None

    def end_batch(self) -> None:
        written, self._written = self._written, {}
        read, self._read = self._read or {}, None
        self._recent = written
        encode = self._encode
        for partition, values in written.items():
            if not values:
                continue
            before = read.get(partition, {})
            batch = rocksdict.WriteBatch(raw_mode=True)
            sends: list[tuple[bytes, bytes | None]] = []
            for raw_key, value in values.items():
                if value is _DELETED:
                    if raw_key in before and before[raw_key] is None:
                        # Absent before the batch, put and deleted within it: nothing to write.
                        continue
                    batch.delete(raw_key)
                    sends.append((raw_key, None))
                else:
                    body = encode(value)
                    batch.put(raw_key, body)
                    sends.append((raw_key, body))
            if not sends:
                continue
            self._db(partition).write(batch)
            self._send_many(partition, sends)

    def forget(self, partition: int) -> None:
        self._recent.pop(partition, None)

    def get(self, partition: int, key: str) -> V | None:
        raw_key = key.encode()
        if self._read is not None:
            value = self._written.get(partition, {}).get(raw_key)
            if value is None:
                value = self._recent.get(partition, {}).get(raw_key)
            if value is not None:
                return None if value is _DELETED else cast(V, value)
            read = self._read.setdefault(partition, {})
            if raw_key in read:
                raw = read[raw_key]
            else:
                raw = read[raw_key] = self._db(partition).get(raw_key)
            return None if raw is None else self._decode(raw)
        raw = self._db(partition).get(raw_key)
        return None if raw is None else self._decode(raw)

    def peek(self, partition: int, key: str) -> StoredEntry | None:
        if self._read is not None:
            # Within a batch the value may be one not written yet: the decoded one stands in.
            value = self.get(partition, key)
            if value is None:
                return None
            raw_value = self._encode(value)
            return StoredEntry(*peek_entry(raw_value), value)
        raw = self._db(partition).get(key.encode())
        if raw is None:
            return None
        return StoredEntry(*peek_entry(raw), raw)

    def put(self, partition: int, key: str, value: V) -> None:
        raw_key = key.encode()
        if self._read is not None:
            self._written.setdefault(partition, {})[raw_key] = value
            return
        self._recent = {}
        raw = self._encode(value)
        self._db(partition).put(raw_key, raw)
        self._send(partition, raw_key, raw)

    def delete(self, partition: int, key: str) -> None:
        raw_key = key.encode()
        if self._read is not None:
            self._written.setdefault(partition, {})[raw_key] = _DELETED
            return
        self._recent = {}
        self._db(partition).delete(raw_key)
        self._send(partition, raw_key, None)

    def release_unchanged(self, items: Sequence[Swap[V]]) -> list[bool | None]:
        """`StateStore.release_unchanged` in one multi-get and one WriteBatch per partition;
        a stored value is compared by its bytes (no Avro decode) and decoded only if they
        differ from `expected`'s (e.g. bytes of an older writer schema)."""
        if self._read is not None:
            raise StreamError("release_unchanged runs between batches")
        answers: list[bool | None] = [None] * len(items)
        by_partition: dict[int, list[int]] = {}
        for position, item in enumerate(items):
            by_partition.setdefault(item[0], []).append(position)
        encode, decode = self._encode, self._decode
        for partition, positions in by_partition.items():
            db = self._db(partition)
            raw_keys = [items[i][1].encode() for i in positions]
            unique = list(dict.fromkeys(raw_keys))
            # What each key holds now, updated as this call writes (a key may come twice).
            stored: dict[bytes, bytes | None] = dict(zip(unique, db.get(unique), strict=True))
            batch = rocksdict.WriteBatch(raw_mode=True)
            sends: list[tuple[bytes, bytes | None]] = []
            recent = self._recent.get(partition)
            for position, raw_key in zip(positions, raw_keys, strict=True):
                _, _, expected, replacement = items[position]
                raw = stored[raw_key]
                if raw is None:
                    continue
                if isinstance(expected, bytes):
                    # What `peek` read: the same bytes unless something wrote the key since.
                    unchanged = raw == expected
                else:
                    unchanged = raw == encode(cast(V, expected)) or decode(raw) == expected
                if not unchanged:
                    answers[position] = False
                    continue
                body = None if replacement is None else encode(replacement)
                if body is None:
                    batch.delete(raw_key)
                else:
                    batch.put(raw_key, body)
                stored[raw_key] = body
                sends.append((raw_key, body))
                if recent:
                    recent.pop(raw_key, None)
                answers[position] = True
            if sends:
                db.write(batch)
                self._send_many(partition, sends)
        return answers

    def items(self, partition: int) -> Iterator[tuple[str, V]]:
        for raw_key, raw in visible_items(self.table, self._db(partition)):
            yield raw_key.decode(), self._decode(raw)

    def expiries(self, partition: int) -> Iterator[tuple[str, int]]:
        # Both encodings start with the expiry: a rebalance re-indexes without decoding Avro.
        unpack = _HEADER.unpack_from
        for raw_key, raw in visible_items(self.table, self._db(partition)):
            yield raw_key.decode(), unpack(raw)[0]
