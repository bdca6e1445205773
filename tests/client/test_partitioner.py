"""Specification of plinth.client.partitioner: Kafka-compatible key hashing and stickiness."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plinth.client.partitioner import StickyPartitioner, murmur2, partition_for_key

# The vectors of Kafka's UtilsTest.testMurmur2
# (apache/kafka clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
KAFKA_MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def java_murmur2(data: bytes) -> int:
    """A line-by-line transliteration of Kafka's Utils.murmur2 with Java int wrap-around."""

    def to_int(x: int) -> int:  # Java int overflow
        x &= 0xFFFFFFFF
        return x - (1 << 32) if x >= 1 << 31 else x

    def ushr(x: int, n: int) -> int:  # Java >>>
        return (x & 0xFFFFFFFF) >> n

    length = len(data)
    m, r = to_int(0x5BD1E995), 24
    h = to_int(to_int(0x9747B28C) ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = to_int(data[i4] + (data[i4 + 1] << 8) + (data[i4 + 2] << 16) + (data[i4 + 3] << 24))
        k = to_int(k * m)
        k = to_int(k ^ ushr(k, r))
        k = to_int(k * m)
        h = to_int(h * m)
        h = to_int(h ^ k)
    rest = length % 4
    if rest >= 3:
        h = to_int(h ^ (data[(length & ~3) + 2] << 16))
    if rest >= 2:
        h = to_int(h ^ (data[(length & ~3) + 1] << 8))
    if rest >= 1:
        h = to_int(h ^ data[length & ~3])
        h = to_int(h * m)
    h = to_int(h ^ ushr(h, 13))
    h = to_int(h * m)
    h = to_int(h ^ ushr(h, 15))
    return h


@pytest.mark.parametrize(("data", "expected"), KAFKA_MURMUR2_VECTORS)
def test_murmur2_returns_kafkas_reference_hash(data, expected):
    # Given a key from Kafka's own murmur2 test
    # When it is hashed
    # Then the signed 32-bit result is the one Kafka asserts
    assert murmur2(data) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_murmur2_agrees_with_a_literal_transliteration_of_kafkas_java_for_any_bytes(data):
    # Given any bytes, of every length modulo 4
    # When hashed by the optimised and by the literal implementation
    # Then both agree, and the result is a signed 32-bit int
    result = murmur2(data)
    assert result == java_murmur2(data)
    assert -(2**31) <= result < 2**31


def test_murmur2_accepts_bytearray_and_memoryview_like_bytes():
    # Given the same key as bytes, bytearray and memoryview
    data = b"a-little-bit-longer-string"
    # When each is hashed
    # Then all give Kafka's hash
    assert murmur2(bytearray(data)) == murmur2(memoryview(data)) == -1486304829


# (key, partition_count, partition) from the reference hashes above:
# toPositive(h) = h & 0x7fffffff, then % partition_count.
KAFKA_PARTITION_EXAMPLES = [
    (b"21", 100, 40),
    (b"foobar", 10, 6),        # toPositive, not abs: abs(-790332482) % 10 would be 2
    (b"foobar", 100, 66),
    (b"a-little-bit-long-string", 3, 2),
    (b"a-little-bit-longer-string", 10, 9),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 100, 77),
    (b"abc", 10, 7),
    (b"abc", 1, 0),
]


@pytest.mark.parametrize(("key", "partition_count", "expected"), KAFKA_PARTITION_EXAMPLES)
def test_partition_for_key_picks_the_partition_kafkas_default_partitioner_picks(
        key, partition_count, expected):
    # Given a key whose Kafka murmur2 hash is known
    # When its partition is chosen, from bytes or a bytearray
    # Then it is toPositive(murmur2(key)) % partition_count
    assert partition_for_key(key, partition_count) == expected
    assert partition_for_key(bytearray(key), partition_count) == expected


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=200), partition_count=st.integers(1, 4096))
def test_partition_for_key_is_always_a_valid_partition(key, partition_count):
    # Given any key and partition count
    # When a partition is chosen
    # Then it is in range and follows Kafka's formula
    partition = partition_for_key(key, partition_count)
    assert 0 <= partition < partition_count
    assert partition == (java_murmur2(key) & 0x7FFFFFFF) % partition_count


def test_partition_for_key_rejects_a_partition_count_below_one():
    # Given no partitions
    # When a partition is asked for
    # Then ValueError names the count
    with pytest.raises(ValueError, match="partition_count is 0"):
        partition_for_key(b"k", 0)


def test_sticky_partitioner_keeps_its_partition_until_next_batch():
    # Given a sticky partitioner over 8 partitions
    sticky = StickyPartitioner(8, rng=random.Random(1))
    first = sticky.partition()
    # When keyless records ask for a partition many times
    # Then they all get the same one
    assert 0 <= first < 8
    assert all(sticky.partition() == first for _ in range(100))


def test_sticky_partitioner_moves_to_a_different_partition_on_next_batch():
    # Given a sticky partitioner over 8 partitions
    sticky = StickyPartitioner(8, rng=random.Random(2))
    seen = {sticky.partition()}
    for _ in range(200):
        previous = sticky.partition()
        # When a batch is sent
        current = sticky.next_batch()
        # Then the partition changes, stays in range, and is the one now returned
        assert current != previous
        assert 0 <= current < 8
        assert sticky.partition() == current
        seen.add(current)
    # And over many batches every partition is used
    assert seen == set(range(8))


def test_sticky_partitioner_with_one_partition_stays_on_it():
    # Given a topic with a single partition
    sticky = StickyPartitioner(1)
    # When batches are sent
    # Then partition 0 is the only choice
    assert sticky.partition() == 0
    assert sticky.next_batch() == 0
    assert sticky.partition_count == 1


def test_sticky_partitioner_rejects_a_partition_count_below_one():
    # Given no partitions / When a sticky partitioner is made / Then ValueError
    with pytest.raises(ValueError, match="partition_count is 0"):
        StickyPartitioner(0)


def test_the_producer_places_a_keyed_record_where_partition_for_key_says():
    # Given the producer's own placement (client/_producer.c) and partition_for_key,
    # both built on client/kafka_murmur2.h
    from plinth.client.accumulator import RecordAccumulator

    accumulator = RecordAccumulator(batch_bytes_max=1 << 20, linger_ms=5,
                                    buffer_bytes_max=1 << 24, max_block_ms=0, wake=lambda: None)
    accumulator.add_topic("t", 37)
    rng = random.Random(5)
    for _ in range(200):
        key = rng.randbytes(rng.randrange(40))
        # When a keyed record is sent, then it lands on Kafka's partition for its key
        future = accumulator.append("t", None, key, b"v", 0, None)
        assert future.batch.partition == partition_for_key(key, 37)
