"""The replication protocol, model-checked (shards/replication.py, control/leadership.py).

A hypothesis RuleBasedStateMachine drives the real LeaderReplication,
FollowerReplication, control/leadership.py and LeaderEpochs through a
simulated cluster of three replicas of one partition:

- each replica has a simulated log, a list of (offset, leader epoch, record
  id), and a simulated disk: appended entries are unsynced until an fsync
  rule runs, and a crash drops them (and the epochs that start in them);
- a simulated network: fetches, fetch replies, in-sync change requests and the
  controller's records are messages in one queue, which rules deliver in any
  order, drop, or leave waiting; links (between replicas and the controller)
  can be cut and mended;
- a simulated controller: it elects a leader with ``elect_leader`` when the
  leader crashed or it cannot reach it, applies ``alter_in_sync`` (a stale CAS
  fails), and sends its record to the replicas (which may miss it);
- a producer sending numbered records with acks="all", which records what was
  acknowledged and at which offset (acknowledged when the leader's HW passes
  it), and consumers reading below the leader's HW.

After every step: every acknowledged record is in the leader's log at its
offset, and on the durable log of every in-sync or eligible replica; no two
replicas hold different records at an offset below both their HWs; what a
consumer saw at an offset never changes; the HW a consumer sees never goes
back within a leader epoch; at most one replica takes appends in a leader
epoch. At the end the faults stop (every replica restarts, every link mends,
every message is delivered, in bounded rounds) and every replica must have
caught up: the leader's whole log, everyone in sync, the HW at the log end.

Deterministic by default (derandomized, no example database), so CI runs the
same examples every time. PLINTH_MODEL_EXAMPLES=2000 runs that many, longer
ones, with a random seed (hypothesis prints the failing steps).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

from plinth.control import leadership as control
from plinth.errors import (FencedLeaderEpochError, NotEnoughReplicasError, NotLeaderError)
from plinth.limits import REPLICA_LAG_TIME_MS_MAX_DEFAULT
from plinth.shards.leader_epochs import LeaderEpochs
from plinth.shards.replication import (FollowerReplication, LeaderReplication,
                                       epoch_starts_between)
from plinth.shards.shard_calls import Leadership

REPLICAS = ("s0", "s1", "s2")
CONTROLLER = "ctl"
NODES = REPLICAS + (CONTROLLER,)
NAME = "orders-0"
LAG_S = REPLICA_LAG_TIME_MS_MAX_DEFAULT / 1000
ENTRIES_PER_FETCH_MAX = 4          # a fetch's maxBytes, in entries
FETCHES_OUTSTANDING_MAX = 2        # a follower may retry before its answer came
QUEUE_MAX = 40                     # messages in flight; senders stop beyond it
HEAL_ROUNDS_MAX = 40               # after the faults stop, every replica catches up within
EXAMPLES = int(os.environ.get("PLINTH_MODEL_EXAMPLES", "0"))


def note(what: str) -> None:
    """Counts ``what`` in hypothesis's statistics (--hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(what)


@dataclass(frozen=True)
class Entry:
    offset: int
    epoch: int
    record_id: int


@dataclass
class Message:
    kind: str          # "fetch", "reply", "alter", "record"
    src: str
    dst: str
    body: tuple


@dataclass
class Replica:
    """One replica's disk (log, durable prefix, epochs) and its volatile state."""

    id: str
    log: list[Entry] = field(default_factory=list)
    durable_end: int = 0
    epochs: LeaderEpochs = field(default_factory=LeaderEpochs)
    alive: bool = True
    record: Leadership | None = None       # the controller's record it last took
    role: LeaderReplication | FollowerReplication | None = None
    leader_hw_told: int = 0                # the HW in the last fetch answer
    fetches_outstanding: int = 0
    needs_repair: bool = False             # it lost data; cleared once caught up
    waiting_acks: list[tuple[int, int]] = field(default_factory=list)   # (record id, offset)

    def high_watermark(self) -> int:
        """What a consumer could be told here (a deposed leader's too); 0 while down."""
        if not self.alive or self.role is None:
            return 0
        return self.role.high_watermark

    def leading(self) -> LeaderReplication | None:
        if self.alive and isinstance(self.role, LeaderReplication) and self.role.leading:
            return self.role
        return None

    def following(self) -> FollowerReplication | None:
        if self.alive and isinstance(self.role, FollowerReplication):
            return self.role
        return None


class ReplicationModel(RuleBasedStateMachine):
    """Three replicas, a network, a controller, a producer and consumers."""

    def __init__(self):
        super().__init__()
        self.now_s = 0.0
        self.replicas = {r: Replica(r) for r in REPLICAS}
        self.queue: list[Message] = []
        self.cut: set[frozenset[str]] = set()
        self.min_insync = 2
        self.record = control.initial_leadership(REPLICAS, controller_epoch=1)
        self.next_record_id = 0
        self.acked: dict[int, int] = {}                  # record id -> offset
        self.seen: dict[int, int] = {}                   # offset -> record id a consumer read
        self.hw_seen: dict[int, int] = {}                # leader epoch -> highest HW consumed
        self.appenders: dict[int, set[str]] = {}         # leader epoch -> who appended in it
        self.leader_hw: dict[tuple[str, int], int] = {}  # (replica, epoch) -> last HW seen
        self.needs_repair: set[str] = set()              # the controller's marks

    # --- Set-up -------------------------------------------------------------------

    @initialize(min_insync=st.sampled_from([1, 2, 2]))
    def start(self, min_insync):
        self.min_insync = min_insync
        for r in REPLICAS:
            self.take_record(self.replicas[r], self.record)

    # --- The controller ----------------------------------------------------------

    def reachable(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    def broadcast(self) -> None:
        for r in REPLICAS:
            self.send("record", CONTROLLER, r, (self.record,))

    def send(self, kind: str, src: str, dst: str, body: tuple) -> None:
        if len(self.queue) < QUEUE_MAX:
            self.queue.append(Message(kind, src, dst, body))

    @rule()
    def controller_elects(self):
        # The controller replaces a leader that crashed or that it cannot reach (its
        # lease lapsed: a paused or cut-off leader), and leads an offline partition
        # again when an in-sync or eligible replica is back.
        leader = self.record.leader
        if leader and self.replicas[leader].alive and self.reachable(leader, CONTROLLER):
            return
        alive = {r for r in REPLICAS
                 if self.replicas[r].alive and self.reachable(r, CONTROLLER)}
        new = control.elect_leader(self.record, alive, unclean=False, min_insync=self.min_insync,
                                   needs_repair=self.needs_repair)
        if new != self.record:
            note(f"an election: leader {'none' if not new.leader else 'from eligible' if new.leader in self.record.eligible else 'from in-sync'}")
            self.record = new
            self.broadcast()

    @rule(r=st.sampled_from(REPLICAS))
    def controller_resends(self, r):
        self.send("record", CONTROLLER, r, (self.record,))

    def controller_receives(self, message: Message) -> None:
        leader_epoch, partition_epoch, in_sync = message.body
        try:
            new = control.alter_in_sync(self.record, message.src, leader_epoch, partition_epoch,
                                        in_sync, self.min_insync, needs_repair=self.needs_repair)
        except (FencedLeaderEpochError, NotLeaderError):
            return              # the leader learns the newer record from a broadcast
        self.needs_repair -= set(new.in_sync)       # the leader added it back: caught up
        if new != self.record:
            note(f"in-sync set changed to {len(new.in_sync)}")
            self.record = new
            self.broadcast()

    # --- A replica taking the controller's record ---------------------------------

    def take_record(self, replica: Replica, record: Leadership) -> None:
        known = replica.record
        if known is not None and (record.leader_epoch, record.partition_epoch) <= (
                known.leader_epoch, known.partition_epoch):
            return
        replica.record = record
        role = replica.role
        if role is None and known is not None and record.leader_epoch == known.leader_epoch:
            return                    # restarted: waits for a newer leader epoch
        if role is not None and known is not None and record.leader_epoch == known.leader_epoch:
            if isinstance(role, LeaderReplication):
                if role.on_leadership(record):
                    self.complete_acks(replica)
            else:
                role.leadership = record
            return
        if isinstance(role, LeaderReplication):
            role.on_leadership(record)
            replica.waiting_acks.clear()           # NotLeaderError to the producer
        hw = min(role.high_watermark if role else 0, replica.durable_end)
        if record.leader == replica.id and replica.needs_repair:
            replica.role = None           # it never leads before it caught up
        elif record.leader == replica.id:
            replica.role = LeaderReplication(NAME, replica.id, record, self.min_insync, hw,
                                             replica.durable_end, LAG_S, self.now_s)
        elif record.leader:
            replica.role = FollowerReplication(NAME, replica.id, record, replica.durable_end,
                                               replica.epochs, high_watermark=hw,
                                               needs_repair=replica.needs_repair)
        else:
            replica.role = None
        replica.fetches_outstanding = 0
        replica.leader_hw_told = 0

    # --- The producer and the consumers -------------------------------------------

    @rule(r=st.sampled_from(REPLICAS + ("leader",) * 3), count=st.integers(1, 3))
    def produce(self, r, count):
        # Mostly to the leader in the controller's record (fresh metadata), sometimes
        # to any replica (stale metadata: a deposed leader may still take it).
        replica = self.replicas[self.record.leader if r == "leader" else r] \
            if r != "leader" or self.record.leader else None
        if replica is None:
            return
        leader = replica.leading()
        if leader is None:
            return
        try:
            leader.check_acks_all()
        except NotEnoughReplicasError:
            return
        epoch = leader.leader_epoch
        for _ in range(count):
            offset = len(replica.log)
            replica.epochs.assign(epoch, offset)
            replica.log.append(Entry(offset, epoch, self.next_record_id))
            replica.waiting_acks.append((self.next_record_id, offset))
            self.next_record_id += 1
        self.appenders.setdefault(epoch, set()).add(replica.id)

    def complete_acks(self, replica: Replica) -> None:
        hw = replica.role.high_watermark
        still = []
        for record_id, offset in replica.waiting_acks:
            if offset < hw:
                assert replica.log[offset].record_id == record_id
                self.acked[record_id] = offset
                note("a record was acknowledged")
            else:
                still.append((record_id, offset))
        replica.waiting_acks = still

    @rule(r=st.sampled_from(REPLICAS))
    def consume(self, r):
        replica = self.replicas[r]
        leader = replica.leading()
        if leader is None:
            return
        hw = leader.high_watermark
        epoch = leader.leader_epoch
        assert hw >= self.hw_seen.get(epoch, 0), \
            f"the HW a consumer sees went back in leader epoch {epoch}: {hw} after " \
            f"{self.hw_seen[epoch]}"
        self.hw_seen[epoch] = hw
        for entry in replica.log[:hw]:
            before = self.seen.setdefault(entry.offset, entry.record_id)
            assert before == entry.record_id, \
                f"offset {entry.offset} held record {before}, now {entry.record_id} on {r}"

    # --- Disks ----------------------------------------------------------------------

    @rule(r=st.sampled_from(REPLICAS))
    def fsync(self, r):
        replica = self.replicas[r]
        if not replica.alive:
            return
        replica.durable_end = len(replica.log)
        if (leader := replica.leading()) is not None:
            if leader.on_leader_durable(replica.durable_end, self.now_s):
                self.complete_acks(replica)
        elif (follower := replica.following()) is not None:
            follower.on_entries_durable(replica.durable_end, replica.leader_hw_told)
            replica.needs_repair = follower.needs_repair

    @rule(r=st.sampled_from(REPLICAS))
    def crash(self, r):
        replica = self.replicas[r]
        if not replica.alive:
            return
        replica.alive = False
        del replica.log[replica.durable_end:]              # unsynced entries vanish
        replica.epochs.truncate_from_end(replica.durable_end)
        replica.role = None           # the record stays: the shard's manifest keeps it
        replica.waiting_acks.clear()
        replica.fetches_outstanding = 0

    @rule(r=st.sampled_from(REPLICAS))
    def restart(self, r):
        replica = self.replicas[r]
        if replica.alive:
            return
        replica.alive = True
        replica.leader_hw_told = 0
        # It follows again as its manifest says; it never leads again in the leader
        # epoch it led before the crash (it lost unsynced entries its followers may
        # hold under that epoch: the epoch lookup could not tell them apart).
        if replica.record is not None and replica.record.leader not in ("", r):
            replica.role = FollowerReplication(NAME, r, replica.record, replica.durable_end,
                                               replica.epochs, needs_repair=replica.needs_repair)
        # The shard announces itself (and whether it lost data); the controller takes
        # a replica that lost data out of the in-sync and eligible sets, re-elects if
        # it was the leader (a new leader epoch: it lost its leader state), and sends
        # it the record.
        if replica.needs_repair:
            self.needs_repair.add(r)
            self.record = control.mark_needs_repair(self.record, r)
        if self.record.leader == r or not self.record.leader:
            alive = {x for x in REPLICAS
                     if self.replicas[x].alive and self.reachable(x, CONTROLLER)}
            self.record = control.elect_leader(self.record, alive, unclean=False,
                                               min_insync=self.min_insync,
                                               needs_repair=self.needs_repair)
        self.broadcast()
        if replica.needs_repair:          # it lost its manifest: it opens with this record
            self.take_record(replica, self.record)

    @rule(r=st.sampled_from(REPLICAS), keep=st.sampled_from([0, 0, 1, 2, 4]))
    def lose_data(self, r, keep):
        # While it is down, a replica's disk loses data: its data directory (keep 0:
        # the manifest too) or the tail its recovery cuts at a bad CRC.
        # One disk at a time, with min.insync.replicas 2: what replication promises to
        # survive (every acknowledged record is on two disks).
        replica = self.replicas[r]
        if replica.alive or keep >= replica.durable_end or self.min_insync < 2 \
                or any(x.needs_repair for x in self.replicas.values()) or self.needs_repair:
            return
        del replica.log[keep:]
        replica.durable_end = keep
        replica.epochs.truncate_from_end(keep)
        replica.needs_repair = True
        if keep == 0:
            replica.epochs = LeaderEpochs()
            replica.record = None

    # --- The network ----------------------------------------------------------------

    @rule(a=st.sampled_from(NODES), b=st.sampled_from(NODES))
    def cut_link(self, a, b):
        if a != b:
            self.cut.add(frozenset((a, b)))

    @rule(a=st.sampled_from(NODES), b=st.sampled_from(NODES))
    def mend_link(self, a, b):
        self.cut.discard(frozenset((a, b)))

    @precondition(lambda self: self.queue)
    @rule(i=st.integers(0, QUEUE_MAX))
    def deliver(self, i):
        self.deliver_message(self.queue.pop(i % len(self.queue)))

    @precondition(lambda self: self.queue)
    @rule(i=st.integers(0, QUEUE_MAX))
    def drop(self, i):
        message = self.queue.pop(i % len(self.queue))
        if message.kind == "reply" and message.dst in self.replicas:
            replica = self.replicas[message.dst]
            replica.fetches_outstanding = max(0, replica.fetches_outstanding - 1)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, LAG_S + 1]))
    def tick(self, seconds):
        self.now_s += seconds
        for r in REPLICAS:
            # A fetch unanswered this long timed out: the follower may fetch again
            # (the old answer, if it still comes, is a stale one).
            self.replicas[r].fetches_outstanding = 0
            self.leader_asks_in_sync_change(r)

    def leader_asks_in_sync_change(self, r: str) -> None:
        leader = self.replicas[r].leading()
        if leader is None:
            return
        proposal = leader.in_sync_change(self.now_s)
        if proposal is not None:
            self.send("alter", r, CONTROLLER,
                      (leader.leader_epoch, leader.leadership.partition_epoch, proposal))

    def deliver_message(self, message: Message) -> None:
        if message.kind == "reply":
            replica = self.replicas[message.dst]
            replica.fetches_outstanding = max(0, replica.fetches_outstanding - 1)
        if not self.reachable(message.src, message.dst):
            return
        if message.dst == CONTROLLER:
            self.controller_receives(message)
            return
        replica = self.replicas[message.dst]
        if not replica.alive:
            return
        if message.kind == "record":
            self.take_record(replica, message.body[0])
        elif message.kind == "fetch":
            self.leader_serves(replica, message)
        elif message.kind == "reply":
            self.follower_takes(replica, message)

    # --- Fetching -------------------------------------------------------------------

    @rule(r=st.sampled_from(REPLICAS))
    def follower_fetches(self, r):
        replica = self.replicas[r]
        follower = replica.following()
        # The follower fsyncs before it fetches again: its fetch offset is durable.
        if follower is None or replica.durable_end != len(replica.log) \
                or replica.fetches_outstanding >= FETCHES_OUTSTANDING_MAX:
            return
        fetch_offset, last_epoch = follower.next_fetch(replica.durable_end, replica.epochs)
        replica.fetches_outstanding += 1
        self.send("fetch", r, follower.leadership.leader,
                  (follower.leader_epoch, fetch_offset, last_epoch))

    def leader_serves(self, replica: Replica, message: Message) -> None:
        leader_epoch, fetch_offset, last_epoch = message.body
        role = replica.role
        if not isinstance(role, LeaderReplication):
            self.send("reply", replica.id, message.src, (leader_epoch, fetch_offset, None))
            return
        try:
            role.check_fetch_epoch(message.src, leader_epoch)
        except (FencedLeaderEpochError, NotLeaderError):
            self.send("reply", replica.id, message.src, (leader_epoch, fetch_offset, None))
            return
        answer = role.on_follower_fetch(message.src, fetch_offset, last_epoch, replica.epochs,
                                        len(replica.log), self.now_s)
        if answer.high_watermark_moved:
            self.complete_acks(replica)
        self.leader_asks_in_sync_change(replica.id)
        entries = [] if answer.diverged else \
            replica.log[fetch_offset:fetch_offset + ENTRIES_PER_FETCH_MAX]
        starts = epoch_starts_between(replica.epochs, fetch_offset, fetch_offset + len(entries))
        self.send("reply", replica.id, message.src,
                  (leader_epoch, fetch_offset, (answer, list(entries), starts)))

    def follower_takes(self, replica: Replica, message: Message) -> None:
        leader_epoch, fetch_offset, served = message.body
        follower = replica.following()
        if served is None or follower is None or follower.leader_epoch != leader_epoch \
                or fetch_offset != len(replica.log) or fetch_offset != replica.durable_end:
            return              # refused, or an answer to an older fetch: fetch again
        answer, entries, starts = served
        if answer.diverged:
            end = follower.truncation_for(answer.diverging_epoch, answer.diverging_end_offset,
                                          replica.epochs, len(replica.log))
            note("a follower truncated" if end < len(replica.log) else "a divergence cut nothing")
            del replica.log[end:]
            replica.durable_end = min(replica.durable_end, end)
            replica.epochs.truncate_from_end(end)
            return
        for start in starts:
            replica.epochs.assign(start.epoch, start.start_offset)
        for entry in entries:
            assert entry.offset == len(replica.log), f"{entry} appended at {len(replica.log)}"
            replica.log.append(entry)
        replica.leader_hw_told = answer.high_watermark
        follower.on_entries_durable(replica.durable_end, answer.high_watermark)
        replica.needs_repair = follower.needs_repair

    @rule(r=st.sampled_from(REPLICAS))
    def a_follower_round_trip(self, r):
        # One follower fsyncs, fetches, and its fetch and the answer arrive at once.
        self.fsync(r)
        self.follower_fetches(r)
        for kind in ("fetch", "reply"):
            for i, message in enumerate(self.queue):
                if message.kind == kind and r in (message.src, message.dst):
                    self.deliver_message(self.queue.pop(i))
                    break
        self.fsync(r)

    @rule()
    def a_quiet_round(self):
        # Nothing fails for a moment: every replica fsyncs and fetches, and every
        # message in flight arrives (those across a cut link are lost).
        for r in REPLICAS:
            self.fsync(r)
            self.follower_fetches(r)
        self.deliver_everything()
        for r in REPLICAS:
            self.fsync(r)

    # --- After every step -----------------------------------------------------------

    @invariant()
    def acknowledged_records_are_on_the_leader_and_every_in_sync_or_eligible_disk(self):
        # (A replica that lost data is out of these sets once the controller hears of it,
        # at its restart; until then it is down and nothing reads it.)
        unheard = {r for r, replica in self.replicas.items()
                   if replica.needs_repair and not replica.alive}
        holders = (set(self.record.in_sync) | set(self.record.eligible)) - unheard
        for record_id, offset in self.acked.items():
            if self.record.leader and self.record.leader not in unheard:
                log = self.replicas[self.record.leader].log
                assert offset < len(log) and log[offset].record_id == record_id, \
                    f"acknowledged record {record_id} at {offset} is not on leader " \
                    f"{self.record.leader}: {log[offset] if offset < len(log) else 'log ends'}"
            for r in holders:
                replica = self.replicas[r]
                assert offset < replica.durable_end and \
                    replica.log[offset].record_id == record_id, \
                    f"acknowledged record {record_id} at {offset} is not durable on {r}, " \
                    f"in {self.record}"

    @invariant()
    def no_two_replicas_differ_below_their_high_watermarks(self):
        for a in REPLICAS:
            for b in REPLICAS:
                if a < b:
                    ra, rb = self.replicas[a], self.replicas[b]
                    below = min(ra.high_watermark(), rb.high_watermark())
                    assert ra.log[:below] == rb.log[:below], \
                        f"{a} and {b} differ below {below}"

    @invariant()
    def at_most_one_replica_appends_in_a_leader_epoch(self):
        for epoch, who in self.appenders.items():
            assert len(who) <= 1, f"leader epoch {epoch} appended on {sorted(who)}"

    @invariant()
    def a_leaders_high_watermark_never_goes_back(self):
        for r, replica in self.replicas.items():
            if (leader := replica.leading()) is not None:
                key = (r, leader.leader_epoch)
                assert leader.high_watermark >= self.leader_hw.get(key, 0)
                self.leader_hw[key] = leader.high_watermark

    @invariant()
    def the_controllers_record_keeps_its_rules(self):
        self.record.check()
        assert len(self.record.eligible) == 0 or len(self.record.in_sync) < self.min_insync

    # --- The faults stop --------------------------------------------------------------

    def teardown(self):
        if sys.exc_info()[0] is not None:
            return              # a step failed: hypothesis reports that, not the heal
        self.heal()

    def heal(self) -> None:
        self.cut.clear()
        for r in REPLICAS:
            self.restart(r)
        for _ in range(HEAL_ROUNDS_MAX):
            self.controller_elects()
            self.broadcast()
            self.deliver_everything()
            for r in REPLICAS:
                self.fsync(r)
                self.follower_fetches(r)
            self.deliver_everything()
            for r in REPLICAS:
                self.fsync(r)
            self.tick(1.0)
            if self.caught_up():
                note(f"caught up after {_ + 1} heal rounds")
                note(f"acknowledged {min(len(self.acked) // 5 * 5, 30)}+ records")
                break
        assert self.caught_up(), self.describe()

    def deliver_everything(self) -> None:
        for _ in range(10 * QUEUE_MAX):
            if not self.queue:
                return
            self.deliver_message(self.queue.pop(0))
        raise AssertionError(f"messages still flowing after {10 * QUEUE_MAX}: {self.queue[:5]}")

    def caught_up(self) -> bool:
        leader_id = self.record.leader
        if not leader_id:
            return False
        leader = self.replicas[leader_id]
        role = leader.leading()
        return role is not None and set(self.record.in_sync) == set(REPLICAS) \
            and role.high_watermark == len(leader.log) \
            and all(self.replicas[r].log == leader.log for r in REPLICAS) \
            and all(self.replicas[r].high_watermark() == len(leader.log) or r == leader_id
                    for r in REPLICAS if self.replicas[r].following())

    def describe(self) -> str:
        lines = [f"record {self.record}"]
        for r, replica in self.replicas.items():
            lines.append(f"{r}: alive {replica.alive} durable {replica.durable_end} "
                         f"log {[(e.epoch, e.record_id) for e in replica.log]} "
                         f"epochs {replica.epochs.entries} role {type(replica.role).__name__} "
                         f"hw {replica.high_watermark()}")
        return "\n".join(lines)


def model_settings() -> settings:
    if EXAMPLES:
        return settings(max_examples=EXAMPLES, stateful_step_count=80, deadline=None,
                        database=None, derandomize=False,
                        suppress_health_check=list(HealthCheck))
    return settings(max_examples=500, stateful_step_count=50, deadline=None, database=None,
                    derandomize=True, suppress_health_check=list(HealthCheck))


def test_no_acknowledged_record_is_lost_and_replicas_agree_under_crashes_and_a_faulty_network():
    # Given three replicas, a lossy, reordering, partitionable network, crashes that
    # lose unsynced writes, and a controller electing leaders and applying CASes
    # When hypothesis runs random schedules of produces, fetches and faults
    # Then every invariant holds after every step, and everyone catches up at the end
    run_state_machine_as_test(ReplicationModel, settings=model_settings())


# --- Scenarios: the known traps, step by step, through the same model -----------------
# Random schedules rarely line up a dozen specific steps; these do, and check every
# invariant after each step; then the faults stop and everyone must catch up.

def run_scenario(min_insync: int, steps: list[tuple[str, dict]]) -> ReplicationModel:
    model = ReplicationModel()
    model.start(min_insync=min_insync)
    invariants = [getattr(model, name) for name in dir(ReplicationModel)
                  if getattr(getattr(ReplicationModel, name), "hypothesis_stateful_invariant",
                             None)]
    assert len(invariants) == 5
    for name, arguments in steps:
        getattr(model, name)(**arguments)
        for check in invariants:
            check()
    return model


def test_a_follower_that_diverges_truncates_by_the_epoch_lookup_and_keeps_acknowledged_records():
    # Given (KIP-101's trap) s1 holds record 0 only; s2 holds records 0 and 1 but was
    # last told HW 0; s1's fetch moves the leader's HW to 1, acknowledging record 0
    steps = [("produce", {"r": "s0", "count": 1}),
             ("a_follower_round_trip", {"r": "s1"}),
             ("a_follower_round_trip", {"r": "s1"}),
             ("produce", {"r": "s0", "count": 1}),
             ("a_follower_round_trip", {"r": "s2"}),
             ("a_follower_round_trip", {"r": "s2"}),
             ("fsync", {"r": "s0"})]
    # When the leader crashes, s1 is elected, and s2 fetches from it with record 1,
    # which s1 lacks
    steps += [("crash", {"r": "s0"}), ("controller_elects", {}),
              ("a_quiet_round", {}), ("a_quiet_round", {})]
    model = run_scenario(2, steps)
    # Then s2 cut record 1 only (never by its HW, which would cut the acknowledged
    # record 0 from an in-sync replica), and everyone caught up
    assert model.acked == {0: 0}
    assert model.record.leader == "s1"
    model.heal()


def test_a_new_leader_with_a_stale_high_watermark_adds_no_follower_that_lacks_acknowledged_records():
    # Given (KAFKA-7128's trap) s2 is out of sync (cut off from the leader), and the
    # leader s0 acknowledges record 0 with s1, which was never told the HW moved
    steps = [("cut_link", {"a": "s0", "b": "s2"}),
             ("tick", {"seconds": LAG_S * 0.6}), ("a_quiet_round", {}),
             ("tick", {"seconds": LAG_S * 0.6}), ("a_quiet_round", {}),
             ("produce", {"r": "s0", "count": 1}),
             ("a_follower_round_trip", {"r": "s1"}),
             ("a_follower_round_trip", {"r": "s1"}),
             ("fsync", {"r": "s0"})]
    # When s0 crashes, s1 leads alone (below min.insync.replicas 2, its HW stays 0)
    # and s2, with nothing, fetches from it
    steps += [("crash", {"r": "s0"}), ("mend_link", {"a": "s0", "b": "s2"}),
              ("controller_elects", {}), ("a_quiet_round", {}),
              # s2's fetch arrives; an in-sync change, if the leader asks one, reaches
              # the controller before s2 has the answer
              ("follower_fetches", {"r": "s2"}), ("deliver", {"i": 0}), ("deliver", {"i": 0}),
              ("a_quiet_round", {}), ("a_quiet_round", {})]
    # Then s2 joins the in-sync set only once it holds record 0 (the leader's epoch
    # start offset), never at offset 0 because the stale HW was 0
    model = run_scenario(2, steps)
    assert model.record.in_sync == ("s1", "s2")
    assert model.acked == {0: 0}
    assert model.record.leader == "s1"
    model.heal()


def test_a_leader_does_not_acknowledge_alone_when_the_in_sync_set_shrinks_below_the_minimum():
    # Given min.insync.replicas 2, s1 down, and a record produced while all were in sync
    steps = [("crash", {"r": "s1"}), ("produce", {"r": "s0", "count": 1})]
    # When s2 lags out too and the in-sync set shrinks to the leader alone, which fsyncs
    steps += [("cut_link", {"a": "s0", "b": "s2"}), ("tick", {"seconds": LAG_S + 1}),
              ("a_quiet_round", {}), ("fsync", {"r": "s0"})]
    # Then nothing was acknowledged: s1 and s2, eligible, may lead without losing any
    model = run_scenario(2, steps)
    assert model.acked == {}
    model.heal()


def test_a_leader_counts_a_follower_it_proposed_back_before_the_controller_answers():
    # Given s2 out of sync (cut off long enough), then back and caught up: the leader
    # proposes it back, and the controller commits that (s2 may now be elected)
    steps = [("cut_link", {"a": "s0", "b": "s2"}),
             ("tick", {"seconds": LAG_S * 0.6}), ("a_quiet_round", {}),
             ("tick", {"seconds": LAG_S * 0.6}), ("a_quiet_round", {}),
             ("mend_link", {"a": "s0", "b": "s2"}),
             ("a_follower_round_trip", {"r": "s2"}),
             ("deliver", {"i": 0})]
    # When, before the leader hears the answer, a record reaches s1 and the leader's disk
    steps += [("produce", {"r": "s0", "count": 1}),
              ("a_follower_round_trip", {"r": "s1"}), ("a_follower_round_trip", {"r": "s1"}),
              ("fsync", {"r": "s0"})]
    # Then it is not acknowledged: the HW counts s2 while the expansion is pending (KIP-497)
    model = run_scenario(2, steps)
    assert model.record.in_sync == REPLICAS
    assert model.acked == {}
    model.heal()
