"""The controller's changes to a partition's leadership record: pure functions.

The controller is the single metadata authority: it owns each partition's
``Leadership`` (shard_calls.py, re-exported by the shard handle), persists it
in metadata.json, and changes it only through these functions, each a new
record with ``partition_epoch`` + 1 (and ``leader_epoch`` + 1 for a new
leader). They do no I/O; the controller's thread calls them (any thread may).

- ``initial_leadership``: a new partition's record: the first replica leads,
  every replica is in sync (every log is empty).
- ``alter_in_sync``: the leader's request to change the in-sync set, a
  compare-and-set on (leader_epoch, partition_epoch): a stale request raises
  FencedLeaderEpochError naming both pairs of epochs.
- ``elect_leader``: a new leader when the old one is lost: the first alive
  in-sync replica, else the first alive eligible one (KIP-966), else none
  (offline) unless unclean election is allowed.
- ``preferred_refusal`` and ``elect_preferred``: a preferred-leader election
  (electLeaders): whether the first replica may lead now, and the record where
  it does, once its leader has handed the partition over (it holds the whole log).
  ``replica_refusal`` and ``elect_replica`` do the same for any replica: a leader
  whose disk refuses writes hands over to another in-sync one (disk_moves.py).
- ``mark_needs_repair``: a replica came back without all it held: out of the
  in-sync and eligible sets at once.

Eligible leader replicas (KIP-966). A replica that leaves the in-sync set
while the new set is smaller than min.insync.replicas holds every
acknowledged record: the leader's high watermark cannot move while the set is
that small (shards/replication.py, invariant 5), and it counted the leaving
replica until the change was committed (invariant 4). So it may lead if no
in-sync replica is alive. It stays eligible until it rejoins the in-sync set,
or until the set reaches min.insync.replicas again: from then on the high
watermark could move without it. A replica that needs repair (its recovery
cut entries, or its disk was lost) is never eligible, never in sync, never
elected until it has caught up and the leader adds it back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace

from plinth.errors import (BrokerError, ElectionNotNeededError, FencedLeaderEpochError,
                           NotLeaderError, PreferredLeaderNotAvailableError)
from plinth.shards.shard_handle import Leadership


def _ordered(replicas: tuple[str, ...], members: Iterable[str]) -> tuple[str, ...]:
    """``members`` in the replicas' order (preferred leader first): records compare
    equal whatever order a request listed them in."""
    chosen = set(members)
    return tuple(r for r in replicas if r in chosen)


def initial_leadership(replicas: tuple[str, ...] | list[str],
                       controller_epoch: int) -> Leadership:
    """A new partition's record: ``replicas[0]`` leads in leader epoch 0, every
    replica is in sync."""
    replicas = tuple(replicas)
    record = Leadership(replicas=replicas, leader=replicas[0] if replicas else "",
                        leader_epoch=0, in_sync=replicas, partition_epoch=0,
                        controller_epoch=controller_epoch, eligible=())
    record.check()
    return record


def alter_in_sync(current: Leadership, requester: str, leader_epoch: int, partition_epoch: int,
                  in_sync: Iterable[str], min_insync: int, *,
                  needs_repair: Collection[str] = (),
                  controller_epoch: int | None = None) -> Leadership:
    """The leader ``requester`` asks for the in-sync set ``in_sync``: a CAS on
    (``leader_epoch``, ``partition_epoch``). Returns the new record (``current``
    itself if nothing changes). FencedLeaderEpochError if either epoch is not
    the current one; NotLeaderError if ``requester`` does not lead. Replicas in
    ``needs_repair`` that leave do not become eligible. ``controller_epoch``:
    the incarnation making the change (default: the record's)."""
    name = f"leader epoch {current.leader_epoch}, partition epoch {current.partition_epoch}"
    if (leader_epoch, partition_epoch) != (current.leader_epoch, current.partition_epoch):
        raise FencedLeaderEpochError(
            f"in-sync change from {requester} carries leader epoch {leader_epoch}, "
            f"partition epoch {partition_epoch}; the record has {name}")
    if requester != current.leader or not requester:
        raise NotLeaderError(f"in-sync change from {requester}, but {current.leader or 'none'} "
                             f"leads ({name})")
    wanted = _ordered(current.replicas, in_sync)
    if requester not in wanted or len(wanted) != len(set(in_sync)):
        raise ValueError(f"in-sync set {sorted(set(in_sync))} from {requester} must hold it and "
                         f"only replicas of {list(current.replicas)}")
    leaving = set(current.in_sync) - set(wanted) - set(needs_repair)
    if len(wanted) >= min_insync:
        eligible: tuple[str, ...] = ()     # the high watermark may move without them now
    else:
        eligible = _ordered(current.replicas,
                            (set(current.eligible) | leaving) - set(wanted) - set(needs_repair))
    if wanted == current.in_sync and eligible == current.eligible:
        return current
    return _changed(current, controller_epoch, in_sync=wanted, eligible=eligible)


def elect_leader(current: Leadership, alive: Collection[str], unclean: bool, *,
                 min_insync: int | None = None, needs_repair: Collection[str] = (),
                 controller_epoch: int | None = None) -> Leadership:
    """A new leader for a partition whose leader was lost, among the ``alive``
    replicas that do not need repair: the first in-sync one, else the first
    eligible one (KIP-966), else, if ``unclean``, the first one at all (records
    may be lost: unclean.leader.election.enable), else none (offline, leader "").
    Every election bumps both epochs, so the old leader is fenced.

    The dead and needs-repair replicas leave the in-sync set. A dead one becomes
    eligible when the set is then smaller than ``min_insync`` (None: the caller
    does not know it, and no one new becomes eligible, which is safe). Returns
    ``current`` itself if it is offline and stays so."""
    repairing = set(needs_repair)
    candidates = set(alive) - repairing
    if not current.leader and not (set(current.in_sync) | set(current.eligible)) & candidates \
            and not (unclean and candidates & set(current.replicas)):
        return current
    leader = next((r for r in current.in_sync if r in candidates), "")
    if leader:
        in_sync = _ordered(current.replicas, set(current.in_sync) & candidates)
    else:
        leader = next((r for r in current.eligible if r in candidates), "")
        if not leader and unclean:
            leader = next((r for r in current.replicas if r in candidates), "")
            if leader:
                return _changed(current, controller_epoch, leader=leader, bump_leader=True,
                                in_sync=(leader,), eligible=())
        if not leader:       # offline: the in-sync set stays, for the first to come back
            return _changed(current, controller_epoch, leader="", bump_leader=True,
                            in_sync=_ordered(current.replicas, set(current.in_sync) - repairing),
                            eligible=_ordered(current.replicas, set(current.eligible) - repairing))
        in_sync = (leader,)
    dead = set(current.in_sync) - set(in_sync) - repairing
    if min_insync is not None and len(in_sync) >= min_insync:
        eligible: tuple[str, ...] = ()     # the high watermark may move without them now
    else:
        newly_eligible = dead if min_insync is not None else set()
        eligible = _ordered(current.replicas,
                            (set(current.eligible) | newly_eligible) - set(in_sync) - repairing)
    return _changed(current, controller_epoch, leader=leader, bump_leader=True,
                    in_sync=in_sync, eligible=eligible)


def preferred_refusal(current: Leadership, alive: Collection[str], *,
                      needs_repair: Collection[str] = (), where: str = "the partition"
                      ) -> BrokerError | None:
    """Why ``current``'s preferred leader (its first replica) may not be elected now,
    or None: ElectionNotNeededError where it leads already,
    PreferredLeaderNotAvailableError where it does not answer, needs repair, or is
    not in sync (it may lack acknowledged records). ``where`` names the partition."""
    return replica_refusal(current, current.replicas[0], alive, needs_repair=needs_repair,
                           where=where)


def replica_refusal(current: Leadership, replica: str, alive: Collection[str], *,
                    needs_repair: Collection[str] = (), where: str = "the partition"
                    ) -> BrokerError | None:
    """Why ``replica`` may not be elected leader of ``current`` now, or None, as
    ``preferred_refusal`` says for the preferred one (named so in the errors)."""
    named = "its preferred leader" if replica == current.replicas[0] else "its replica"
    if current.leader == replica:
        return ElectionNotNeededError(f"{where}: {named} {replica} leads it "
                                      f"already (leader epoch {current.leader_epoch})")
    reason = ("is not one of its replicas" if replica not in current.replicas
              else "does not answer" if replica not in alive
              else "needs repair" if replica in needs_repair
              else f"is not in sync (in sync: {', '.join(current.in_sync) or 'none'})"
              if replica not in current.in_sync else "")
    if reason:
        return PreferredLeaderNotAvailableError(f"{where}: {named} {replica} "
                                                f"{reason}; {current.leader or 'none'} leads it")
    return None


def elect_preferred(current: Leadership, *, controller_epoch: int | None = None) -> Leadership:
    """The record where ``current``'s preferred leader leads (``elect_replica``)."""
    return elect_replica(current, current.replicas[0], controller_epoch=controller_epoch)


def elect_replica(current: Leadership, replica: str, *,
                  controller_epoch: int | None = None) -> Leadership:
    """The record where ``replica`` leads, in a new leader epoch, the in-sync set
    unchanged. The caller checked ``replica_refusal`` and, where a leader was alive,
    that it handed the partition over (``replica`` holds its whole log, so the old
    leader, now a follower, cuts nothing)."""
    assert replica in current.in_sync and replica != current.leader, \
        f"elect_replica: {replica} cannot take {current}"
    return _changed(current, controller_epoch, leader=replica, bump_leader=True)


def mark_needs_repair(current: Leadership, replica_id: str, *,
                      controller_epoch: int | None = None) -> Leadership:
    """``replica_id`` came back without everything it held (its recovery cut entries,
    or its data directory was lost): it leaves the in-sync and eligible sets at once,
    and if it led, the partition has no leader until ``elect_leader`` picks another
    (with ``replica_id`` in its ``needs_repair``). It rejoins the in-sync set only
    when the leader adds it back (it has then caught up: replication.py, rule 8), and
    the controller forgets the mark then. Returns ``current`` itself if it was
    neither in sync nor eligible."""
    if replica_id not in current.in_sync and replica_id not in current.eligible:
        return current
    leads = current.leader == replica_id
    return _changed(current, controller_epoch, bump_leader=leads,
                    leader="" if leads else current.leader,
                    in_sync=tuple(r for r in current.in_sync if r != replica_id),
                    eligible=tuple(r for r in current.eligible if r != replica_id))


def _changed(current: Leadership, controller_epoch: int | None, *, bump_leader: bool = False,
             **fields) -> Leadership:
    epoch = current.controller_epoch if controller_epoch is None else controller_epoch
    if epoch < current.controller_epoch:
        raise FencedLeaderEpochError(f"controller epoch {epoch} is older than the record's "
                                     f"{current.controller_epoch}")
    record = replace(current, **fields, partition_epoch=current.partition_epoch + 1,
                     leader_epoch=current.leader_epoch + (1 if bump_leader else 0),
                     controller_epoch=epoch)
    record.check()
    return record
