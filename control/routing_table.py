"""RoutingTable: what a router needs to know to forward a request to a shard.

Built by the controller (``Controller.routing``) from its metadata and handed
to routers through ``ControllerHandle.routing``; a router replaces its whole
table with each new one, so the table itself is immutable. Any process may
use it; a router reads it on its loop thread only.

A partition's history may span shards: when its writes move (``plinth shards
add/remove``), the old shard keeps the older offsets and the new one continues
at the move's offset. ``ranges`` lists those (start offset, shard id) pairs,
oldest first, for the partitions that moved; a fetch goes to the shard that
holds its offset, everything else to the partition's current owner.

Consumer groups. On a replicated broker the table has the internal topic
``__consumer_offsets``: a group's coordinator is the leader of its slot, the
partition ``topics.offsets_slot`` picks ("" while it has none). Without it
(factor 1), groups rendezvous-hash over ``shard_ids``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from plinth import topics


class ShardRange(NamedTuple):
    """The offsets of a partition from ``start_offset`` on (up to the next range's
    start) live on ``shard_id``."""

    start_offset: int
    shard_id: str


@dataclass(frozen=True)
class RoutingTable:
    # shard id -> ZeroMQ address, for every shard actor that is running
    shard_addresses: dict[str, str] = field(default_factory=dict)
    # the shards that take writes; consumer groups are hashed over these
    shard_ids: tuple[str, ...] = ()
    # topic -> the shard id that owns each partition's writes, by partition (of a
    # replicated partition: its leader; "" while it has none)
    owners: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # topic -> partition -> its ranges, oldest first (only partitions that moved)
    ranges: dict[str, dict[int, tuple[ShardRange, ...]]] = field(default_factory=dict)
    # the epoch of the controller that made it: a new one restarted (and lost the
    # routers' registrations, which ControllerHandle.routing sends it again)
    controller_epoch: int = 0

    def partition_count(self, topic: str) -> int | None:
        """The topic's partitions, or None if the topic is unknown."""
        owners = self.owners.get(topic)
        return None if owners is None else len(owners)

    def owner(self, topic: str, partition: int) -> str:
        """The shard that takes the partition's writes (the topic and partition exist)."""
        return self.owners[topic][partition]

    def holder(self, topic: str, partition: int, offset: int) -> str:
        """The shard holding ``offset`` of the partition: for a fetch."""
        ranges = self.ranges.get(topic, {}).get(partition)
        if ranges is None:
            return self.owner(topic, partition)
        starts = [start for start, _ in ranges]
        return ranges[max(0, bisect.bisect_right(starts, offset) - 1)][1]

    def group_slot(self, group: str) -> int | None:
        """The partition of the internal topic holding ``group``; None if the broker
        has no internal topic (offsets are not replicated)."""
        slots = self.owners.get(topics.OFFSETS_TOPIC)
        return None if not slots else topics.offsets_slot(group, len(slots))

    def spans_shards(self, topic: str, partition: int) -> bool:
        """Whether the partition's history lies on more than one shard."""
        return partition in self.ranges.get(topic, {})
