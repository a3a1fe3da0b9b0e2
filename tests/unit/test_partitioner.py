"""murmur2 and the default partitioner match Kafka's Java client (Utils.murmur2, toPositive)."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from safeloop.infra.kafka.partitioner import default_partition, murmur2, murmur2_many


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


# The cases of Kafka's own UtilsTest.testMurmur2 (Java ints).
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafkas_reference_values(data: bytes, expected: int) -> None:
    assert _signed(murmur2(data)) == expected


def test_murmur2_matches_an_independent_implementation_for_every_tail_length() -> None:
    rng = random.Random(7)
    for length in range(0, 70):
        for _ in range(20):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(bytearray(data)) & 0xFFFFFFFF, data


def test_the_partition_clears_the_sign_bit_rather_than_taking_the_absolute_value() -> None:
    # murmur2(b"21") is negative as a Java int: toPositive gives 1173551340, abs() 973932308.
    assert default_partition(b"21", 7) == 3
    assert 973932308 % 7 == 6


def test_partitions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        default_partition(b"x", 0)


def test_murmur2_over_a_batch_equals_murmur2_of_each_key() -> None:
    rng = random.Random(11)
    # Every tail length, lengths with many keys (hashed together) and with few (one by one).
    keys = [rng.randbytes(length) for length in range(0, 70) for _ in range(20)]
    keys += [rng.randbytes(36) for _ in range(500)] + [b"", b"a"]
    rng.shuffle(keys)
    assert murmur2_many(keys) == [murmur2(key) for key in keys]
    assert murmur2_many([]) == []
