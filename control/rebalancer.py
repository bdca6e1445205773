"""Changes of shards: partitions and consumer groups move to the shards rendezvous
hashing now gives them, and removed shards retire once they hold nothing.

A change (``change_shards``, for ``plinth shards add`` and ``remove``) moves
the groups first, then the partitions, each step saved before the next and
before any router sees it (routers read the metadata only between controller
calls), so that a restart finishes a change a crash interrupted
(``finish_interrupted``):

- Groups. The shard list before the change is saved as ``groups_moving_from``;
  each old shard hands the groups that now hash elsewhere to their new shard,
  with their committed offsets and members. If a new shard fails to adopt
  them, they go back, and the whole change is undone: no group is left
  without a coordinator.
- Partitions. One at a time, without copying data: the old owner seals its
  log and says where it ends; the new owner continues at that offset, with
  the producers' idempotence state. Metadata is saved after each move; if a
  shard does not answer, the moves so far are kept and the next start or
  change of shards moves the rest.
- Retiring. A removed shard drains: it serves its older ranges, read-only,
  until retention deletes them or their topics are deleted; then its ranges
  are forgotten and it is stopped (checked on each status call and change).

Used on the controller actor's thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from plinth import limits, protocol
from plinth.control import placement
from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.control.shard_set import ShardSet
from plinth.errors import BrokerError, UnavailableError
from plinth.shards.shard_handle import PartitionId, PartitionSpec

log = logging.getLogger(__name__)


class Rebalancer:
    def __init__(self, metadata: BrokerMetadata, shards: ShardSet, save: Callable[[], None]):
        """``save`` makes the metadata durable (the controller's)."""
        self._metadata = metadata
        self._shards = shards
        self._save = save

    def change_shards(self, new_ids: list[str], draining: list[str],
                      what: str) -> list[protocol.PartitionMove]:
        """Make ``new_ids`` the shards that take writes and ``draining`` the removed ones
        serving older ranges; returns the partitions that moved their writes."""
        self._finish_group_moves()   # one left by a crash
        old_ids, old_draining = self._metadata.shards, self._metadata.draining
        self._set_shards(new_ids, draining, groups_moving_from=old_ids)
        try:
            self._finish_group_moves()
        except Exception:
            log.error("moving consumer groups to %s failed; undoing: %s", new_ids, what)
            self._set_shards(old_ids, old_draining, groups_moving_from=new_ids)
            self._finish_group_moves()
            raise
        self._shards.push_partition_counts(self._metadata.partition_counts())
        moves = self._move_partitions()
        log.info("%s; %d partitions moved their writes", what, len(moves))
        return moves

    def finish_interrupted(self) -> None:
        """Finish a change of shards a crash interrupted (at start). A shard that does
        not answer leaves it for the next start or change of shards (logged)."""
        try:
            self._finish_group_moves()
            self._move_partitions()
        except BrokerError as exc:
            log.error("could not finish a change of shards: %s", exc)

    def _set_shards(self, shard_ids: list[str], draining: list[str],
                    groups_moving_from: list[str]) -> None:
        self._metadata.shards, self._metadata.draining = list(shard_ids), list(draining)
        self._metadata.groups_moving_from = list(groups_moving_from)
        self._save()

    # --- Groups ---------------------------------------------------------------------------

    def _finish_group_moves(self) -> None:
        """Move the groups whose name hashes elsewhere since the last change of shards
        (again, after a crash: groups already moved are not listed by their old shard)."""
        old_ids = self._metadata.groups_moving_from
        if old_ids is None:
            return
        self._move_groups([s for s in old_ids if s in self._shards], self._metadata.shards)
        self._metadata.groups_moving_from = None
        self._save()

    def _move_groups(self, old_ids: list[str], new_ids: list[str]) -> None:
        """Hand each group whose name now hashes to another shard over to it."""
        names = self._shards.call_each({s: self._shards[s].group_names() for s in old_ids},
                                       limits.CONTROL_CALL_TIMEOUT_S)
        for shard_id, groups in names.items():
            if groups is None:
                raise UnavailableError(f"cannot move consumer groups: {shard_id} does not answer")
            moving: dict[str, list[str]] = {}
            for group in groups:
                target = placement.shard_for_group(group, new_ids)
                if target != shard_id:
                    moving.setdefault(target, []).append(group)
            for target, group_names in moving.items():
                self._hand_over(shard_id, target, group_names)

    def _hand_over(self, source: str, target: str, group_names: list[str]) -> None:
        states = self._shards[source].hand_over_groups(group_names).result()
        try:
            self._shards[target].adopt_groups(states).result()
        except BrokerError:
            # Give them back rather than leave them coordinated nowhere.
            self._shards[source].adopt_groups(states).result()
            raise
        log.info("moved %d consumer groups from %s to %s", len(states), source, target)

    # --- Partitions ---------------------------------------------------------------------

    def _move_partitions(self) -> list[protocol.PartitionMove]:
        """Move each partition whose owner is not the one rendezvous hashing gives it
        among the current shards (all of them after a change; any a crash left)."""
        moves = []
        for name, topic in self._metadata.topics.items():
            for partition in range(topic.partitions):
                move = self._move_if_needed(name, topic, partition)
                if move is not None:
                    moves.append(move)
        return moves

    def _move_if_needed(self, name: str, topic: TopicMetadata,
                        partition: int) -> protocol.PartitionMove | None:
        if topic.replicated:   # its replica set cannot move yet (Controller refuses changes)
            return None
        old = topic.placement[partition]
        new = placement.shard_for(name, partition, self._metadata.shards)
        if new == old:
            return None
        try:
            [sealed] = self._shards[old].seal_partitions([PartitionId(name, partition)]).result()
            self._shards[new].open_partitions([PartitionSpec(
                name, partition, dict(topic.config), sealed.end_offset,
                producers=sealed.producers)]).result()
        except BrokerError as exc:
            # Its end offset is known only to its owner: without it, it cannot move.
            raise UnavailableError(
                f"cannot move {name}-{partition} from {old} to {new} ({type(exc).__name__}: "
                f"{exc}); the moves so far are kept, run the command again once the shard "
                f"is back") from None
        topic.move_writes(partition, sealed.end_offset, new)
        self._save()   # after every move: the smallest window for a crash to leave behind
        return protocol.PartitionMove(name, partition, old, new, sealed.end_offset)

    # --- Retiring removed shards ---------------------------------------------------------

    def retire_drained(self) -> None:
        """Stop removed shards that no longer hold any range of any partition."""
        self._prune_ranges()
        holding = set(self._metadata.specs_by_shard())
        for shard_id in [s for s in self._metadata.draining if s not in holding]:
            self._shards.retire(shard_id)
            self._metadata.draining.remove(shard_id)
            self._metadata.shard_nodes.pop(shard_id, None)
            self._save()
            log.info("retired %s: it holds no partition any more (its directory "
                     "%s can be deleted)", shard_id, self._shards.directory(shard_id))

    def _prune_ranges(self) -> None:
        """Forget the older ranges that retention emptied, on shards that no longer own
        their partition, and delete those shards' empty logs of it."""
        for name, topic in self._metadata.topics.items():
            for partition in list(topic.ranges):
                owner = topic.placement[partition]
                for shard_id in {r.shard_id for r in topic.ranges_of(partition)} - {owner}:
                    if self._holds_nothing_of(shard_id, name, partition):
                        topic.forget_ranges_on(partition, shard_id)
                        # Not waited for: a shard that misses it keeps an empty directory.
                        self._shards[shard_id].delete_partitions([PartitionId(name, partition)])
                        self._save()
                        log.info("%s-%d: retention emptied its range on %s; forgot it",
                                 name, partition, shard_id)

    def _holds_nothing_of(self, shard_id: str, topic: str, partition: int) -> bool:
        try:
            [info] = self._shards[shard_id].partition_infos(
                [PartitionId(topic, partition)]).result(limits.STATUS_CALL_TIMEOUT_S)
        except BrokerError:
            return False   # down: ask again next time
        return info.size_bytes == 0
