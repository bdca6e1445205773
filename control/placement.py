"""Placement of partitions on shards: rendezvous (highest random weight) hashing.

Any process may call it. Each (topic, partition) goes to the shard with the
highest hash of (shard id, topic, partition). The result depends only on the
names, never on the order shards were added, and adding a shard moves only
the partitions that the new shard now wins: about 1/N of them.
"""

from __future__ import annotations

import hashlib


def _weight(shard_id: str, topic: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{shard_id}\0{topic}\0{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_for(topic: str, partition: int, shard_ids: list[str]) -> str:
    assert shard_ids, "placement needs at least one shard"
    return max(shard_ids, key=lambda shard_id: _weight(shard_id, topic, partition))


def place_topic(topic: str, partitions: int, shard_ids: list[str]) -> list[str]:
    """The owning shard id of each partition 0..partitions-1."""
    return [shard_for(topic, p, shard_ids) for p in range(partitions)]


def shard_for_group(group: str, shard_ids: list[str]) -> str:
    """The shard coordinating a consumer group (as Kafka hashes groups onto
    __consumer_offsets partitions): the same rendezvous hash, in its own key space."""
    return shard_for(f"\0group\0{group}", 0, shard_ids)
