"""Choose the partition of a record, exactly as Kafka's Java producer does.

Runs in the producer (client). A record with a key goes to

    partition = (murmur2(key) & 0x7fffffff) % partition_count

where murmur2 is ``org.apache.kafka.common.utils.Utils.murmur2`` (seed
0x9747b28c, mixing constant 0x5bd1e995, shift 24, result a signed 32-bit int)
and ``& 0x7fffffff`` is ``Utils.toPositive``: the formula of Kafka's
DefaultPartitioner and BuiltInPartitioner.partitionForKey. So a key lands on
the same partition number whether a Kafka client or a Plinth client wrote it.

A record without a key goes to the partition a StickyPartitioner currently
holds; the producer moves it on (``next_batch``) when that partition's batch
is sent, like Kafka's sticky partitioner, so keyless records fill whole
batches instead of spraying one record per partition.
"""

from __future__ import annotations

import random
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK_32 = 0xFFFF_FFFF
_SIGN_BIT_32 = 0x8000_0000
_POSITIVE_MASK_32 = 0x7FFF_FFFF     # Utils.toPositive

# partition_for_key caches the positive hash of short keys: producers tend to
# reuse keys. Bounded in entries and in key size (at most ~20 MiB), and simply
# cleared when full. Only bytes are cached (bytearray is not hashable).
_HASH_CACHE_ENTRIES_MAX = 100_000
_HASH_CACHE_KEY_BYTES_MAX = 128
_hash_cache: dict[bytes, int] = {}

# Unpackers for keys up to 256 bytes, built once (a format string per call costs).
_WORDS_STRUCTS = tuple(struct.Struct(f"<{count}I") for count in range(65))


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` of ``data``: a signed 32-bit int. Any thread may call."""
    length = len(data)
    h = (_SEED ^ length) & _MASK_32
    for k in _words_le(data, length >> 2):
        k = (k * _M) & _MASK_32
        h = ((h * _M) & _MASK_32) ^ (((k ^ (k >> _R)) * _M) & _MASK_32)
    tail_bytes = length & 3
    if tail_bytes:
        tail_start = length & ~3
        if tail_bytes == 3:
            h ^= data[tail_start + 2] << 16
        if tail_bytes >= 2:
            h ^= data[tail_start + 1] << 8
        h = ((h ^ data[tail_start]) * _M) & _MASK_32
    h ^= h >> 13
    h = (h * _M) & _MASK_32
    h ^= h >> 15
    return h - (1 << 32) if h & _SIGN_BIT_32 else h


def _words_le(data: bytes, words_count: int) -> tuple[int, ...]:
    """The first ``words_count`` 4-byte little-endian words of ``data``, unsigned."""
    if words_count < len(_WORDS_STRUCTS):
        return _WORDS_STRUCTS[words_count].unpack_from(data)
    return struct.unpack_from(f"<{words_count}I", data)


try:
    # client/_murmur2.c, built by `pip install`: the same function in C, which
    # keeps the GIL (a hash costs less than releasing it). The tests check it
    # against Kafka's reference values and the Python version.
    from plinth.client._murmur2 import murmur2 as _murmur2_c
except ImportError:  # pragma: no cover - installed without a C compiler
    _murmur2_c = None


def murmur2_fast(data: bytes) -> int:
    """murmur2(data), in C when the extension is built."""
    if _murmur2_c is None or type(data) is not bytes:
        return murmur2(data)
    return _murmur2_c(data)


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``. Any thread may call."""
    if partition_count < 1:
        raise ValueError(f"partition_count is {partition_count}, must be >= 1")
    if _murmur2_c is not None and type(key) is bytes:
        # In C the hash costs less than a cache lookup and insert would.
        return (_murmur2_c(key) & _POSITIVE_MASK_32) % partition_count
    positive_hash = _hash_cache.get(key) if type(key) is bytes else None
    if positive_hash is None:
        positive_hash = murmur2_fast(key) & _POSITIVE_MASK_32
        if type(key) is bytes and len(key) <= _HASH_CACHE_KEY_BYTES_MAX:
            if len(_hash_cache) >= _HASH_CACHE_ENTRIES_MAX:
                _hash_cache.clear()
            _hash_cache[key] = positive_hash
    return positive_hash % partition_count


class StickyPartitioner:
    """The partition for keyless records of one topic, kept until ``next_batch``.

    Runs in the producer (client). Not thread-safe: the producer calls it under
    the lock of the topic's accumulator. Starts on a random partition;
    ``next_batch`` moves to a different random one when there is more than one.
    """

    __slots__ = ("_partition_count", "_partition", "_rng")

    def __init__(self, partition_count: int, *, rng: random.Random | None = None):
        if partition_count < 1:
            raise ValueError(f"partition_count is {partition_count}, must be >= 1")
        self._partition_count = partition_count
        self._rng = rng if rng is not None else random.Random()
        self._partition = self._rng.randrange(partition_count)

    @property
    def partition_count(self) -> int:
        return self._partition_count

    def partition(self) -> int:
        """The partition keyless records go to until the next ``next_batch``."""
        return self._partition

    def next_batch(self) -> int:
        """Move to another partition (the batch on the current one was sent); returns it."""
        if self._partition_count > 1:
            # Uniform over the other partitions, without retrying.
            step = self._rng.randrange(1, self._partition_count)
            self._partition = (self._partition + step) % self._partition_count
        return self._partition
