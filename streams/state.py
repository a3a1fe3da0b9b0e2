"""The join's state: what waits per prediction_id, and the store Protocol it lives in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from safeloop.schemas.events import OutcomeEvent, PredictionEvent
from safeloop.schemas.records import slot_constructor

V = TypeVar("V")

# (partition, key, expected value or the bytes `peek` read, replacement or None to delete):
# see `release_unchanged`.
Swap = tuple[int, str, object, V | None]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """What expiry needs of a stored entry, read without decoding its events (`peek`)."""

    expires_at_ms: int
    predictions: int
    has_outcome: bool
    # What `release_unchanged` compares with: the stored bytes, or the value in a store that
    # keeps values.
    stored: object


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    """The predictions of one prediction_id (one per route) and the newest outcome seen for it.

    A joined entry is kept until its window closes, so a replayed or corrected outcome
    can pair again after a crash; `expires_at_ms` is fixed by the first prediction.
    """

    predictions: tuple[PredictionEvent, ...]
    outcome: OutcomeEvent | None
    expires_at_ms: int
    # The Avro bytes of `predictions` and `outcome` as consumed, when known: storing them
    # skips a re-encode per write. Not part of equality; None means "encode the events".
    raw_predictions: tuple[bytes, ...] | None = field(default=None, compare=False, repr=False)
    raw_outcome: bytes | None = field(default=None, compare=False, repr=False)

    def for_route(self, route: str) -> PredictionEvent | None:
        for prediction in self.predictions:
            if prediction.route == route:
                return prediction
        return None


@dataclass(frozen=True, slots=True)
class EarlyOutcome:
    """An outcome that arrived before its prediction, kept until `expires_at_ms`."""

    outcome: OutcomeEvent
    expires_at_ms: int
    # The Avro bytes of `outcome` as consumed, when known (see PendingPrediction).
    raw_outcome: bytes | None = field(default=None, compare=False, repr=False)


# Built positionally (every field, in order) without the frozen __init__'s object.__setattr__ per
# field: about half the cost, for entries built once or twice per pair on the hot path.
new_pending: Final = slot_constructor(PendingPrediction)
new_early: Final = slot_constructor(EarlyOutcome)


class StateStore(Protocol[V]):
    """A key-value table partitioned like its source topic (a changelogged table)."""

    def get(self, partition: int, key: str) -> V | None: ...

    def put(self, partition: int, key: str, value: V) -> None: ...

    def delete(self, partition: int, key: str) -> None: ...

    def items(self, partition: int) -> Iterator[tuple[str, V]]: ...

    def peek(self, partition: int, key: str) -> StoredEntry | None:
        """The entry's expiry and shape without decoding it (outside a batch): expiry holds
        this, not the decoded events, until its release."""
        ...

    def expiries(self, partition: int) -> Iterator[tuple[str, int]]:
        """(key, expires_at_ms) of every entry; rebuilding the expiry index needs no more."""
        ...

    def begin_batch(self, keys: dict[int, list[str]]) -> None:
        """Start a batch: `keys` (by partition) are about to be read; writes may be held
        until `end_batch` (reads in between see them)."""
        ...

    def end_batch(self) -> None:
        """Write what the batch changed (one write per key, its last value)."""
        ...

    def forget(self, partition: int) -> None:
        """Drop what is cached of `partition`: its state may change elsewhere (a rebalance)."""
        ...

    def new_in_batch(self, partition: int, key: str) -> bool:
        """Whether `key` holds a value the current batch wrote and was absent before it, so
        deleting it within the batch writes nothing at all."""
        ...

    def release_unchanged(self, items: Sequence[Swap[V]]) -> list[bool | None]:
        """For each `(partition, key, expected, replacement)` in order: if the key still holds
        `expected` (a value, or the `stored` that `peek` read), write `replacement` (None:
        delete it) and answer True; False if it holds something else, None if it is absent.
        Outside a batch."""
        ...


class InMemoryStateStore(StateStore[V]):
    """A dict-backed store for unit tests and benchmarks of the join alone."""

    def __init__(self) -> None:
        self._partitions: dict[int, dict[str, V]] = {}

    def get(self, partition: int, key: str) -> V | None:
        return self._partitions.get(partition, {}).get(key)

    def put(self, partition: int, key: str, value: V) -> None:
        self._partitions.setdefault(partition, {})[key] = value

    def delete(self, partition: int, key: str) -> None:
        self._partitions.get(partition, {}).pop(key, None)

    def items(self, partition: int) -> Iterator[tuple[str, V]]:
        yield from list(self._partitions.get(partition, {}).items())

    def peek(self, partition: int, key: str) -> StoredEntry | None:
        value = self.get(partition, key)
        if value is None:
            return None
        predictions = getattr(value, "predictions", ())
        has_outcome = getattr(value, "outcome", None) is not None
        expires_at_ms: int = value.expires_at_ms  # type: ignore[attr-defined]
        return StoredEntry(expires_at_ms, len(predictions), has_outcome, value)

    def expiries(self, partition: int) -> Iterator[tuple[str, int]]:
        for key, value in self.items(partition):
            yield key, value.expires_at_ms  # type: ignore[attr-defined]

    def begin_batch(self, keys: dict[int, list[str]]) -> None:
        return None

    def end_batch(self) -> None:
        return None

    def forget(self, partition: int) -> None:
        return None

    def new_in_batch(self, partition: int, key: str) -> bool:
        # No batches here: every write is final at once.
        return False

    def release_unchanged(self, items: Sequence[Swap[V]]) -> list[bool | None]:
        answers: list[bool | None] = []
        for partition, key, expected, replacement in items:
            current = self.get(partition, key)
            if current is None or current != expected:
                answers.append(None if current is None else False)
                continue
            if replacement is None:
                self.delete(partition, key)
            else:
                self.put(partition, key, replacement)
            answers.append(True)
        return answers

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._partitions.values())
