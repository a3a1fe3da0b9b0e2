"""The expiry index: buckets, deadlines, rebuild and sizes."""

from __future__ import annotations

import pytest

from safeloop.streams.expiry import ExpiryIndex


def test_due_yields_keys_whose_bucket_started() -> None:
    index = ExpiryIndex(bucket_ms=100)
    index.add(0, "a", 150)
    index.add(0, "b", 250)
    index.add(0, "c", 999)
    assert list(index.due(0, 99)) == []
    assert list(index.due(0, 160)) == ["a"]
    index.discard(0, "a", 150)
    assert list(index.due(0, 260)) == ["b"]
    index.discard(0, "b", 250)
    assert index.size(0) == 1


def test_a_key_not_yet_discarded_stays_due_without_holding_back_later_buckets() -> None:
    index = ExpiryIndex(bucket_ms=100)
    index.add(0, "a", 150)
    index.add(0, "b", 250)
    index.add(0, "c", 350)
    # "a" is not discarded (its release waits for a flush): "b" is due all the same.
    assert list(index.due(0, 260)) == ["a", "b"]
    index.discard(0, "b", 250)
    assert list(index.due(0, 360)) == ["a", "c"]
    index.discard(0, "a", 150)
    index.discard(0, "c", 350)
    assert list(index.due(0, 1_000)) == []
    assert index.size(0) == 0
    # A bucket emptied and filled again (a key added with a deadline already past) is due.
    index.add(0, "d", 150)
    assert list(index.due(0, 1_000)) == ["d"]


def test_add_is_idempotent_and_sizes_are_per_partition() -> None:
    index = ExpiryIndex()
    index.add(0, "a", 10)
    index.add(0, "a", 10)
    index.add(1, "b", 10)
    assert index.size(0) == 1
    assert index.size() == 2
    index.drop_partition(1)
    assert index.size() == 1
    assert index.partitions() == [0]


def test_rebuild_replaces_a_partition() -> None:
    index = ExpiryIndex(bucket_ms=10)
    index.add(0, "old", 5)
    index.rebuild(0, [("x", 5), ("y", 50)])
    assert index.size(0) == 2
    assert list(index.due(0, 5)) == ["x"]


def test_rebuild_indexes_as_adding_each_entry_does() -> None:
    entries = [("a", 250), ("b", 150), ("a", 250), ("c", 999), ("d", 155), ("e", 40)]
    rebuilt, added = ExpiryIndex(bucket_ms=100), ExpiryIndex(bucket_ms=100)
    rebuilt.rebuild(0, iter(entries))
    for key, expires_at_ms in entries:
        added.add(0, key, expires_at_ms)
    assert rebuilt.size(0) == added.size(0) == 5
    for now_ms in (0, 40, 199, 260, 1000):
        assert sorted(rebuilt.due(0, now_ms)) == sorted(added.due(0, now_ms))
    # Discarding and adding after a rebuild keep the size and the buckets' order right.
    rebuilt.rebuild(0, iter(entries))
    rebuilt.discard(0, "e", 40)
    rebuilt.add(0, "f", 10)
    assert rebuilt.size(0) == 5
    assert list(rebuilt.due(0, 20)) == ["f"]


def test_bucket_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ExpiryIndex(bucket_ms=0)
