"""FaustTableStore's batches: one multi-get, reads that see the batch's own writes, and one
RocksDB write and one changelog record per changed key at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import rocksdict
from _stream_events import outcome, prediction

from safeloop.streams.join import JoinWindow, closed_marker
from safeloop.streams.state import EarlyOutcome, PendingPrediction
from safeloop.streams.table_store import (
    FaustTableStore,
    decode_early,
    decode_pending,
    encode_early,
    encode_pending,
    peek_entry,
)
from safeloop.streams.windows import JoinWindows


class _Store:
    """What FaustTableStore reads off faust's RocksDB store: a database per partition."""

    offset_key = b"__faust\0offset__"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dbs: dict[int, Any] = {}

    def _db_for_partition(self, partition: int) -> Any:
        if partition not in self.dbs:
            self.dbs[partition] = rocksdict.Rdict(
                str(self.root / str(partition)), rocksdict.Options(raw_mode=True)
            )
        return self.dbs[partition]

    def _visible_items(self, db: Any) -> Any:
        return ((k, v) for k, v in db.items() if k != self.offset_key)


class _Changelog:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        self.sent.append((topic, key, value, partition))

    def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
    ) -> None:
        for key, value in records:
            self.send(topic, key, value, partition)


def _table(root: Path, name: str) -> Any:
    """What FaustTableStore reads off a faust table: its name, store and changelog topic."""
    return SimpleNamespace(
        name=name,
        data=_Store(root),
        changelog_topic=SimpleNamespace(get_topic_name=lambda: f"{name}-changelog"),
    )


def _store(tmp_path: Path) -> tuple[FaustTableStore[str], _Changelog, _Store]:
    table = _table(tmp_path, "t")
    changelog = _Changelog()
    store = FaustTableStore[str](table, str.encode, bytes.decode, changelog)
    return store, changelog, table.data


def test_a_batch_writes_each_changed_key_once_with_its_last_value(tmp_path: Path) -> None:
    store, changelog, data = _store(tmp_path)
    store.put(0, "kept", "v0")
    store.put(1, "gone", "x")
    changelog.sent.clear()
    store.begin_batch({0: ["kept", "new"], 1: ["gone"]})
    assert store.get(0, "kept") == "v0"
    assert store.get(0, "new") is None
    store.put(0, "new", "a")
    store.put(0, "new", "b")
    assert store.get(0, "new") == "b"  # the batch reads its own writes
    store.delete(1, "gone")
    assert store.get(1, "gone") is None
    store.put(0, "unlisted", "u")  # a key not announced is read and written all the same
    # Nothing is written before the batch ends.
    assert changelog.sent == []
    assert data._db_for_partition(0).get(b"new") is None
    store.end_batch()
    assert sorted(changelog.sent, key=repr) == sorted(
        [
            ("t-changelog", b"new", b"b", 0),
            ("t-changelog", b"unlisted", b"u", 0),
            ("t-changelog", b"gone", None, 1),
        ],
        key=repr,
    )
    assert data._db_for_partition(0).get(b"new") == b"b"
    assert data._db_for_partition(1).get(b"gone") is None
    # Outside a batch, every write goes through at once again.
    store.put(0, "after", "z")
    assert changelog.sent[-1] == ("t-changelog", b"after", b"z", 0)
    assert store.get(0, "after") == "z"


def test_the_next_batch_reads_the_previous_batchs_writes_until_anything_else_writes(
    tmp_path: Path,
) -> None:
    store, _, data = _store(tmp_path)
    store.begin_batch({0: ["a"]})
    store.put(0, "a", "first")
    store.end_batch()
    # Changed behind the store's back (as a changelog restore would): the cache still answers
    # until the partition is forgotten, as the join does on every assignment and revocation.
    data._db_for_partition(0).put(b"a", b"restored")
    store.begin_batch({0: ["a"]})
    assert store.get(0, "a") == "first"
    store.end_batch()
    store.forget(0)
    store.begin_batch({0: ["a"]})
    assert store.get(0, "a") == "restored"
    store.put(0, "a", "second")
    store.end_batch()
    store.delete(0, "a")  # a write outside a batch drops the cache
    store.begin_batch({0: ["a"]})
    assert store.get(0, "a") is None
    store.end_batch()


def test_release_unchanged_compares_bytes_and_writes_once_per_partition(tmp_path: Path) -> None:
    store, changelog, data = _store(tmp_path)
    for partition, key, value in [(0, "same", "v"), (0, "moved", "new"), (1, "closing", "open")]:
        store.put(partition, key, value)
    changelog.sent.clear()
    answers = store.release_unchanged(
        [
            (0, "same", "v", None),  # unchanged: deleted
            (0, "moved", "old", None),  # changed since: kept
            (0, "absent", "x", None),  # not there
            (1, "closing", "open", "closed"),  # unchanged: replaced
            (1, "closing", "open", None),  # the same key again now holds "closed": changed
        ]
    )
    assert answers == [True, False, None, True, False]
    assert data._db_for_partition(0).get(b"same") is None
    assert data._db_for_partition(0).get(b"moved") == b"new"
    assert data._db_for_partition(1).get(b"closing") == b"closed"
    assert sorted(changelog.sent, key=repr) == sorted(
        [("t-changelog", b"same", None, 0), ("t-changelog", b"closing", b"closed", 1)], key=repr
    )


def test_release_unchanged_decodes_when_the_bytes_differ_and_drops_the_cached_key(
    tmp_path: Path,
) -> None:
    table = _table(tmp_path, "t")
    data = table.data
    # Stored bytes of another writer (padded) decode to the same value: still unchanged.
    store = FaustTableStore[str](table, str.encode, lambda b: b.decode().strip(), _Changelog())
    store.begin_batch({0: ["k"]})
    store.put(0, "k", "v")
    store.end_batch()  # "v" now cached as the previous batch's write
    data._db_for_partition(0).put(b"k", b"  v")
    assert store.release_unchanged([(0, "k", "v", None)]) == [True]
    assert data._db_for_partition(0).get(b"k") is None
    store.begin_batch({0: ["k"]})
    assert store.get(0, "k") is None  # not answered from the cache
    store.end_batch()


def test_a_key_put_and_deleted_within_a_batch_and_absent_before_writes_nothing(
    tmp_path: Path,
) -> None:
    store, changelog, data = _store(tmp_path)
    store.put(0, "old", "o")
    changelog.sent.clear()
    store.begin_batch({0: ["new", "old"]})
    assert not store.new_in_batch(0, "new")  # nothing written yet
    store.put(0, "new", "n")
    store.put(0, "old", "o2")
    assert store.new_in_batch(0, "new")
    assert not store.new_in_batch(0, "old")  # held a value before the batch
    store.delete(0, "new")
    store.delete(0, "old")
    assert not store.new_in_batch(0, "new")
    store.end_batch()
    assert changelog.sent == [("t-changelog", b"old", None, 0)]
    assert data._db_for_partition(0).get(b"old") is None
    assert not store.new_in_batch(0, "old")  # outside a batch


def test_an_outcome_paired_within_its_own_batch_leaves_no_early_outcome_anywhere(
    tmp_path: Path,
) -> None:
    from _stream_events import outcome, prediction

    from safeloop.streams.join import JoinWindow
    from safeloop.streams.state import EarlyOutcome, PendingPrediction
    from safeloop.streams.table_store import (
        decode_early,
        decode_pending,
        encode_early,
        encode_pending,
    )
    from safeloop.streams.windows import JoinWindows

    changelog = _Changelog()
    pending_table = _table(tmp_path / "pending", "pending")
    early_table = _table(tmp_path / "early", "early")
    join = JoinWindow(
        FaustTableStore[PendingPrediction](
            pending_table, encode_pending, decode_pending, changelog
        ),
        FaustTableStore[EarlyOutcome](early_table, encode_early, decode_early, changelog),
        JoinWindows(default_window_ms=10_000),
        lambda: 1_500,
    )
    join.assign(0)
    p, o = prediction(), outcome()
    join.begin_batch({0: [o.prediction_id, p.prediction_id]})
    assert join.on_outcome(0, o).feedback == []
    paired = join.on_prediction(0, p)
    join.end_batch()
    assert len(paired.feedback) == 1 and paired.releases == []
    assert join.early_size(0) == 0 and join.pending_size(0) == 1
    assert [topic for topic, *_ in changelog.sent] == ["pending-changelog"]
    assert list(early_table.data._db_for_partition(0).items()) == []
    stored = decode_pending(pending_table.data._db_for_partition(0).get(p.prediction_id.encode()))
    assert stored.outcome == o


def _join_over_tables(
    tmp_path: Path, decode: Callable[[bytes], PendingPrediction] = decode_pending
) -> tuple[JoinWindow, FaustTableStore[PendingPrediction], list[int]]:
    """A join over RocksDB-backed table stores (10 s windows, closed for 60 s after), its
    pending store, and its clock (`now[0]`, from 1,500 ms)."""
    pending = FaustTableStore[PendingPrediction](
        _table(tmp_path / "pending", "pending"), encode_pending, decode, _Changelog()
    )
    early = FaustTableStore[EarlyOutcome](
        _table(tmp_path / "early", "early"), encode_early, decode_early, _Changelog()
    )
    now = [1_500]
    windows = JoinWindows(default_window_ms=10_000, early_outcome_wait_ms=60_000)
    return JoinWindow(pending, early, windows, lambda: now[0]), pending, now


def test_peek_reads_expiry_and_shape_of_both_encodings_without_decoding() -> None:
    joined = PendingPrediction((prediction("a"), prediction("a", version="v2")), outcome("a"), 9)
    assert peek_entry(encode_pending(joined)) == (9, 2, True)
    assert peek_entry(encode_pending(PendingPrediction((prediction("b"),), None, 7))) == (
        7,
        1,
        False,
    )
    assert peek_entry(encode_pending(closed_marker(5))) == (5, 0, False)
    assert peek_entry(encode_early(EarlyOutcome(outcome("c"), 3))) == (3, 0, True)


def test_expiry_decodes_only_unmatched_entries_and_its_releases_hold_the_stored_bytes(
    tmp_path: Path,
) -> None:
    decoded: list[bytes] = []

    def counting_decode(data: bytes) -> PendingPrediction:
        decoded.append(data)
        return decode_pending(data)

    join, pending, now = _join_over_tables(tmp_path, counting_decode)
    join.on_prediction(0, prediction("joined"))
    join.on_outcome(0, outcome("joined"))
    join.on_prediction(0, prediction("unmatched"))
    decoded.clear()
    now[0] = 20_000
    out = join.expire(0)
    # One decode, for the unmatched entry's expired row; the joined one stays bytes.
    assert [r.prediction_id for r in out.feedback] == ["unmatched"]
    assert len(decoded) == 1
    assert all(isinstance(r.expected, bytes) for r in out.releases)
    assert join.release(out.releases) == 2
    # Both are closed markers now, released (deleted) by a later sweep without a decode.
    now[0] = 20_000 + 60_000 + 11_000
    decoded.clear()
    later = join.expire(0)
    assert later.feedback == [] and len(later.releases) == 2 and decoded == []
    assert join.release(later.releases) == 2
    assert pending.get(0, "joined") is None and pending.get(0, "unmatched") is None


def test_a_release_is_refused_when_the_entry_changed_after_expiry_peeked(tmp_path: Path) -> None:
    join, pending, now = _join_over_tables(tmp_path)
    join.on_prediction(0, prediction("p"))
    now[0] = 20_000
    out = join.expire(0)
    # Written between the sweep and the flush: the entry is not closed under the writer.
    pending.put(0, "p", PendingPrediction((prediction("p"),), outcome("p"), 11_000))
    assert join.release(out.releases) == 0
    entry = pending.get(0, "p")
    assert entry is not None and entry.outcome is not None
