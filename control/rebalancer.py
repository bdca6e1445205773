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
- Replicated partitions (issue 12) move their replica set the same way when
  ``placement.replicas_for`` gives them another one over the new shards. The
  leader stops taking writes and is asked again (every SEAL_POLL_INTERVAL_MS,
  at most SEAL_REPLICATED_WAIT_S) until its high watermark reaches its log's
  end: then every in-sync replica holds the range whole. Each in-sync follower
  stops following at that offset; those that hold it whole, with the leader,
  serve the sealed range, read-only, with no leader. The new replica set opens
  the partition at the seal offset with a new record (leader epoch + 1, the
  new preferred leader leading, all in sync: none holds anything of the new
  range yet) and the producers' snapshot; a shard in both sets continues its
  own log there. Then the range list is saved: (start offset, replica set).
  An old replica that neither holds the sealed range whole nor is in the new
  set drops its copy. A move that cannot finish (the wait runs out, a new
  replica does not open) gives the old set its record back, so the leader
  takes writes again, and fails the command naming the partition.
- Retiring. A removed shard drains: it serves its older ranges, read-only,
  until retention deletes them or their topics are deleted, or, for a tiered
  topic, until they are in object storage; then its ranges are forgotten (or
  tiered) and it is stopped (checked at start, on each status call and change,
  and when a shard says its tiering changed).
- Tiering (issue 14). A draining shard D that says a sealed partition is wholly
  remote (``tiered_sealed``: every record it holds of it is uploaded) still
  serves it until the partition's owner can: the owner is asked whether its
  view of the remote log covers the offsets only D held (``covers_remote``;
  a view that does not asks for one more listing of the store, and the next
  pass asks again). Once it does, D drops out of the partition's ranges
  (``TopicMetadata.tier_ranges_on``): a range D held alone stays, with no shard,
  and its offsets go to the owner, which reads them from the store. Nothing
  remote is deleted. Each draining shard's reason for still draining is kept
  for ``plinth status`` (``drain_reason``).

Used on the controller actor's thread only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection

from plinth import limits, protocol, topics
from plinth.control import placement
from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.control.shard_set import ShardSet
from plinth.errors import BrokerError, UnavailableError
from plinth.shards.shard_handle import (Leadership, PartitionId, PartitionSpec, SealedPartition,
                                        TieredState, wait_all)

log = logging.getLogger(__name__)

# Why a draining shard still serves a partition (``Rebalancer.drain_reason``), by what
# its last retirement pass found: each a phrase that follows a count of partitions.
_UNTIERED = "of untiered topics (retention or deleting the topic empties them)"
_UPLOADING = "of tiered topics still uploading to object storage"
_LISTING = "of tiered topics waiting for their owner to list them in object storage"
_OWNER_OFFLINE = "of tiered topics whose owner is offline"
_SILENT = "of tiered topics, and it does not answer (down, or busy)"
_WRITES = "whose writes it still takes (a move did not finish: run the command again)"


class Rebalancer:
    def __init__(self, metadata: BrokerMetadata, shards: ShardSet, save: Callable[[], None],
                 allow_replicas_on_one_node: bool = False,
                 elect: Callable[[list[tuple[str, int]]], None] | None = None,
                 silent: Callable[[], Collection[str]] = lambda: ()):
        """``save`` makes the metadata durable (the controller's);
        ``allow_replicas_on_one_node``: a replica set may share a node (as placed);
        ``elect``: gives (topic, partition)s a leader in a new epoch (the controller's);
        ``silent()``: the shards known not to answer now (not asked, not waited for)."""
        self._metadata = metadata
        self._shards = shards
        self._save = save
        self._allow_replicas_on_one_node = allow_replicas_on_one_node
        self._elect = elect
        self._silent = silent
        # draining shard id -> why it has not retired, as the last pass found it
        self._drain_reasons: dict[str, str] = {}

    def change_shards(self, new_ids: list[str], draining: list[str],
                      what: str) -> list[protocol.PartitionMove]:
        """Make ``new_ids`` the shards that take writes and ``draining`` the removed ones
        serving older ranges; returns the partitions that moved their writes."""
        self._finish_group_moves()   # left by a crash
        self._finish_partition_moves()
        old_ids, old_draining = self._metadata.shards, self._metadata.draining
        self._set_shards(new_ids, draining, groups_moving_from=old_ids,
                         partitions_moving_from=old_ids)
        try:
            self._finish_group_moves()
        except Exception:
            log.error("moving consumer groups to %s failed; undoing: %s", new_ids, what)
            self._set_shards(old_ids, old_draining, groups_moving_from=new_ids,
                             partitions_moving_from=None)
            self._finish_group_moves()
            raise
        self._shards.push_partition_counts(self._metadata.partition_counts())
        moves = self._finish_partition_moves()
        log.info("%s; %d partitions moved their writes", what, len(moves))
        return moves

    def finish_interrupted(self) -> None:
        """Finish a change of shards a crash interrupted (at start). A shard that does
        not answer leaves it for the next start or change of shards (logged)."""
        try:
            self._finish_group_moves()
            self._lead_replicas_that_move()
            self._finish_partition_moves()
        except BrokerError as exc:
            log.error("could not finish a change of shards: %s", exc)

    def _set_shards(self, shard_ids: list[str], draining: list[str],
                    groups_moving_from: list[str],
                    partitions_moving_from: list[str] | None) -> None:
        self._metadata.shards, self._metadata.draining = list(shard_ids), list(draining)
        self._metadata.groups_moving_from = list(groups_moving_from)
        self._metadata.partitions_moving_from = \
            None if partitions_moving_from is None else list(partitions_moving_from)
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

    def _finish_partition_moves(self) -> list[protocol.PartitionMove]:
        """Move the partitions of the change of shards under way (or left by a crash),
        then record that none is left to move; returns the moves."""
        moves = self._move_partitions()
        if self._metadata.partitions_moving_from is not None:
            self._metadata.partitions_moving_from = None
            self._save()
        return moves

    def _move_partitions(self) -> list[protocol.PartitionMove]:
        """Move each partition whose owner is not the one rendezvous hashing gives it
        among the current shards (all of them after a change; any a crash left), and,
        during a change of shards, each replicated one whose replica set it changes."""
        moves = []
        one_copy: dict[tuple[str, str], list[PartitionId]] = {}   # (old, new) -> moving
        for name, topic in self._metadata.topics.items():
            for partition in range(topic.partitions):
                if topic.replicated:
                    move = self._move_replicas_if_needed(name, topic, partition)
                    if move is not None:
                        moves.append(move)
                    continue
                old = topic.placement[partition]
                new = placement.shard_for(name, partition, self._metadata.shards)
                if new != old:
                    one_copy.setdefault((old, new), []).append(PartitionId(name, partition))
        batch_max = limits.PARTITION_MOVES_PER_SAVE_MAX
        for (old, new), pids in one_copy.items():
            for start in range(0, len(pids), batch_max):
                moves += self._move_writes(old, new, pids[start:start + batch_max])
        return moves

    def _move_writes(self, old: str, new: str,
                     pids: list[PartitionId]) -> list[protocol.PartitionMove]:
        """Move the writes of one-copy partitions from ``old`` to ``new``: sealed in one
        call, opened in one, recorded in one save (one of each per partition held the
        controller's thread for minutes when 2,000 partitions moved). A crash between
        the steps leaves them sealed, or open on ``new`` too, and the next start moves
        them again: a seal repeated answers the same end offset."""
        try:
            sealed = self._shards[old].seal_partitions(pids).result()
            self._shards[new].open_partitions([PartitionSpec(
                s.topic, s.partition, dict(self._metadata.topics[s.topic].config),
                s.end_offset, producers=s.producers,
                topic_id=self._metadata.topics[s.topic].topic_id) for s in sealed]).result()
        except BrokerError as exc:
            # Their end offsets are known only to their owner: without them, none moves.
            names = ", ".join(f"{pid.topic}-{pid.partition}" for pid in pids[:3])
            more = f" and {len(pids) - 3} more" if len(pids) > 3 else ""
            raise UnavailableError(
                f"cannot move {names}{more} from {old} to {new} ({type(exc).__name__}: "
                f"{exc}); the moves so far are kept, run the command again once the shard "
                f"is back") from None
        for s in sealed:
            self._metadata.topics[s.topic].move_writes(s.partition, s.end_offset, new)
        self._save()   # after every batch of moves: a crash leaves at most one to redo
        return [protocol.PartitionMove(s.topic, s.partition, old, new, s.end_offset)
                for s in sealed]

    # --- Replicated partitions -----------------------------------------------------------

    def _lead_replicas_that_move(self) -> None:
        """At start, elect a leader in a new epoch for each replicated partition left to
        move: its shards just restarted, and none leads again in the epoch it led
        before, so none could seal it."""
        moving = [(name, p) for name, topic in sorted(self._metadata.topics.items())
                  if topic.replicated for p in range(topic.partitions)
                  if self._replicas_moving_to(name, topic, p) is not None]
        if moving and self._elect is not None:
            self._elect(moving)

    def _replicas_moving_to(self, name: str, topic: TopicMetadata,
                            partition: int) -> tuple[str, ...] | None:
        """The replica set a replicated partition moves to in the change of shards under
        way; None if it stays. It moves if a replica is on a shard that no longer takes
        writes, or if its set is the one placement gave it over the shards before the
        change and placement gives another now: a set made otherwise (by hand, or
        re-created after a node was lost) is left alone, and so is the internal topic of
        committed offsets: a slot's log is its groups' whole state, which a new replica
        set starting at the seal offset would not have (the controller refuses to
        remove a shard holding one of its replicas)."""
        before = self._metadata.partitions_moving_from
        if before is None or name == topics.OFFSETS_TOPIC:
            return None
        replicas = topic.leadership[partition].replicas
        after = self._replicas_placed(name, topic, partition, self._metadata.shards)
        if after == replicas:
            return None
        if set(replicas) <= set(self._metadata.shards) and \
                replicas != self._replicas_placed(name, topic, partition, before):
            return None
        return after

    def _replicas_placed(self, name: str, topic: TopicMetadata, partition: int,
                         shard_ids: list[str]) -> tuple[str, ...]:
        """The replica set placement gives the partition over ``shard_ids``."""
        return placement.replicas_for(name, partition, shard_ids, self._metadata.shard_nodes,
                                      topic.replication_factor,
                                      allow_same_node=self._allow_replicas_on_one_node)

    def _move_replicas_if_needed(self, name: str, topic: TopicMetadata,
                                 partition: int) -> protocol.PartitionMove | None:
        record = topic.leadership[partition]
        new = self._replicas_moving_to(name, topic, partition)
        if new is None:
            return None
        pid = PartitionId(name, partition)
        where = f"{name}-{partition} from {','.join(record.replicas)} to {','.join(new)}"
        if not record.leader:
            raise UnavailableError(f"cannot move {where}: it has no leader to seal it (offline); "
                                   f"the moves so far are kept, run the command again once "
                                   f"one of its in-sync replicas is back")
        sealed = self._seal_led(name, topic, partition, where)
        sealed_on = (record.leader, *self._seal_followers(pid, record, sealed.end_offset))
        # The new set's leader epoch is saved before any shard hears of it: were the move
        # cut short by a crash, the election at the next start must pick a newer one
        # (a shard never leads again in an epoch it led before it restarted).
        record = topic.leadership[partition] = dataclasses.replace(
            record, leader_epoch=record.leader_epoch + 1,
            partition_epoch=record.partition_epoch + 1,
            controller_epoch=self._metadata.controller_epoch)
        self._save()
        moved = Leadership(replicas=new, leader=new[0], leader_epoch=record.leader_epoch,
                           in_sync=new, partition_epoch=record.partition_epoch + 1,
                           controller_epoch=self._metadata.controller_epoch)
        self._open_new_set(name, topic, partition, sealed, moved, where)
        topic.move_replicas(partition, sealed.end_offset, sealed_on, moved)
        self._save()   # after every move, as for one copy
        self._drop_copies(pid, set(record.replicas) - set(topic.specs_of(name, partition)))
        log.info("%s-%d: sealed at %d on %s; its writes go to %s (leader epoch %d)", name,
                 partition, sealed.end_offset, ",".join(sealed_on), ",".join(new),
                 moved.leader_epoch)
        return protocol.PartitionMove(name, partition, record.leader, new[0], sealed.end_offset)

    def _open_new_set(self, name: str, topic: TopicMetadata, partition: int,
                      sealed: SealedPartition, moved: Leadership, where: str) -> None:
        """Open the partition on the new replica set at the seal offset, with the new
        record and the producers' snapshot; if one does not, the old set serves again
        (with a record newer than the one the others may have taken) and it raises."""
        spec = PartitionSpec(name, partition, dict(topic.config), sealed.end_offset,
                             producers=sealed.producers, leadership=moved,
                             topic_id=topic.topic_id)
        opened = wait_all({s: self._shards[s].open_partitions([spec]) for s in moved.replicas},
                          limits.CONTROL_CALL_TIMEOUT_S)
        failed = {s: e for s, e in opened.items() if isinstance(e, BrokerError)}
        if not failed:
            return
        topic.leadership[partition] = dataclasses.replace(
            topic.leadership[partition], leader_epoch=moved.leader_epoch + 1,
            partition_epoch=moved.partition_epoch + 1)
        self._save()
        self._unseal(name, topic, partition)
        self._drop_copies(PartitionId(name, partition),
                          set(moved.replicas) - set(topic.specs_of(name, partition)))
        shard_id, exc = next(iter(failed.items()))
        raise UnavailableError(
            f"cannot move {where}: {shard_id} did not open it ({type(exc).__name__}: {exc}); "
            f"its old replicas serve it again; the moves so far are kept, run the command "
            f"again once the shard is back")

    def _seal_led(self, name: str, topic: TopicMetadata, partition: int,
                  where: str) -> SealedPartition:
        """Seal the partition on its leader, where every in-sync replica holds it: asked
        again until its high watermark reaches its log's end (bounded; then unsealed)."""
        leader = topic.leadership[partition].leader
        deadline_s = time.monotonic() + limits.SEAL_REPLICATED_WAIT_S
        while True:
            try:
                [sealed] = self._shards[leader].seal_partitions(
                    [PartitionId(name, partition)]).result()
            except BrokerError as exc:
                self._unseal(name, topic, partition)
                raise UnavailableError(
                    f"cannot move {where}: its leader {leader} did not seal it "
                    f"({type(exc).__name__}: {exc}); the moves so far are kept, run the "
                    f"command again once the shard is back") from None
            if sealed.complete:
                return sealed
            if time.monotonic() >= deadline_s:
                self._unseal(name, topic, partition)
                raise UnavailableError(
                    f"cannot move {where}: its in-sync replicas did not reach its leader's log "
                    f"end within {limits.SEAL_REPLICATED_WAIT_S} s (high watermark "
                    f"{sealed.end_offset}; one may be down); it takes writes again; the moves "
                    f"so far are kept, run the command again")
            time.sleep(limits.SEAL_POLL_INTERVAL_MS / 1000)   # its followers fetch meanwhile

    def _seal_followers(self, pid: PartitionId, record: Leadership,
                        end_offset: int) -> list[str]:
        """Stop the in-sync followers following at ``end_offset``; returns those that hold
        the range whole (one that is down or short does not serve it)."""
        followers = [s for s in record.in_sync if s != record.leader and s in self._shards]
        outcomes = wait_all({s: self._shards[s].seal_partitions([pid], [end_offset])
                             for s in followers}, limits.CONTROL_CALL_TIMEOUT_S)
        holding = []
        for shard_id, outcome in outcomes.items():
            if isinstance(outcome, BrokerError):
                log.warning("%s-%d: %s does not serve its range sealed at %d: %s", pid.topic,
                            pid.partition, shard_id, end_offset, outcome)
            elif not outcome[0].complete:
                log.warning("%s-%d: %s ends at %d, not at its seal at %d: it does not serve "
                            "the range", pid.topic, pid.partition, shard_id,
                            outcome[0].end_offset, end_offset)
            else:
                holding.append(shard_id)
        return holding

    def _unseal(self, name: str, topic: TopicMetadata, partition: int) -> None:
        """Undo a seal that cannot finish: the partition's replicas take its record again
        (its leader takes writes). One that does not answer gets it at its restart."""
        replicas = set(topic.replicas_of(partition))
        specs = {s: spec for s, spec in topic.specs_of(name, partition).items() if s in replicas}
        for shard_id, outcome in wait_all({s: self._shards[s].open_partitions([spec])
                                           for s, spec in specs.items() if s in self._shards},
                                          limits.CONTROL_CALL_TIMEOUT_S).items():
            if isinstance(outcome, BrokerError):
                log.error("%s-%d: could not give %s its record back: %s", name, partition,
                          shard_id, outcome)

    def _drop_copies(self, pid: PartitionId, shard_ids: set[str]) -> None:
        """Delete the partition on old replicas that serve none of its ranges (they were
        out of sync when it was sealed). Not waited for: one that is down keeps its
        directory, and reopens it from its manifest at its restart."""
        for shard_id in sorted(s for s in shard_ids if s in self._shards):
            self._shards[shard_id].delete_partitions([pid], keep_remote=True)
            log.info("%s-%d: %s held part of its sealed range only; its copy is dropped",
                     pid.topic, pid.partition, shard_id)

    # --- Retiring removed shards ---------------------------------------------------------

    def retire_drained(self) -> None:
        """Tier the draining shards' ranges that are wholly in object storage, forget the
        ranges retention emptied, and stop removed shards that no longer hold any range
        of any partition; then note why each one left has not retired."""
        found = self._tier_drained_ranges()
        self._prune_ranges()
        holding = self._metadata.specs_by_shard()
        for shard_id in [s for s in self._metadata.draining if s not in holding]:
            self._shards.retire(shard_id)
            self._metadata.draining.remove(shard_id)
            self._metadata.shard_nodes.pop(shard_id, None)
            self._save()
            log.info("retired %s: it holds no partition any more (its directory "
                     "%s can be deleted)", shard_id, self._shards.directory(shard_id))
        self._drain_reasons = {s: self._why_draining(s, holding[s], found)
                               for s in self._metadata.draining}

    def drain_reason(self, shard_id: str) -> str:
        """Why the draining ``shard_id`` has not retired, as the last ``retire_drained``
        found it ("" if it is not draining, or was not looked at yet)."""
        return self._drain_reasons.get(shard_id, "")

    def _tier_drained_ranges(self) -> dict[tuple[str, PartitionId], str]:
        """Drop each draining shard from the ranges of the partitions it holds wholly in
        object storage, once their owner's view of the remote log covers the offsets
        it alone held (module docstring). Returns, for each (draining shard,
        partition of a tiered topic) left as it was, why: _UPLOADING, _LISTING,
        _OWNER_OFFLINE or _SILENT."""
        silent = set(self._silent())
        held = {d: pids for d in self._metadata.draining if (pids := self._tiered_held_by(d))}
        asked = {d: pids for d, pids in held.items() if d in self._shards and d not in silent}
        found = {(d, pid): _SILENT for d, pids in held.items() if d not in asked for pid in pids}
        answers = wait_all({d: self._shards[d].tiered_sealed(pids) for d, pids in asked.items()},
                           limits.STATUS_CALL_TIMEOUT_S)
        to_cover, tiered = {}, {}
        for d, states in answers.items():
            if isinstance(states, BrokerError):
                log.info("%s did not say which of its ranges are in object storage: %s", d,
                         states)
                found.update({(d, pid): _SILENT for pid in asked[d]})
                continue
            for state in states:
                if state.wholly_remote:
                    tiered[(d, state.partition)] = state
                    to_cover[(d, state.partition)] = self._offsets_only_on(d, state)
                else:
                    found[(d, state.partition)] = _UPLOADING
        for key, outcome in self._ask_owners(to_cover, silent).items():
            # Another draining shard tiered before may have left d alone on a range it
            # shared: then the owner must cover that one too (the next pass asks).
            if outcome is True and self._offsets_only_on(key[0], tiered[key]) == to_cover[key]:
                self._tier(key[0], key[1], to_cover[key])
            else:
                found[key] = _LISTING if outcome is True else outcome
        return found

    def _tiered_held_by(self, shard_id: str) -> list[PartitionId]:
        """The partitions of tiered topics of which ``shard_id`` holds a sealed range and
        not the current one."""
        return [PartitionId(name, p) for name, topic in sorted(self._metadata.topics.items())
                if topics.remote_storage_enabled(topic.config) for p in range(topic.partitions)
                if shard_id not in topic.replicas_of(p) and
                any(shard_id in r.holders for r in topic.ranges_of(p))]

    def _offsets_only_on(self, shard_id: str, state: TieredState) -> list[tuple[int, int]]:
        """The [start, end) intervals of the partition that ``shard_id`` alone holds (from
        its log start on: retention took what is below), which the owner must cover
        before ``shard_id`` stops serving them."""
        ranges = self._metadata.topics[state.partition.topic].ranges_of(state.partition.partition)
        intervals = []
        for r, after in zip(ranges, ranges[1:]):
            start = max(r.start_offset, state.log_start_offset)
            if r.holders == (shard_id,) and start < after.start_offset:
                intervals.append((start, after.start_offset))
        return intervals

    def _ask_owners(self, to_cover: dict[tuple[str, PartitionId], list[tuple[int, int]]],
                    silent: set[str]) -> dict[tuple[str, PartitionId], bool | str]:
        """(draining shard, partition) -> True if there is nothing to cover or the owner
        covers it all, else why not. An owner whose view does not cover it re-lists
        the store (``resync``) and is asked again on the next pass."""
        outcomes: dict[tuple[str, PartitionId], bool | str] = {}
        calls = {}
        for key, intervals in to_cover.items():
            owner = self._metadata.topics[key[1].topic].leader_of(key[1].partition)
            if not intervals:
                outcomes[key] = True
            elif not owner or owner not in self._shards or owner in silent:
                outcomes[key] = _OWNER_OFFLINE
            else:
                calls[key] = self._shards[owner].covers_remote(key[1], intervals, True)
        for key, covered in wait_all(calls, limits.STATUS_CALL_TIMEOUT_S).items():
            if isinstance(covered, BrokerError):
                log.info("%s-%d: its owner did not say whether it reads the offsets %s holds "
                         "from object storage: %s", key[1].topic, key[1].partition, key[0],
                         covered)
                outcomes[key] = _OWNER_OFFLINE
            else:
                outcomes[key] = all(covered) or _LISTING
        return outcomes

    def _tier(self, shard_id: str, pid: PartitionId, intervals: list[tuple[int, int]]) -> None:
        """Record that ``shard_id`` no longer serves ``pid``: its owner reads ``intervals``
        from object storage. ``shard_id``'s copy is not deleted: it answers routes
        made before this, until it retires."""
        self._metadata.topics[pid.topic].tier_ranges_on(pid.partition, shard_id)
        self._save()
        log.info("%s-%d: the ranges on %s are in object storage; its owner serves %s from "
                 "there", pid.topic, pid.partition, shard_id,
                 ", ".join(f"[{a}, {b})" for a, b in intervals) or "none of them (retention "
                 "took them, or another replica holds them)")

    def _why_draining(self, shard_id: str, specs: list[PartitionSpec],
                      found: dict[tuple[str, PartitionId], str]) -> str:
        """What keeps the draining ``shard_id`` from retiring, by partition it still
        serves, e.g. "2 partitions of tiered topics still uploading to object storage"."""
        counts: Counter[str] = Counter()
        for spec in specs:
            topic = self._metadata.topics[spec.topic]
            if shard_id in topic.replicas_of(spec.partition):
                counts[_WRITES] += 1
            elif not topics.remote_storage_enabled(topic.config):
                counts[_UNTIERED] += 1
            else:
                counts[found.get((shard_id, spec.id), _UPLOADING)] += 1
        return "; ".join(f"{n} {'partition' if n == 1 else 'partitions'} {why}"
                         for why, n in sorted(counts.items(), key=lambda c: -c[1]))

    def _prune_ranges(self) -> None:
        """Forget the older ranges that hold no record (retention emptied them, or
        none was written before their writes moved), on shards that no longer own
        their partition, and delete those shards' empty logs of it. Each shard is asked
        once, about all its candidates (a pass runs at every status call and shard's
        nudge: one call per range would make it as slow as the ranges are many)."""
        candidates: dict[str, list[PartitionId]] = {}
        for name, topic in self._metadata.topics.items():
            for partition in list(topic.ranges):
                holders = {s for r in topic.ranges_of(partition) for s in r.holders}
                for shard_id in holders - set(topic.replicas_of(partition)):
                    candidates.setdefault(shard_id, []).append(PartitionId(name, partition))
        infos = wait_all({s: self._shards[s].partition_infos(pids)
                          for s, pids in candidates.items() if s in self._shards},
                         limits.STATUS_CALL_TIMEOUT_S)
        emptied = {shard_id: pids for shard_id, got in sorted(infos.items())
                   if not isinstance(got, BrokerError)   # down: ask again next time
                   if (pids := [pid for pid, info in zip(candidates[shard_id], got)
                                if _holds_nothing(info)])}
        if emptied:
            self._forget(emptied)

    def _forget(self, emptied: dict[str, list[PartitionId]]) -> None:
        """Forget each shard's emptied ranges in one save, then delete its logs of them
        in one call (one save and one call per range took 20-50 ms each: a shard
        removed from 2,000 partitions held the controller for over a minute)."""
        # Before forgetting: whether a range ever held records is in its offsets.
        wrote = {shard_id: {pid: _range_offsets(self._metadata.topics[pid.topic],
                                                pid.partition, shard_id) for pid in pids}
                 for shard_id, pids in emptied.items()}
        for shard_id, pids in emptied.items():
            for pid in pids:
                self._metadata.topics[pid.topic].forget_ranges_on(pid.partition, shard_id)
        self._save()
        for shard_id, pids in emptied.items():
            # Not waited for: a shard that misses it keeps empty directories.
            self._shards[shard_id].delete_partitions(pids, keep_remote=True)
            # Two causes, told apart for the operator reading the log after a shards
            # add or remove: a range empty when its writes moved away (no record was
            # ever written there), or one whose records retention deleted since.
            never = [pid for pid in pids if wrote[shard_id][pid] == 0]
            deleted = [pid for pid in pids if wrote[shard_id][pid] != 0]
            if never:
                log.info("%s: forgot its ranges of %d %s, empty when their writes moved "
                         "away (%s); deleted its empty logs of them", shard_id, len(never),
                         "partition" if len(never) == 1 else "partitions", _named(never))
            if deleted:
                log.info("%s: forgot its ranges of %d %s, whose records retention deleted "
                         "since their writes moved away (%s: %s offsets); deleted its "
                         "empty logs of them", shard_id, len(deleted),
                         "partition" if len(deleted) == 1 else "partitions", _named(deleted),
                         sum(wrote[shard_id][pid] for pid in deleted))


def _range_offsets(topic, partition: int, shard_id: str) -> int:
    """How many offsets the partition's ranges on ``shard_id`` span (from a range's
    start to the next range's): 0 if it took no record before its writes moved."""
    ranges = topic.ranges_of(partition)
    return sum(following.start_offset - r.start_offset
               for r, following in zip(ranges, ranges[1:]) if shard_id in r.holders)


def _named(pids: list[PartitionId]) -> str:
    return ", ".join(f"{pid.topic}-{pid.partition}" for pid in pids[:5]) + \
        (f", ... ({len(pids) - 5} more)" if len(pids) > 5 else "")

def _holds_nothing(info: protocol.PartitionInfo) -> bool:
    # A tiered range whose local segments local retention dropped still holds its
    # records, in the store: its shard serves them (remote reads) until total
    # retention deletes them, or the range is tiered (it drains); forgetting it would
    # route its offsets elsewhere.
    return info.size_bytes == 0 and info.remote_bytes == 0
