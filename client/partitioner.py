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

from plinth.client._murmur2 import murmur2   # client/kafka_murmur2.h, as _producer.c uses it

_POSITIVE_MASK_32 = 0x7FFF_FFFF     # Utils.toPositive


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (bytes-like).
    Any thread may call. The producer picks the same one in C (client/_producer.c,
    from the same client/kafka_murmur2.h); this is for applications and tests."""
    if partition_count < 1:
        raise ValueError(f"partition_count is {partition_count}, must be >= 1")
    return (murmur2(key) & _POSITIVE_MASK_32) % partition_count


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
