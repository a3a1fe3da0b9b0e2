"""The Java client's default partitioner for keyed records: murmur2 of the key, made positive,
modulo the partition count (Kafka's `Utils.murmur2` / `Utils.toPositive`).

librdkafka's `murmur2_random` partitioner chooses the same partition for a keyed record, so
this is where a record "belongs" whichever client wrote it; the join uses it as the home
partition of a prediction_id.
"""

from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


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
