"""A shard's replication roles: which partitions it leads, follows, or neither, as the
controller's leadership records say (Kafka's ISR; the protocol is shards/replication.py).

Runs in a shard actor, on its loop thread (shard_server.py), every method but
``_ask_in_sync`` and ``_tell_disk_refused``, which run on the in-sync thread. A
partition opened with no record has one copy, here, and never appears here. One
with a record is

- led here (replica_server.py: it serves the followers' fetches, its high
  watermark moves as the in-sync replicas hold the log, acks="all" produces
  wait in group commit for it);
- followed (replica_fetcher.py: it fetches from the leader, appends, fsyncs,
  fetches again);
- or NOT_SERVED: no leader (offline), or this shard is no longer a replica;
  a produce gets NotLeaderError.

Records. The controller sends a record when it creates the partition, on
every change, and at open (``PartitionSpec.leadership``). One older than the
record held (by controller epoch, then partition epoch) is ignored: a paused
controller or a late answer cannot undo a newer decision. A shard that
restarted never leads again in a leader epoch its manifest says it led
(replication.py, invariant 13: it lost unsynced entries its followers may
hold under that epoch): the partition is NOT_SERVED here until the controller
elects a leader in a newer epoch. Its high watermark starts at the log's start
(nothing is readable until a leader's high watermark says what the in-sync
replicas hold): Partition.open made the whole recovered log readable, which
of a replicated log may include entries no other replica has. A replicated
partition whose directory a
restarted shard found missing (a lost disk) is marked needs-repair: not in sync
and not eligible until it has caught up (the controller reads it in stats).

Sealed ranges (``seal``). When a partition's replica set moves (plinth shards
add/remove), its range here is sealed: it neither leads nor follows any more
(ShardServer.seal_range: the leader once its in-sync replicas hold its log's
end, a follower once it holds the range to the leader's seal offset) and
serves reads of the range with no leader. A shard also in the new set gets
the new record and a role again.

Hand-overs (``hand_over``). A preferred-leader election (the controller's
elect_leaders), or a move off a leader's disk that refuses writes (to another
in-sync replica: control/disk_moves.py; ``append_refused`` tells the
controller), first asks the leader to hand the partition over: it refuses
produces (NotLeaderError, retriable) while its log end is made durable and the
preferred replica fetches the rest; the controller asks again until that replica's
last fetch offset reaches the log end, then gives the partition a new leader
epoch with the preferred replica leading. So this leader, now a follower, cuts
nothing, and no acknowledged record (acks=1 included) is lost. The refusal holds
for the leader epoch it was asked in: the new record ends it (this shard no longer
leads), ``end_hand_over`` ends it when the controller gives up, and
LEADER_HANDOVER_FENCE_MS ends it when the controller died meanwhile.

In-sync changes. Every REPLICA_LAG_CHECK_INTERVAL_MS the leaders' state
machines may want a follower out of (or back in) the in-sync set; each such
change is a compare-and-set at the controller (``alter_in_sync``), asked from
a thread of its own so that the loop never waits for the controller, at most
one per partition at a time (IN_SYNC_REQUESTS_PENDING_MAX in all). The answer
comes back to the loop as a new record.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import time
from collections.abc import Callable

import zmq

from plinth import limits, protocol
from plinth.cluster_keys import ClusterKeys
from plinth.errors import (BrokerError, NotLeaderError, PreferredLeaderNotAvailableError,
                           StorageError, TooManyRequestsError)
from plinth.shards.fetch_purgatory import FetchPurgatory
from plinth.shards.group_commit import GroupCommit
from plinth.shards.partition import Partition
from plinth.shards.partition_log import cut_kept
from plinth.shards.replica_fetcher import Followed, ReplicaFetcher
from plinth.shards.replica_server import Led, ReplicaServer
from plinth.shards.shard_calls import ControllerAnnouncements, Leadership, PartitionId

log = logging.getLogger(__name__)

# A replicated partition that is neither led nor followed here: no leader (offline),
# or this shard is no longer one of its replicas.
NOT_SERVED = "not served"

Key = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class HandOver:
    """A led partition's hand-over to ``to_shard``, asked in ``leader_epoch``: produces
    are refused until ``until_s`` (monotonic) while this shard leads in that epoch."""

    to_shard: str
    leader_epoch: int
    until_s: float


class ShardReplication:
    """The replication roles of one shard's partitions. Loop thread only, but where a
    method says otherwise.

    ``partitions``: the shard's open partitions (read, never changed here).
    ``post(fn, *args)``: runs ``fn`` on the loop thread later (from another thread).
    """

    def __init__(self, shard_id: str, partitions: dict[Key, Partition],
                 purgatory: FetchPurgatory, group_commit: GroupCommit, *,
                 reply: Callable[..., None], post: Callable[..., None],
                 controller: ControllerAnnouncements | None, lag_time_max_ms: int):
        self.shard_id = shard_id
        self._partitions = partitions
        self._purgatory = purgatory
        self._group_commit = group_commit
        self._post = post
        self._controller = controller
        self.controller_epoch = 0
        self._leadership: dict[Key, Leadership] = {}
        self._min_insync: dict[Key, int] = {}
        # Restarted: the leader epoch each partition was led in before; never led again.
        self._led_before_restart: dict[Key, int] = {}
        # Replicated partitions open here: led (Led), followed (Followed) or NOT_SERVED.
        # The produce path reads it: one lookup, None for a partition of one copy.
        self.roles: dict[Key, Led | Followed | str] = {}
        self._leaders = ReplicaServer(shard_id, purgatory, reply=reply,
                                      advanced=self._high_watermark_moved,
                                      lag_time_max_ms=lag_time_max_ms)
        self._fetcher: ReplicaFetcher | None = None   # made in start(), with the context
        self._in_sync_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"{shard_id}-in-sync")
        self._in_sync_pending: set[Key] = set()
        self._next_lag_check_s = 0.0
        # Partitions handed over: (to whom, in which leader epoch, refused until when).
        self._handing_over: dict[Key, HandOver] = {}
        self._disk_nudge_next_s = 0.0   # the controller is told of a refusing disk from then

    def start(self, context: zmq.Context, poller: zmq.Poller,
              cluster_keys: ClusterKeys | None, has_room: Callable[[int], bool]) -> None:
        """Make the follower side, whose DEALERs the loop's poller watches (actor thread,
        before the loop starts). ``has_room(bytes)``: whether the shard's file system
        has that many bytes free (DiskReserve.has_room)."""
        self._fetcher = ReplicaFetcher(self.shard_id, context, poller, cluster_keys,
                                       written=self._group_commit.written,
                                       advanced=self._purgatory_wake, clock_s=time.monotonic,
                                       has_room=has_room)

    def close(self) -> None:
        """Close the DEALERs to the leaders (loop thread, at stop)."""
        self._fetcher.close()

    def stop_thread(self) -> None:
        """Stop the in-sync thread (any thread, after the loop stopped)."""
        self._in_sync_pool.shutdown(wait=False)

    # --- Records ----------------------------------------------------------------------

    def set_peers(self, addresses: dict[str, str], controller_epoch: int) -> None:
        """Every running shard's address, for following leaders."""
        log.info("%s: peers %s (controller epoch %d)", self.shard_id,
                 ", ".join(f"{s} at {a}" for s, a in sorted(addresses.items())), controller_epoch)
        self.controller_epoch = max(self.controller_epoch, controller_epoch)
        self._fetcher.set_peers(addresses, self.controller_epoch)

    def set_leadership(self, changes: list) -> None:
        """New leadership records of partitions here: lead, follow, or neither; an older
        one than the record held is ignored. A record of a partition not open yet is
        kept for ``opened``."""
        for pid, leadership in changes:
            key = (pid.topic, pid.partition)
            held = self._leadership.get(key)
            if held is not None and (leadership.controller_epoch, leadership.partition_epoch) \
                    < (held.controller_epoch, held.partition_epoch):
                log.info("%s: ignored an older leadership record of %s-%d: %s (holding %s)",
                         self.shard_id, pid.topic, pid.partition, leadership, held)
                continue
            self._leadership[key] = leadership
            self.controller_epoch = max(self.controller_epoch, leadership.controller_epoch)
            self._fetcher.controller_epoch = self.controller_epoch
            part = self._partitions.get(key)
            if part is not None:
                self._apply(part, leadership)

    def replicated(self, key: Key, leadership: Leadership | None) -> bool:
        """Whether the partition ``key``, about to open with ``leadership`` (its record,
        or None), has replicas: a record given now, or one that came before it."""
        return leadership is not None or key in self._leadership

    def opened(self, part: Partition, leadership: Leadership | None,
               min_insync_replicas: int | None, restarted: bool = False) -> None:
        """``part`` was opened, with its record if the controller gave one;
        ``restarted``: from the manifest, after this shard restarted."""
        if min_insync_replicas is not None:
            self._min_insync[part.key] = min_insync_replicas
        if restarted and leadership is not None:
            # Partition.open made the whole recovered log readable; of a replicated
            # one, only what the in-sync replicas hold is, and that is not known
            # until a leader's high watermark says so (KAFKA-7128).
            part.high_watermark = part.log.start_offset
            if leadership.leader == self.shard_id:
                self._led_before_restart[part.key] = leadership.leader_epoch
            if part.directory_created and not part.needs_repair:
                part.mark_needs_repair("the shard restarted and found the partition's "
                                       "directory missing (a lost or wiped disk)")
        if leadership is not None:
            self.set_leadership([(PartitionId(part.topic, part.partition), leadership)])
        elif part.key in self._leadership:   # set_leadership came before the partition
            self._apply(part, self._leadership[part.key])
        elif restarted:
            _say_single_copy_loss(part)

    def set_min_insync(self, key: Key, min_insync_replicas: int) -> None:
        """A topic's altered min.insync.replicas, for one partition."""
        self._min_insync[key] = min_insync_replicas
        led = self.roles.get(key)
        if type(led) is Led:
            self._leaders.lead(led.part, led.leadership, min_insync_replicas, time.monotonic())

    def forget(self, part: Partition, error: BrokerError) -> None:
        """``part`` is deleted: no role any more; its waiting requests get ``error``."""
        self._stop_leading(part, error)
        self._fetcher.unfollow(part.key)
        self.roles.pop(part.key, None)
        self._leadership.pop(part.key, None)
        self._handing_over.pop(part.key, None)

    def seal(self, part: Partition, error: BrokerError) -> None:
        """``part``'s range here is sealed (its writes moved to another replica set): it
        neither leads nor follows any more; requests waiting on its lead get ``error``.
        A new record (the shard is in the new set too) makes it a replica again."""
        self._stop_leading(part, error)
        if self._fetcher.unfollow(part.key) is not None:
            self._group_commit.unreplicate(part)
        self.roles.pop(part.key, None)
        self._leadership.pop(part.key, None)

    def _apply(self, part: Partition, leadership: Leadership) -> None:
        key = part.key
        if leadership.leader == self.shard_id and \
                leadership.leader_epoch <= self._led_before_restart.get(key, -1):
            log.warning("%s: does not lead %s again in leader epoch %d, which it led before "
                        "it restarted; waiting for a newer epoch", self.shard_id, part.name,
                        leadership.leader_epoch)
            leadership = dataclasses.replace(leadership, leader="")   # serve it as offline
        elif leadership.leader == self.shard_id and part.needs_repair:   # invariant 14
            log.warning("%s: does not lead %s in leader epoch %d: it needs repair (its log "
                        "may lack acknowledged records)", self.shard_id, part.name,
                        leadership.leader_epoch)
            leadership = dataclasses.replace(leadership, leader="")
        if leadership.leader == self.shard_id:
            if self._fetcher.unfollow(key) is not None:
                self._group_commit.unreplicate(part)
            default = 2 if len(leadership.replicas) >= 3 else 1
            led = self._leaders.lead(part, leadership, self._min_insync.get(key, default),
                                     time.monotonic())
            self.roles[key] = led
            self._group_commit.replicate(part, self._leader_durable,
                                         self._leaders.too_few_in_sync)
            too_few = self._leaders.too_few_in_sync(part)
            if too_few is not None:
                # Their high watermark cannot move now: answered at the shrink, as Kafka's
                # DelayedProduce is, not after ACKS_ALL_WAIT_MS_MAX (a follower whose disk
                # is full made producers wait 20 s per try for the same answer).
                self._group_commit.fail_acks_all(part, too_few)
            self._leaders.on_durable(part, time.monotonic())   # alone in sync: HW moves now
            return
        self._stop_leading(part, NotLeaderError(
            f"{part.name}: {self.shard_id} does not lead it; its leader is "
            f"{leadership.leader or 'none'} in epoch {leadership.leader_epoch}; retry"))
        if leadership.leader and self.shard_id in leadership.replicas:
            self._fetcher.follow(part, leadership)
            self.roles[key] = self._fetcher.followed[key]
            self._group_commit.replicate(part, self._fetcher.on_durable)
        else:
            self._fetcher.unfollow(key)
            self._group_commit.unreplicate(part)
            self.roles[key] = NOT_SERVED

    def _stop_leading(self, part: Partition, error: BrokerError) -> None:
        if self._leaders.stop_leading(part.key, error) is not None:
            self._group_commit.fail_acks_all(part, error)
            self._group_commit.unreplicate(part)

    # --- The data path ------------------------------------------------------------------

    def check_produce(self, part: Partition, role, acks: int) -> Led:
        """The Led of a replicated partition a produce may append to; NotLeaderError if
        it is not led here (or is being handed over), NotEnoughReplicasError or
        TooManyRequestsError for an acks="all" one that cannot be acknowledged now."""
        if self._handing_over and type(role) is Led:
            self._check_not_handing_over(part, role)
        if type(role) is not Led:
            leadership = self._leadership[part.key]
            if leadership.leader == self.shard_id:
                raise NotLeaderError(
                    f"{part.name}: {self.shard_id} led it in leader epoch "
                    f"{leadership.leader_epoch} before it restarted and waits for the "
                    f"controller to elect a leader in a newer epoch; retry")
            raise NotLeaderError(
                f"{part.name}: {self.shard_id} does not lead it; its leader is "
                f"{leadership.leader or 'none (offline)'} in leader epoch "
                f"{leadership.leader_epoch}; retry")
        if acks == -1:
            role.replication.check_acks_all()
            if not self._group_commit.acks_all_room():
                raise TooManyRequestsError(
                    f"{self.shard_id}: {limits.ACKS_ALL_PENDING_MAX} acks=\"all\" produces "
                    f"wait for their replicas already; retry")
        return role

    # --- Hand-overs (a preferred-leader election) ---------------------------------------

    def hand_over(self, part: Partition, to_shard: str, now_s: float) -> None:
        """Refuse produces of ``part``, led here, until it has a new leader (at most
        LEADER_HANDOVER_FENCE_MS from now), for a hand-over to ``to_shard``.
        NotLeaderError where it is not led here; PreferredLeaderNotAvailableError
        where ``to_shard`` is not an in-sync follower."""
        led = self.roles.get(part.key)
        if type(led) is not Led:
            raise NotLeaderError(f"{part.name}: {self.shard_id} does not lead it; it cannot "
                                 f"hand it over to {to_shard}")
        if to_shard not in led.leadership.in_sync or to_shard == self.shard_id:
            raise PreferredLeaderNotAvailableError(
                f"{part.name}: {to_shard} is not an in-sync follower of its leader "
                f"{self.shard_id} (in sync: {', '.join(led.leadership.in_sync)})")
        self._handing_over[part.key] = HandOver(
            to_shard, led.leader_epoch, now_s + limits.LEADER_HANDOVER_FENCE_MS / 1000)

    def holds_log_end(self, part: Partition, follower: str) -> bool:
        """Whether ``follower``'s last fetch of ``part``, led here, asked from its log
        end on: it holds the whole log, durably."""
        led = self.roles.get(part.key)
        return type(led) is Led and led.fetch_offsets.get(follower, -1) >= part.log.end_offset

    def end_hand_over(self, part: Partition) -> None:
        """The controller gave up handing ``part`` over: it takes produces again."""
        if self._handing_over.pop(part.key, None) is not None:
            log.warning("%s: takes writes for %s again (its hand-over did not finish)",
                        self.shard_id, part.name)

    def _check_not_handing_over(self, part: Partition, led: Led) -> None:
        handing = self._handing_over.get(part.key)
        if handing is None:
            return
        if handing.leader_epoch != led.leader_epoch or time.monotonic() >= handing.until_s:
            del self._handing_over[part.key]   # led again in a newer epoch, or given up
            return
        raise NotLeaderError(f"{part.name}: {self.shard_id} hands its leadership over to "
                             f"{handing.to_shard}; retry")

    def serve(self, envelope: list, request: protocol.ReplicaFetchRequest,
              received_s: float) -> None:
        """A follower's fetch (replica_server.py)."""
        self._leaders.serve(envelope, request, self.controller_epoch, received_s)

    def serve_all(self, envelope: list, request: protocol.ReplicaFetchAllRequest,
                  received_s: float) -> None:
        """A follower's fetch of every partition it follows here (replica_server.py)."""
        self._leaders.serve_all(envelope, request, self.controller_epoch, received_s)

    def floor_raised(self, part: Partition, answer, now_s: float) -> None:
        """deleteRecords raised the floor of a partition led here: its followers hear
        of it at once (replica_server.py), and ``answer(error or None)`` is called once
        every in-sync one holds it, or the wait ends (deletion_waits.py)."""
        led = self._leaders.led.get(part.key)
        if led is None:
            answer(None)   # (a partition of one copy has no followers)
            return
        self._leaders.floor_raised(part)
        # The floor, not log_start_offset: a leader whose retention went further than
        # its floor would wait for followers whose own retention has not, until the
        # deadline, though nothing was deleted.
        self._leaders.deletions.wait(led, part.floor, answer, now_s)

    def on_readable(self, sock: zmq.Socket) -> None:
        """A DEALER to a leader has answers (replica_fetcher.py)."""
        self._fetcher.on_readable(sock)

    def _leader_durable(self, part: Partition) -> None:
        """Group commit made a led partition's appends durable."""
        self._leaders.on_durable(part, time.monotonic())

    def _high_watermark_moved(self, part: Partition) -> None:
        """A led partition's high watermark moved: its consumers and acks="all" produces."""
        self._purgatory.wake(part.key)
        self._group_commit.high_watermark_moved(part)

    def _purgatory_wake(self, part: Partition) -> None:
        """A followed partition's high watermark moved: its consumers' fetches."""
        self._purgatory.wake(part.key)

    # --- Timers and in-sync changes ----------------------------------------------------------

    def next_timer_s(self) -> float | None:
        """When ``run_timers`` must run next; None if nothing waits."""
        fetch_s = self._fetcher.next_timer_s()
        deletion_s = self._leaders.deletions.next_deadline_s()
        if deletion_s is not None:
            fetch_s = deletion_s if fetch_s is None else min(fetch_s, deletion_s)
        if not self._leaders.led:
            return fetch_s
        return self._next_lag_check_s if fetch_s is None else min(fetch_s, self._next_lag_check_s)

    def run_timers(self, now_s: float) -> None:
        self._fetcher.run_timers(now_s)
        self._leaders.deletions.expire(now_s, self._leaders.led.get)
        if self._leaders.led and now_s >= self._next_lag_check_s:
            self._next_lag_check_s = now_s + limits.REPLICA_LAG_CHECK_INTERVAL_MS / 1000
            self._group_commit.expire_acks_all(now_s)
            self._ask_for_in_sync_changes(now_s)

    def _ask_for_in_sync_changes(self, now_s: float) -> None:
        if self._controller is None:
            return
        for led, in_sync in self._leaders.in_sync_proposals(now_s, self._in_sync_pending):
            if len(self._in_sync_pending) >= limits.IN_SYNC_REQUESTS_PENDING_MAX:
                return
            self._in_sync_pending.add(led.part.key)
            self._in_sync_pool.submit(self._ask_in_sync, led.part.key, led.leadership, in_sync)

    def _ask_in_sync(self, key: Key, leadership: Leadership, in_sync: tuple[str, ...]) -> None:
        """The in-sync thread: one compare-and-set at the controller; the answer goes
        back to the loop."""
        pid = PartitionId(*key)
        try:
            answer = self._controller.alter_in_sync(self.shard_id, pid, leadership.leader_epoch,
                                                    leadership.partition_epoch, in_sync)
        except Exception as exc:   # fenced, or the controller is away: the next check asks again
            answer = exc
        try:
            self._post(self._in_sync_answered, key, pid, in_sync, answer)
        except queue.Full:
            log.warning("%s: the loop is not taking commands; in-sync answer for %s-%d dropped",
                        self.shard_id, *key)

    def _in_sync_answered(self, key: Key, pid: PartitionId, in_sync: tuple[str, ...],
                          answer) -> None:
        self._in_sync_pending.discard(key)
        if isinstance(answer, Leadership):
            self.set_leadership([(pid, answer)])
        else:
            log.warning("%s: the controller refused in-sync %s for %s-%d: %s", self.shard_id,
                        list(in_sync), pid.topic, pid.partition, answer)

    # --- A disk that refuses writes (control/disk_moves.py) ------------------------------

    def append_refused(self, part: Partition, error: StorageError, now_s: float) -> None:
        """The disk refused an append to ``part``, led here (``error``): tell the
        controller, which hands what this shard leads to in-sync replicas with room; at
        most once per DISK_REFUSED_NUDGE_INTERVAL_MS (producers retry every few ms),
        from the in-sync thread, so that the loop never waits for the controller."""
        if self._controller is None or now_s < self._disk_nudge_next_s:
            return
        self._disk_nudge_next_s = now_s + limits.DISK_REFUSED_NUDGE_INTERVAL_MS / 1000
        self._in_sync_pool.submit(self._tell_disk_refused, f"{part.name}: {error}")

    def _tell_disk_refused(self, error: str) -> None:
        """The in-sync thread: one nudge, not waited for."""
        try:
            self._controller.leader_disk_refused(self.shard_id, error)
        except Exception as exc:   # the controller is away: the next refusal tells it again
            log.warning("%s: could not tell the controller its disk refuses writes: %s: %s",
                        self.shard_id, type(exc).__name__, exc)

    # --- Stats ------------------------------------------------------------------------------

    def stats(self) -> dict[Key, dict]:
        """Each replicated partition's state here, for the controller's metrics (see
        ShardServer.stats_snapshot)."""
        return {key: self._stats(key, role) for key, role in self.roles.items()}

    def _stats(self, key: Key, role) -> dict:
        part = self._partitions[key]
        leadership = self._leadership[key]
        stats = {"role": "leader" if type(role) is Led else
                 "follower" if type(role) is Followed else NOT_SERVED,
                 "leader": leadership.leader, "leader_epoch": leadership.leader_epoch,
                 "replicas": list(leadership.replicas), "in_sync": list(leadership.in_sync),
                 "high_watermark": part.high_watermark, "log_end_offset": part.log.end_offset,
                 "needs_repair": part.needs_repair}
        now_s = time.monotonic()
        if type(role) is Led:
            stats.update(self._leaders.stats(role, now_s))
            stats["in_sync_request_pending"] = key in self._in_sync_pending
        elif type(role) is Followed:
            stats.update(self._fetcher.stats(role, now_s))
        return stats


def _say_single_copy_loss(part: Partition) -> None:
    """A partition of one copy that a shard's restart found damaged: say what was lost,
    since no replica can repair it (the needs-repair mark means nothing for it)."""
    recovery = part.log.recovery
    if part.directory_created:
        log.error("%s: its directory %s was missing and is created empty: every record it "
                  "held is lost (one copy: nothing can repair it), and its offsets start "
                  "again at %d", part.name, part.log.directory, part.log.end_offset)
        part.lost_at_restart = True   # the controller's start says it too
    elif recovery.bytes_truncated:
        # A warning: after a crash the cut is most often a last write never fsynced,
        # so never acknowledged (under fsync_policy "always").
        log.warning("%s: recovery cut %d bytes from end offset %d on (%s): records there "
                    "that were acknowledged are lost (one copy: nothing can repair it), "
                    "and new records take their offsets; %s", part.name,
                    recovery.bytes_truncated, part.log.end_offset, recovery.reason,
                    cut_kept(recovery))
    if part.needs_repair:   # no replica will ever clear it: said above, or at the cut
        part.clear_repair_mark("one copy: there is no replica to repair it from")
