"""Replication of one partition: the leader's and a follower's state machines (Kafka's ISR).

Pure logic: no I/O, no sockets, no clock reads (the caller passes ``now_s``),
no Ray. The shard's data path (shard_server.py, replica_fetcher.py) feeds them
what happened and does what they answer; the model tests
(tests/shards/test_replication_model.py) drive them through a simulated disk,
network and controller. Every method runs on the shard's loop thread (the
partition's owner), or in the model tests; nothing here is thread-safe.

The protocol (Kafka's ISR with KIP-101, KIP-279, KIP-320, KIP-497, KIP-966):
the leader appends, fsyncs, and its durable log end counts; a follower fetches
with ``fetch_offset`` = its durable log end and ``last_fetched_epoch`` = the
epoch of its last entry; the leader first checks that the follower's log is a
prefix of its own (the epoch lookup), then serves entries from ``fetch_offset``
to its log end; the follower appends them as they are, fsyncs, and fetches
again. The high watermark (HW) is the offset below which every record is on
every in-sync replica's disk: consumers read below it, acks="all" completes
when it passes a batch.

INVARIANTS (each checked where it is established; an AssertionError names its number)
 1. The leader is in sync: every in-sync set the leader uses or proposes holds it.
 2. The leader's HW only grows within its leader epoch; a follower's HW only
    grows, except that a truncation below it (only after an unclean election,
    or a disk that lost data) lowers it to the cut.
 3. When the leader's HW moves, it moves to min(durable log end) over the in-sync
    set it is computed on (KIP-101): so HW <= the durable log end of each member.
 4. The in-sync set the HW is computed on is the union of the committed set and
    any pending proposal (KIP-497, "maximal ISR"): an in-flight shrink never lets
    the HW move early, an in-flight expansion already counts its new member.
 5. The HW does not move while the committed in-sync set, or a pending proposal,
    has fewer than min.insync.replicas members (KIP-966): so a replica that left
    the in-sync set while it was that small holds every acknowledged record.
 6. An acks="all" batch is acknowledged only when the HW passes its last offset
    (the shard compares with ``high_watermark``); it is refused at once
    (NotEnoughReplicasBeforeWriteError) while the committed in-sync set is smaller than
    min.insync.replicas.
 7. A follower's fetch offset counts toward the HW only when its fetch did not
    diverge: its log then matches the leader's below that offset (the epoch
    lookup proved it), and the leader's log only grows within its epoch.
 8. A follower joins the in-sync set only when its durable log end has reached
    both the HW and the leader's epoch start offset (the leader's log end when
    it took over, which holds every acknowledged record: KAFKA-7128), with a
    fetch in this leader epoch made since it last left the in-sync set (the one
    before may be of a process that restarted on a wiped disk since), and it
    has not lagged for lag_time_max_s. A follower whose last fetch says its
    disk refused an append leaves at the next proposal and does not join
    (Kafka takes an offline log dir's replicas out at once).
 9. A needs-repair replica is never added to the in-sync set until it has caught
    up: an in-sync follower that reports less than the HW has lost data, leaves
    the in-sync set at the next proposal, and rejoins only by rule 8. A
    follower that finds its own log end below its HW marks itself needs-repair
    and clears it only once its durable log end reaches the leader's HW.
10. A follower truncates only through the epoch lookup (``truncation_for``, KIP-320),
    never by high watermark alone.
11. A follower's HW <= min(its durable log end, the leader's HW it was told).
12. Only the leader of the current leader epoch serves fetches and takes appends:
    a fetch from an older epoch is fenced, one from a newer epoch, or to a leader
    that learnt it was replaced, gets NotLeaderError.
13. A shard never leads again in a leader epoch it led before it restarted (its
    manifest's record): it lost unsynced entries that its followers may hold
    under that epoch, and the epoch lookup cannot tell them apart from what it
    writes next. It waits for a newer epoch (the controller re-elects when a
    leader restarts). The shard enforces this; the model test checks it.
14. A needs-repair replica never leads (the controller takes it out of the
    in-sync and eligible sets: control/leadership.mark_needs_repair), until it
    has caught up and the leader added it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from plinth.errors import FencedLeaderEpochError, NotEnoughReplicasBeforeWriteError, NotLeaderError
from plinth.limits import IN_SYNC_CHANGE_RETRY_MS
from plinth.shards.leader_epochs import NO_EPOCH, NO_OFFSET, EpochEntry, LeaderEpochs
from plinth.shards.shard_calls import Leadership


def _broken(number: int, what: str) -> AssertionError:
    return AssertionError(f"replication invariant {number} broken: {what}")


@dataclass(frozen=True)
class FetchAnswer:
    """The leader's answer to one follower fetch, but for the entries (the shard
    reads them from its log, from ``fetch_offset`` to its log end, with
    ``epoch_starts_between`` for the epochs starting inside them).

    ``diverging_epoch`` / ``diverging_end_offset``: the follower's log is not a
    prefix of the leader's; it truncates (``FollowerReplication.truncation_for``)
    and fetches again; no entries come with this answer. NO_EPOCH / NO_OFFSET
    (-1 / -1, as on the wire): no divergence. ``high_watermark``: the leader's,
    after this fetch counted. ``high_watermark_moved``: it moved, so acks="all"
    produces waiting below it complete."""

    diverging_epoch: int
    diverging_end_offset: int
    fetch_offset: int
    high_watermark: int
    high_watermark_moved: bool

    @property
    def diverged(self) -> bool:
        return self.diverging_epoch != NO_EPOCH


def divergence(epochs: LeaderEpochs, fetch_offset: int, last_fetched_epoch: int,
               log_end_offset: int, log_start_offset: int = 0) -> EpochEntry | None:
    """The leader's epoch lookup (KIP-320): None if a follower whose last entry has
    epoch ``last_fetched_epoch`` and whose log ends at ``fetch_offset`` holds a
    prefix of this log (``epochs``, ending at ``log_end_offset``); otherwise the
    (epoch, end offset) it must truncate against.

    A follower without epochs that fetches from this log's (local) start
    ``log_start_offset`` restarted its log empty there (Partition.restart_at, told
    so by an earlier answer): it holds nothing to diverge. Where this log's start is
    past its first epoch's (a tiered log's local start), answering it a divergence
    at that epoch made it truncate below this log's start, restart at it, and be
    told again: for ever, hundreds of times a second."""
    if last_fetched_epoch == NO_EPOCH and fetch_offset == log_start_offset > 0:
        return None
    epoch, end_offset = epochs.end_offset_for(last_fetched_epoch, log_end_offset)
    if epoch == NO_EPOCH:
        # Every epoch here is newer than the follower's last one (or the follower
        # has none): its log may only end where this log's first epoch starts.
        first_start = epochs.entries[0].start_offset if epochs.entries else log_end_offset
        if fetch_offset <= first_start:
            return None
        return EpochEntry(max(last_fetched_epoch, 0), first_start)
    if epoch != last_fetched_epoch or end_offset < fetch_offset:
        return EpochEntry(epoch, end_offset)
    return None


def epoch_starts_between(epochs: LeaderEpochs, start_offset: int,
                         end_offset: int) -> list[EpochEntry]:
    """The epochs that start inside [start_offset, end_offset): what a follower
    receiving those entries assigns in its own LeaderEpochs."""
    return [entry for entry in epochs.entries if start_offset <= entry.start_offset < end_offset]


class _Follower:
    """What the leader knows of one follower, in the current leader epoch."""

    __slots__ = ("fetch_offset", "caught_up_s", "last_fetch_s", "leader_end_at_last_fetch",
                 "append_failed")

    def __init__(self, now_s: float):
        self.fetch_offset = NO_OFFSET          # no fetch in this epoch yet
        self.caught_up_s = now_s               # it gets lag_time_max_s to start fetching
        self.last_fetch_s = now_s
        self.leader_end_at_last_fetch = NO_OFFSET
        self.append_failed = False             # its last fetch said its disk refused one

    def forget_fetches(self) -> None:
        """It left the in-sync set: what it reported may be of a process that is gone
        (a replica that restarted on a wiped disk is taken out by the controller, not
        by this leader), so only a fetch after this counts toward its rejoining."""
        self.fetch_offset = NO_OFFSET
        self.leader_end_at_last_fetch = NO_OFFSET


class LeaderReplication:
    """The leader's side of one partition, for one leader epoch: the followers' fetch
    offsets, the high watermark, the in-sync set and its changes.

    Built by the shard when the controller's record names it leader (a newer
    leader epoch: a new object, with ``log_end_offset`` its durable log end then).
    Loop thread only."""

    def __init__(self, name: str, leader_id: str, leadership: Leadership, min_insync: int,
                 high_watermark: int, log_end_offset: int, lag_time_max_s: float, now_s: float,
                 *, in_sync_retry_s: float = IN_SYNC_CHANGE_RETRY_MS / 1000):
        if leadership.leader != leader_id or leader_id not in leadership.in_sync:
            raise _broken(1, f"{name}: {leader_id} leads with {leadership!r}")
        if not 0 <= high_watermark <= log_end_offset or min_insync < 1 or lag_time_max_s <= 0:
            raise AssertionError(f"{name}: high watermark {high_watermark}, log end "
                                 f"{log_end_offset}, min.insync {min_insync}, lag time "
                                 f"{lag_time_max_s} s: need 0 <= hw <= end, min >= 1, lag > 0")
        self.name = name
        self.leader_id = leader_id
        self.leadership = leadership
        self.min_insync = min_insync
        self.high_watermark = high_watermark
        self.epoch_start_offset = log_end_offset
        self.leading = True
        self._lag_time_max_s = lag_time_max_s
        self._retry_s = in_sync_retry_s
        self._durable_end = log_end_offset
        self._followers = {r: _Follower(now_s) for r in leadership.replicas if r != leader_id}
        self._pending: tuple[str, ...] | None = None
        self._pending_sent_s = now_s

    @property
    def leader_epoch(self) -> int:
        return self.leadership.leader_epoch

    @property
    def pending_in_sync(self) -> tuple[str, ...] | None:
        """The in-sync set proposed to the controller and not settled yet."""
        return self._pending

    def follower_fetch_offset(self, replica_id: str) -> int:
        """The durable log end ``replica_id`` last reported in this epoch (NO_OFFSET: none)."""
        return self._followers[replica_id].fetch_offset

    def followers_state(self, now_s: float) -> dict[str, dict]:
        """What this leader knows of each follower, for stats: its last fetch offset,
        how long ago it last fetched and was last caught up, and whether the next
        in-sync check would want it in the set."""
        committed = self.leadership.in_sync
        return {replica: {"fetch_offset": f.fetch_offset,
                          "last_fetch_ago_s": round(now_s - f.last_fetch_s, 3),
                          "caught_up_ago_s": round(now_s - f.caught_up_s, 3),
                          "wanted_in_sync": self._wanted_in_sync(replica, replica in committed,
                                                                 now_s)}
                for replica, f in sorted(self._followers.items())}

    # --- The log and the followers' fetches -------------------------------------

    def on_leader_durable(self, log_end_offset: int, now_s: float) -> bool:
        """The leader's log is durable up to ``log_end_offset`` (after its fsync).
        Returns whether the HW moved."""
        if log_end_offset < self._durable_end:
            raise AssertionError(f"{self.name}: the leader's durable log end went back from "
                                 f"{self._durable_end} to {log_end_offset} in leader epoch "
                                 f"{self.leader_epoch}")
        self._durable_end = log_end_offset
        return self._advance_high_watermark()

    def check_fetch_epoch(self, replica_id: str, leader_epoch: int) -> None:
        """Refuses a fetch this leader must not serve (invariant 12): FencedLeaderEpochError
        for an older leader epoch; NotLeaderError for a newer one, a leader that was
        replaced, or a shard that is not a follower of this partition."""
        mine = self.leader_epoch
        if leader_epoch < mine:
            raise FencedLeaderEpochError(
                f"{self.name}: fetch from {replica_id} in leader epoch {leader_epoch}, "
                f"older than the leader's {mine}")
        if leader_epoch > mine or not self.leading or replica_id not in self._followers:
            raise NotLeaderError(
                f"{self.name}: {self.leader_id} does not lead leader epoch {leader_epoch} "
                f"for {replica_id} (it leads epoch {mine}: {'yes' if self.leading else 'no'}, "
                f"followers {sorted(self._followers)})")

    def on_follower_fetch(self, replica_id: str, fetch_offset: int, last_fetched_epoch: int,
                          epochs: LeaderEpochs, log_end_offset: int,
                          now_s: float, log_start_offset: int = 0,
                          append_failed: bool = False) -> FetchAnswer:
        """A follower's fetch (already checked by ``check_fetch_epoch``): its durable log
        ends at ``fetch_offset``, its last entry has ``last_fetched_epoch``.
        ``log_start_offset``: the leader's local log start. ``append_failed``: its
        disk refused its last append (rule 8): it is not wanted in sync until an
        append succeeds.
        ``epochs`` and ``log_end_offset`` are the leader's log's (appended, fsynced
        or not: what it would serve). Either a divergence to truncate against, or
        serve from ``fetch_offset``."""
        self.check_fetch_epoch(replica_id, self.leader_epoch)
        diverged = divergence(epochs, fetch_offset, last_fetched_epoch, log_end_offset,
                              log_start_offset)
        if diverged is not None:
            return FetchAnswer(diverged.epoch, diverged.start_offset, fetch_offset,
                               self.high_watermark, False)
        follower = self._followers[replica_id]
        follower.append_failed = append_failed
        self._record_fetch(follower, fetch_offset, log_end_offset, now_s)
        moved = self._advance_high_watermark()
        return FetchAnswer(NO_EPOCH, NO_OFFSET, fetch_offset, self.high_watermark, moved)

    def _record_fetch(self, follower: _Follower, fetch_offset: int, log_end_offset: int,
                      now_s: float) -> None:
        # Kafka's lastCaughtUpTime: caught up now if it reached the log end; caught
        # up at its previous fetch if it reached what the log end was then (so a
        # follower keeping pace with a steady stream of appends is not "lagging").
        # Not after forget_fetches: that fetch was not compared with any log end, and
        # counting it let a follower that cannot append (its disk full), stuck at the
        # HW the leader cannot move without it, rejoin at once after each lag time.
        if fetch_offset >= log_end_offset:
            follower.caught_up_s = now_s
        elif follower.leader_end_at_last_fetch != NO_OFFSET \
                and fetch_offset >= follower.leader_end_at_last_fetch:
            follower.caught_up_s = max(follower.caught_up_s, follower.last_fetch_s)
        follower.leader_end_at_last_fetch = log_end_offset
        follower.last_fetch_s = now_s
        # Lower too: a follower that lost data must not count what it lost (rule 9).
        follower.fetch_offset = fetch_offset

    def _hw_set(self) -> set[str]:
        members = set(self.leadership.in_sync) | set(self._pending or ())
        if self.leader_id not in members:
            raise _broken(1, f"{self.name}: {self.leader_id} not in {sorted(members)}")
        return members

    def _advance_high_watermark(self) -> bool:
        if not self.leading:
            return False
        members = self._hw_set()
        smallest = min(len(self.leadership.in_sync), len(self._pending or self.leadership.in_sync))
        if smallest < self.min_insync:
            return False                                   # rule 5: KIP-966
        ends = [self._durable_end if r == self.leader_id else self._followers[r].fetch_offset
                for r in members]
        candidate = min(ends)
        if candidate <= self.high_watermark:
            return False                                   # rule 2: only grows
        if candidate > self._durable_end:
            raise _broken(3, f"{self.name}: high watermark {candidate} past the leader's "
                             f"durable log end {self._durable_end}")
        self.high_watermark = candidate
        return True

    # --- acks="all" ---------------------------------------------------------------

    def check_acks_all(self) -> None:
        """Refuses an acks="all" produce at once (rule 6): NotLeaderError if this
        shard no longer leads, NotEnoughReplicasBeforeWriteError if the committed in-sync set
        is smaller than min.insync.replicas."""
        if not self.leading:
            raise NotLeaderError(f"{self.name}: {self.leader_id} no longer leads "
                                 f"(its leader epoch {self.leader_epoch} was replaced)")
        in_sync = self.leadership.in_sync
        if len(in_sync) < self.min_insync:
            raise NotEnoughReplicasBeforeWriteError(
                f"{self.name}: {len(in_sync)} in-sync replicas {list(in_sync)}, fewer than "
                f"min.insync.replicas {self.min_insync}")

    # --- The in-sync set ------------------------------------------------------------

    def in_sync_change(self, now_s: float) -> tuple[str, ...] | None:
        """The in-sync set to propose to the controller (alter_in_sync, a CAS on this
        record's leader_epoch and partition_epoch), or None. One proposal at a time:
        it stays pending, and counts for the HW (rule 4), until ``on_leadership``
        brings a newer record; unsettled after in_sync_retry_s, it is offered again."""
        if not self.leading:
            return None
        if self._pending is not None:
            if now_s - self._pending_sent_s < self._retry_s:
                return None
            self._pending_sent_s = now_s
            return self._pending
        committed = self.leadership.in_sync
        wanted = tuple(r for r in self.leadership.replicas
                       if r == self.leader_id or self._wanted_in_sync(r, r in committed, now_s))
        if set(wanted) == set(committed):
            return None
        self._pending = wanted
        self._pending_sent_s = now_s
        return wanted

    def _wanted_in_sync(self, replica_id: str, in_sync_now: bool, now_s: float) -> bool:
        follower = self._followers[replica_id]
        if follower.append_failed:   # rules 8 and 9: it cannot hold what comes next
            return False
        lagging = now_s - follower.caught_up_s > self._lag_time_max_s
        if in_sync_now:
            lost_data = follower.fetch_offset != NO_OFFSET \
                and follower.fetch_offset < self.high_watermark           # rule 9
            return not lagging and not lost_data
        return not lagging and follower.fetch_offset >= max(
            self.high_watermark, self.epoch_start_offset)                 # rule 8

    def on_leadership(self, leadership: Leadership) -> bool:
        """The controller's record for this partition (an answer to ``in_sync_change``,
        or a newer one it sent). An older one, or one from an older controller
        incarnation, is ignored; one of a newer leader epoch ends this leader's
        epoch (``leading`` becomes False: the shard fails its waiting acks="all"
        produces and builds the new role). Returns whether the HW moved."""
        current = self.leadership
        if leadership.controller_epoch < current.controller_epoch or (
                (leadership.leader_epoch, leadership.partition_epoch)
                <= (current.leader_epoch, current.partition_epoch)):
            return False
        self._pending = None          # settled: the newer record says what was applied
        if leadership.leader_epoch != current.leader_epoch or leadership.leader != self.leader_id:
            self.leading = False
            self.leadership = leadership
            return False
        if self.leader_id not in leadership.in_sync:
            raise _broken(1, f"{self.name}: {self.leader_id} leads epoch "
                             f"{leadership.leader_epoch} but is not in sync in {leadership!r}")
        for replica in set(current.in_sync) - set(leadership.in_sync):   # rules 8 and 9
            self._followers[replica].forget_fetches()
        self.leadership = leadership
        return self._advance_high_watermark()


class FollowerReplication:
    """A follower's side of one partition, for one leader epoch: what to fetch, where
    to truncate, its high watermark. Built by the shard when the controller's
    record names another shard leader. Loop thread only."""

    def __init__(self, name: str, replica_id: str, leadership: Leadership, log_end_offset: int,
                 epochs: LeaderEpochs, *, high_watermark: int = 0, needs_repair: bool = False):
        if leadership.leader == replica_id:
            raise AssertionError(f"{name}: {replica_id} would follow itself in {leadership!r}")
        self.name = name
        self.replica_id = replica_id
        self.leadership = leadership
        self.high_watermark = min(high_watermark, log_end_offset)
        # Recovery cut entries (a bad CRC) or the disk was lost: not eligible and
        # not in sync until caught up with the leader's HW (NATS 2.12's lesson).
        self.needs_repair = needs_repair or high_watermark > log_end_offset

    @property
    def leader_epoch(self) -> int:
        return self.leadership.leader_epoch

    def next_fetch(self, log_end_offset: int, epochs: LeaderEpochs) -> tuple[int, int]:
        """(fetch_offset, last_fetched_epoch) of the next fetch: ``log_end_offset``
        must be the durable log end (the follower fsyncs before fetching again)."""
        self._check_log_end(log_end_offset)
        last_epoch = epochs.epoch_at(log_end_offset - 1) if log_end_offset > 0 else NO_EPOCH
        return log_end_offset, last_epoch

    def _check_log_end(self, log_end_offset: int) -> None:
        if log_end_offset < self.high_watermark:       # the disk lost data (rules 9, 11)
            self.high_watermark = log_end_offset
            self.needs_repair = True

    def truncation_for(self, diverging_epoch: int, diverging_end_offset: int,
                       epochs: LeaderEpochs, log_end_offset: int) -> int:
        """Where to cut this log after the leader answered a divergence (KIP-320,
        Kafka's getOffsetTruncationState): the end of ``diverging_epoch`` in both
        logs if this log has that epoch; otherwise the end of this log's largest
        older epoch (the next fetch asks again from there). The only way a
        follower truncates (rule 10)."""
        epoch, own_end = epochs.end_offset_for(diverging_epoch, log_end_offset)
        if epoch == diverging_epoch:
            end_offset = min(diverging_end_offset, own_end)
        elif epoch != NO_EPOCH:
            end_offset = own_end
        elif epochs.entries:
            # Every epoch here is newer than the leader's: what this log holds from
            # its first epoch on, the leader's log does not (Kafka's endOffsetFor
            # answers the first epoch's start offset for an epoch older than all).
            end_offset = min(diverging_end_offset, epochs.entries[0].start_offset)
        else:
            end_offset = diverging_end_offset
        end_offset = max(0, min(end_offset, log_end_offset))
        if end_offset < self.high_watermark:    # rule 2's exception: unclean, or lost data
            self.high_watermark = end_offset
        return end_offset

    def on_entries_durable(self, log_end_offset: int, leader_high_watermark: int) -> int:
        """The fetched entries are durable up to ``log_end_offset``; the leader's HW
        was ``leader_high_watermark``. Returns the follower's HW (rules 2 and 11)."""
        self._check_log_end(log_end_offset)
        candidate = min(leader_high_watermark, log_end_offset)
        if candidate > self.high_watermark:
            self.high_watermark = candidate
        if self.high_watermark > log_end_offset:
            raise _broken(11, f"{self.name}: follower {self.replica_id}'s high watermark "
                              f"{self.high_watermark} past its durable log end {log_end_offset}")
        if self.needs_repair and log_end_offset >= leader_high_watermark:
            self.needs_repair = False
        return self.high_watermark
