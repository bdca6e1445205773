"""Leaders whose disk refuses writes hand their partitions to an in-sync replica
with room: pure planning, for the controller's ``leader_disk_refused``.

A leader whose disk is full (an append fails with StorageError) or below its
reserve (DiskReserveRefusedError, shards/disk_reserve.py) refuses every produce
to the partitions it leads for as long as the disk stays so, although its
in-sync followers, on other disks, may have room. Kafka takes such a log dir
offline (KIP-112) and elects other in-sync replicas. Plinth's leader tells the
controller at its first refused append (at most once per
DISK_REFUSED_NUDGE_INTERVAL_MS), and the controller hands each replicated
partition it leads to the first of its in-sync replicas (in the replicas'
order, so the preferred one where it may) that answers, needs no repair, whose
disk has LEADER_MOVE_DISK_ROOM_BYTES_MIN free beyond its reserve, as the
shards' stats say, and that has not said its own disk refused a write within
DISK_REFUSED_RECENT_S (shards on one disk would pass partitions round). The
hand-over is the preferred election's (leader_elections.py, "Hand-overs"): the new
leader holds the whole log, so no acknowledged record is lost, acks=1 included,
and the old leader leaves the in-sync set with it (the controller's ``_elected``).

No ping-pong: a partition moved for its leader's disk is not moved back by the
auto leader rebalance (the controller remembers it until a preferred election
gives it back, which the operator asks for once the disk has room:
``plinth topic elect-leaders``). A follower whose disk is full needs nothing
here: it stops fetching and leaves the in-sync set (shards/replication.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from plinth import limits
from plinth.control.leader_elections import HandOverAsk
from plinth.control.metadata import BrokerMetadata
from plinth.shards.shard_handle import PartitionId


@dataclass
class DiskMovePlan:
    """What ``plan`` decided: the hand-overs, and the partitions that stay (one line
    each, saying why: no in-sync replica may take them)."""

    hand_overs: list[HandOverAsk] = field(default_factory=list)
    staying: list[str] = field(default_factory=list)


def has_room(disk: dict[str, int]) -> bool:
    """Whether a shard's disk (DiskReserve.snapshot: free_bytes, reserve_bytes; empty
    when not known) has LEADER_MOVE_DISK_ROOM_BYTES_MIN free beyond its reserve."""
    if "free_bytes" not in disk:
        return False   # not known: no answer, or its file system cannot be asked
    return disk["free_bytes"] - disk.get("reserve_bytes", 0) >= \
        limits.LEADER_MOVE_DISK_ROOM_BYTES_MIN


def described(disk: dict[str, int]) -> str:
    """A disk's numbers for a log line."""
    if "free_bytes" not in disk:
        return "its disk's free bytes not known"
    return f"{disk['free_bytes']} bytes free, reserve {disk.get('reserve_bytes', 0)}"


def plan(metadata: BrokerMetadata, source: str, error: str, alive: Collection[str],
         disks: dict[str, dict[str, int]], repairing: dict[tuple[str, int], set[str]],
         refused_lately: Collection[str] = ()) -> DiskMovePlan:
    """A hand-over for each replicated partition ``source`` leads, to its first in-sync
    replica that is ``alive``, not ``repairing``, not ``refused_lately`` (its disk
    refused a write within DISK_REFUSED_RECENT_S) and whose disk (``disks``, by
    shard) has room; by topic then partition. ``error``: what ``source``'s disk
    refused."""
    why = f"{source}'s disk refuses writes ({described(disks.get(source, {}))}: {error})"
    decided = DiskMovePlan()
    for name, topic in sorted(metadata.topics.items()):
        for partition, record in sorted(topic.leadership.items()):
            if record.leader != source:
                continue
            cannot = set(repairing.get((name, partition), ())) | {source}
            to = next((r for r in record.in_sync if r not in cannot and r in alive
                       and r not in refused_lately and has_room(disks.get(r, {}))), "")
            if to:
                decided.hand_overs.append(HandOverAsk(PartitionId(name, partition), source,
                                                      to=to, leader_epoch=record.leader_epoch,
                                                      why=why))
            else:
                decided.staying.append(_staying(name, partition, record, cannot, alive, disks,
                                                refused_lately))
    return decided


def _staying(name: str, partition: int, record, cannot: set[str], alive: Collection[str],
             disks: dict[str, dict[str, int]], refused_lately: Collection[str]) -> str:
    others = [r for r in record.in_sync if r != record.leader]
    if not others:
        return f"{name}-{partition}: no other replica is in sync"
    return f"{name}-{partition}: no other in-sync replica may lead it: " + "; ".join(
        f"{r} {_why_not(r, cannot, alive, disks, refused_lately)}" for r in others)


def _why_not(replica: str, cannot: set[str], alive: Collection[str],
             disks: dict[str, dict[str, int]], refused_lately: Collection[str]) -> str:
    if replica in cannot:
        return "needs repair"
    if replica not in alive:
        return "does not answer"
    if replica in refused_lately:
        return f"refused a write itself within {limits.DISK_REFUSED_RECENT_S:g} s"
    return f"has too little room ({described(disks.get(replica, {}))})"
