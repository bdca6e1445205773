"""shards/shard_calls.py: the values a shard's calls carry."""

from __future__ import annotations

from plinth.shards.shard_calls import PartitionId


def test_partition_ids_sort_by_topic_then_partition_number():
    # (plinth check sorted a manifest's partitions, and crashed while they had no order)
    ids = [PartitionId("b", 0), PartitionId("a", 10), PartitionId("a", 2)]
    assert sorted(ids) == [PartitionId("a", 2), PartitionId("a", 10), PartitionId("b", 0)]
