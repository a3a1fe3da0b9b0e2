"""The Java client's default partitioner for keyed records: murmur2 of the key, made positive,
modulo the partition count (Kafka's `Utils.murmur2` / `Utils.toPositive`).

librdkafka's `murmur2_random` partitioner chooses the same partition for a keyed record, so
this is where a record "belongs" whichever client wrote it; the join uses it as the home
partition of a prediction_id.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}
# Fewer keys of one length than this are hashed one by one (numpy's per-call cost).
_VECTOR_MIN = 16


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of `data`, as an unsigned int (Java's int reinterpreted)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    count = length // 4
    words = _WORDS.get(count)
    if words is None:
        words = _WORDS[count] = struct.Struct(f"<{count}I")
    m = _M
    mask = _MASK
    for word in words.unpack_from(data):
        # (h*m mod 2^32) ^ (k*m mod 2^32) == (h*m ^ k*m) mod 2^32: one mask per step.
        k = word * m & mask
        h = (h * m ^ (k ^ k >> 24) * m) & mask
    tail = length & 3
    if tail:
        base = count * 4
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def default_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client (and librdkafka's murmur2_random) picks for `key`."""
    if partitions <= 0:
        raise ValueError(f"partitions must be positive, got {partitions}")
    # Utils.toPositive: clear the sign bit (not abs()).
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """`murmur2` of each key, in order: keys of one length are hashed together (numpy's uint32
    arithmetic wraps mod 2^32 as the scalar version masks), a batch at a time."""
    out = [0] * len(keys)
    by_length: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(index)
    m = np.uint32(_M)
    for length, indexes in by_length.items():
        if len(indexes) < _VECTOR_MIN:
            for index in indexes:
                out[index] = murmur2(keys[index])
            continue
        data = np.frombuffer(b"".join([keys[i] for i in indexes]), dtype=np.uint8)
        data = data.reshape(len(indexes), length)
        h = np.full(len(indexes), (_SEED ^ length) & _MASK, dtype=np.uint32)
        count = length // 4
        if count:
            words = np.ascontiguousarray(data[:, : count * 4]).view("<u4")
            for column in range(count):
                k = words[:, column] * m
                k ^= k >> np.uint32(24)
                k *= m
                h *= m
                h ^= k
        tail = length & 3
        if tail:
            base = count * 4
            if tail == 3:
                h ^= data[:, base + 2].astype(np.uint32) << np.uint32(16)
            if tail >= 2:
                h ^= data[:, base + 1].astype(np.uint32) << np.uint32(8)
            h ^= data[:, base].astype(np.uint32)
            h *= m
        h ^= h >> np.uint32(13)
        h *= m
        h ^= h >> np.uint32(15)
        for index, value in zip(indexes, h.tolist(), strict=True):
            out[index] = value
    return out
