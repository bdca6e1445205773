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
    waiting_acks: list[tuple[int, int]] = field(default_factory=list)   # (record id, offset)

    def high_watermark(self) -> int:
        if not self.alive or self.role is None:
            return 0
        if isinstance(self.role, LeaderReplication) and not self.role.leading:
            return self.role.high_watermark
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
        new = control.elect_leader(self.record, alive, unclean=False, min_insync=self.min_insync)
        if new != self.record:
            event(f"an election: leader {'none' if not new.leader else 'from eligible' if new.leader in self.record.eligible else 'from in-sync'}")
            self.record = new
            self.broadcast()

    @rule(r=st.sampled_from(REPLICAS))
    def controller_resends(self, r):
        self.send("record", CONTROLLER, r, (self.record,))

    def controller_receives(self, message: Message) -> None:
        leader_epoch, partition_epoch, in_sync = message.body
        try:
            new = control.alter_in_sync(self.record, message.src, leader_epoch, partition_epoch,
                                        in_sync, self.min_insync)
        except (FencedLeaderEpochError, NotLeaderError):
            return              # the leader learns the newer record from a broadcast
        if new != self.record:
            event(f"in-sync set changed to {len(new.in_sync)}")
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
        if record.leader == replica.id:
            replica.role = LeaderReplication(NAME, replica.id, record, self.min_insync, hw,
                                             replica.durable_end, LAG_S, self.now_s)
        elif record.leader:
            replica.role = FollowerReplication(NAME, replica.id, record, replica.durable_end,
                                               replica.epochs, high_watermark=hw)
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
                event("a record was acknowledged")
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

    @rule(r=st.sampled_from(REPLICAS))
    def crash(self, r):
        replica = self.replicas[r]
        if not replica.alive:
            return
        replica.alive = False
        del replica.log[replica.durable_end:]              # unsynced entries vanish
        replica.epochs.truncate_from_end(replica.durable_end)
        replica.role = None
        replica.record = None
        replica.waiting_acks.clear()
        replica.fetches_outstanding = 0

    @rule(r=st.sampled_from(REPLICAS))
    def restart(self, r):
        replica = self.replicas[r]
        if replica.alive:
            return
        replica.alive = True
        replica.leader_hw_told = 0
        # The shard announces itself; the controller re-elects if it was the leader
        # (a new leader epoch: it lost its leader state) and sends it the record.
        if self.record.leader == r or not self.record.leader:
            alive = {x for x in REPLICAS
                     if self.replicas[x].alive and self.reachable(x, CONTROLLER)}
            new = control.elect_leader(self.record, alive, unclean=False,
                                       min_insync=self.min_insync)
            if new != self.record:
                self.record = new
                self.broadcast()
        self.send("record", CONTROLLER, r, (self.record,))

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
            event("a follower truncated" if end < len(replica.log) else "a divergence cut nothing")
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
        holders = set(self.record.in_sync) | set(self.record.eligible)
        for record_id, offset in self.acked.items():
            if self.record.leader:
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
                event(f"caught up after {_ + 1} heal rounds")
                event(f"acknowledged {min(len(self.acked) // 5 * 5, 30)}+ records")
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
    return settings(max_examples=200, stateful_step_count=100, deadline=None, database=None,
                    derandomize=True, suppress_health_check=list(HealthCheck))


def test_no_acknowledged_record_is_lost_and_replicas_agree_under_crashes_and_a_faulty_network():
    # Given three replicas, a lossy, reordering, partitionable network, crashes that
    # lose unsynced writes, and a controller electing leaders and applying CASes
    # When hypothesis runs random schedules of produces, fetches and faults
    # Then every invariant holds after every step, and everyone catches up at the end
    run_state_machine_as_test(ReplicationModel, settings=model_settings())
