"""RoutingTable: what a router needs to know to forward a request to a shard.

Built by the controller (``Controller.routing``) from its metadata and handed
to routers through ``ControllerHandle.routing``; a router replaces its whole
table with each new one, so the table itself is immutable. Any process may
use it; a router reads it on its loop thread only.

A partition's history may span shards: when its writes move (``plinth shards
add/remove``), the old shard keeps the older offsets and the new one continues
at the move's offset. ``ranges`` lists those (start offset, shard id, replicas)
ranges, oldest first, for the partitions that moved; a fetch goes to a shard
that holds its offset (``holders``: of a sealed range of a replicated
partition, any of the replicas that held it whole when it was sealed, in
order; the router takes the first it is connected to), everything else to the
partition's current owner (of a replicated partition: its leader).

A sealed range whose shard retired once it was in object storage (a
``TieredRange``, shard "") is served by the partition's owner, which reads it
from the store: its offsets go to the owner, not to the previous range's
holder (which would answer past its end with nothing, for ever).

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
    """The offsets of a partition of one copy from ``start_offset`` on (up to the next
    range's start) live on ``shard_id``."""

    start_offset: int
    shard_id: str

    @property
    def replicas(self) -> tuple[str, ...]:
        return ()

    @property
    def holders(self) -> tuple[str, ...]:
        """The shards that serve the range's offsets, in the order to try them."""
        return (self.shard_id,)


class ReplicatedRange(NamedTuple):
    """A range of a replicated partition: its offsets from ``start_offset`` on live on
    each of ``replicas``; ``shard_id`` is the first of them (of a sealed range: the
    leader that sealed it)."""

    start_offset: int
    shard_id: str
    replicas: tuple[str, ...]

    @property
    def holders(self) -> tuple[str, ...]:
        """The shards that serve the range's offsets, in the order to try them."""
        return self.replicas


class TieredRange(NamedTuple):
    """A sealed range whose offsets from ``start_offset`` on (up to the next range's
    start) are in object storage only: no shard holds it, and the partition's owner
    serves it from the store (its shard retired once it was uploaded, issue 14)."""

    start_offset: int
    shard_id: str = ""

    @property
    def replicas(self) -> tuple[str, ...]:
        return ()

    @property
    def holders(self) -> tuple[str, ...]:
        """No shard holds it: ``RoutingTable.holders`` sends its offsets to the owner."""
        return ()


Range = ShardRange | ReplicatedRange | TieredRange


def shard_range(start_offset: int, shard_id: str, replicas: tuple[str, ...] = ()) -> Range:
    """A range of one copy, or of ``replicas`` if there are any; a tiered one if it has
    neither a shard nor replicas."""
    if replicas:
        return ReplicatedRange(start_offset, shard_id, tuple(replicas))
    if not shard_id:
        return TieredRange(start_offset)
    return ShardRange(start_offset, shard_id)


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
    ranges: dict[str, dict[int, tuple[Range, ...]]] = field(default_factory=dict)
    # the epoch of the controller that made it: a new one restarted (and lost the
    # routers' registrations, which ControllerHandle.routing sends it again)
    controller_epoch: int = 0
    # shard id -> its direct socket for clients' produce and fetch, for the shards
    # that have one (plain TCP on 127.0.0.1: only a plaintext loopback broker's)
    direct_addresses: dict[str, str] = field(default_factory=dict)
    # the advertised HOST:PORT of every router's Kafka listener, sorted (what a
    # Kafka listener describes as the cluster's brokers: router/kafka/api_cluster.py)
    kafka_brokers: tuple[str, ...] = ()
    # (its controller's random instance id, the count of tables that one built):
    # another table has another version, so a router that has it is sent nothing
    version: tuple[int, int] = (0, 0)

    def partition_count(self, topic: str) -> int | None:
        """The topic's partitions, or None if the topic is unknown."""
        owners = self.owners.get(topic)
        return None if owners is None else len(owners)

    def owner(self, topic: str, partition: int) -> str:
        """The shard that takes the partition's writes (the topic and partition exist)."""
        return self.owners[topic][partition]

    def holder(self, topic: str, partition: int, offset: int) -> str:
        """The (first) shard holding ``offset`` of the partition: for a fetch."""
        return self.holders(topic, partition, offset)[0]

    def holders(self, topic: str, partition: int, offset: int) -> tuple[str, ...]:
        """The shards holding ``offset`` of the partition, in the order to try them: its
        owner for the current range and for a tiered one (it reads that from the
        store), a sealed range's replicas for an older offset."""
        ranges = self.ranges.get(topic, {}).get(partition)
        if ranges is None:
            return (self.owner(topic, partition),)
        index = max(0, bisect.bisect_right([r[0] for r in ranges], offset) - 1)
        # The current range: its writer (a leader changes). A tiered range (shard "",
        # tested on the element: tests build plain tuples): the owner, from the store.
        if index == len(ranges) - 1 or not ranges[index][1]:
            return (self.owner(topic, partition),)
        return shard_range(*ranges[index]).holders   # (plain tuples too: tests build them)

    def group_slot(self, group: str) -> int | None:
        """The partition of the internal topic holding ``group``; None if the broker
        has no internal topic (offsets are not replicated)."""
        slots = self.owners.get(topics.OFFSETS_TOPIC)
        return None if not slots else topics.offsets_slot(group, len(slots))

    def direct_addresses_of(self, topic: str) -> list[str]:
        """Per partition of ``topic``, its leader's direct address, or "" where a client
        must go through the router: no leader, a leader without a direct socket, or a
        history on several shards (an older offset lives on another one)."""
        return [self.direct_addresses.get(owner, "") if owner and
                not self.spans_shards(topic, partition) else ""
                for partition, owner in enumerate(self.owners.get(topic, ()))]

    def spans_shards(self, topic: str, partition: int) -> bool:
        """Whether the partition's history lies on more than one shard."""
        return partition in self.ranges.get(topic, {})
