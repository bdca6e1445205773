"""STAND-IN for helper MODEL's control/leadership.py (branch r12-model), written
to its interface so that the controller can be built and tested before it is
merged; replaced by theirs at the merge (take theirs).

Pure controller-side logic on Leadership records; any thread may call it.
"""

from __future__ import annotations

from dataclasses import replace

from plinth.errors import FencedLeaderEpochError
from plinth.shards.shard_handle import Leadership


def initial_leadership(replicas, controller_epoch: int) -> Leadership:
    """A new partition: the preferred (first) replica leads, every replica in sync."""
    replicas = tuple(replicas)
    return Leadership(replicas, replicas[0], 0, replicas, 0, controller_epoch)


def alter_in_sync(current: Leadership, requester: str, leader_epoch: int, partition_epoch: int,
                  in_sync, min_insync: int, *, needs_repair=(),
                  controller_epoch: int | None = None) -> Leadership:
    """The leader's proposed in-sync set, if its epochs are current (CAS)."""
    if requester != current.leader or leader_epoch != current.leader_epoch \
            or partition_epoch != current.partition_epoch:
        raise FencedLeaderEpochError(
            f"alter_in_sync from {requester} at leader epoch {leader_epoch}, partition epoch "
            f"{partition_epoch}; the record is {current.leader} at {current.leader_epoch}, "
            f"{current.partition_epoch}")
    in_sync = tuple(r for r in current.replicas if r in set(in_sync))
    return replace(current, in_sync=in_sync, partition_epoch=current.partition_epoch + 1,
                   eligible=tuple(r for r in current.eligible if r not in in_sync),
                   controller_epoch=current.controller_epoch if controller_epoch is None
                   else controller_epoch)


def elect_leader(current: Leadership, alive, unclean: bool, *, min_insync: int | None = None,
                 needs_repair=(), controller_epoch: int | None = None) -> Leadership:
    candidates = [r for r in current.in_sync if r in alive] or \
        [r for r in current.eligible if r in alive] or \
        ([r for r in current.replicas if r in alive] if unclean else [])
    if not current.leader and not candidates:
        return current
    leader = candidates[0] if candidates else ""
    in_sync = tuple(r for r in current.in_sync if r in alive) or ((leader,) if leader else ())
    return replace(current, leader=leader, leader_epoch=current.leader_epoch + 1,
                   in_sync=in_sync if leader else current.in_sync,
                   eligible=tuple(r for r in current.eligible if r not in in_sync),
                   partition_epoch=current.partition_epoch + 1,
                   controller_epoch=current.controller_epoch if controller_epoch is None
                   else controller_epoch)
