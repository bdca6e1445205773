"""Consumer group requests and control calls, from the wire to the coordinator and back.

Runs in the shard actor that coordinates the groups whose names hash to it,
on its loop thread only (shard_server.py). The protocol's group requests
(heartbeat, commitOffsets, resetOffsets, fetchOffsets, describeGroup, deleteGroup,
deleteOffsets) are
answered here with their reply header; the controller's calls (partition
counts, moving groups between shards) arrive through ``ShardServer.call``.
The rules live in group_coordinator.py, the committed offsets in
offset_store.py; this module translates, checks what clients may choose
(the session timeout) and keeps the time.

Who asks. A router forwards a group request as [client id][Request][client
key], the key being the client's CurveZMQ public key in Z85 text (empty
without CurveZMQ); the coordinator ties each member to the key that joined
it. The key frame is the router's, added after it checked the client's own
frames, so the shard reads the last frame.

Replicated slots (issue 12). On a replicated broker the controller pushes the
internal topic ``__consumer_offsets`` in the partition counts: a group then
lives in partition ``topics.offsets_slot(group, partitions)`` of it, and the
shard that leads that partition coordinates it (one GroupCoordinator and one
OffsetStore per slot led here, loaded by replaying the partition when the lead
starts, dropped when it ends). A request for a group whose slot is not led here
is answered notLeader: the router refreshes its table and the client retries at
the new leader, where its member is unknown and rejoins. A commit is appended
through the shard's replicated path (``SlotLogs``); it, and a read of offsets
(fetchOffsets, describeGroup), is answered only once the slot's high watermark
has reached the log end it saw, so an acknowledged or observed offset survives
any failover that keeps an in-sync replica (acks="all" semantics, with the
internal topic's min.insync.replicas; too few in sync: notEnoughReplicas at
once). When the lead ends, the waiting replies get notLeader. Without the
internal topic (factor 1) the shard's own store serves every group, as before.

Once a shard has heard of the internal topic it marks its data dir
(``__consumer_offsets.replicated``, fsynced), so that after a restart it never
answers a group from its own store, not even before the controller's partition
counts arrive (requests a router queued for it come first): until then a group
request is answered unavailable, retriable.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plinth import limits, protocol, protocol_classic, topics
from plinth.durable_files import write_file_atomically
from plinth.errors import (BrokerError, InvalidConfigError, MalformedRequestError,
                           NotLeaderError, RequestTimedOutError, TooManyRequestsError,
                           UnavailableError, UnknownGroupError)
from plinth.shards.classic_requests import ClassicRequests
from plinth.shards.group_coordinator import GroupCoordinator
from plinth.shards.offset_store import DIR_NAME, OffsetStore, wall_clock_ms
from plinth.shards.partition import Partition

log = logging.getLogger(__name__)

# Beside the shard's own offsets log: this shard's groups live in replicated slots.
REPLICATED_MARK = DIR_NAME + ".replicated"
# Requests that write the slot's log: refused at once with too few in sync.
_WRITES = (protocol.CommitOffsetsRequest, protocol.ResetOffsetsRequest,
           protocol.DeleteGroupRequest, protocol.DeleteOffsetsRequest)


@dataclass(frozen=True)
class SlotLogs:
    """What the shard gives GroupRequests for the replicated slots (loop thread):

    ``led(slot)``: (partition, leader epoch) if this shard leads partition ``slot``
    of the internal topic now, else None. ``append(part, batch, record_count,
    now_ms)``: append through the replicated path (raises NotLeaderError if not
    led); returns the base offset. ``check_acks_all(part)``: NotEnoughReplicasError
    if too few replicas are in sync to acknowledge a write. ``reply(envelope,
    header)``: send a reply later. ``answered_after(seconds)``: a reply held for its
    slot's high watermark went, that long after its request came (the shard's
    latency histogram)."""

    led: Callable[[int], tuple[Partition, int] | None]
    append: Callable[[Partition, bytes, int, int], int]
    check_acks_all: Callable[[Partition], None]
    reply: Callable[[list, bytes], None]
    answered_after: Callable[[float], None] = lambda seconds: None


@dataclass(slots=True)
class _Waiting:
    """A reply held until the slot's high watermark reaches ``end_offset``."""
    envelope: list
    request_id: int
    header: bytes
    end_offset: int
    deadline_s: float
    received_s: float   # when it was answered, held (the shard's monotonic clock)


@dataclass
class _Slot:
    """A slot whose partition this shard leads, in ``leader_epoch``: its groups."""
    index: int
    part: Partition
    leader_epoch: int
    store: OffsetStore
    coordinator: GroupCoordinator
    waiting: deque = field(default_factory=deque)   # of _Waiting, in offset order


class GroupRequests:
    """The groups one shard coordinates. Loop thread only, every method.

    Make one with ``GroupRequests.open``; ``close()`` it with the shard.
    """

    def __init__(self, shard_id: str, store: OffsetStore,
                 clock_s: Callable[[], float] = time.monotonic,
                 work_clock_s: Callable[[], float] = time.perf_counter,
                 slot_logs: SlotLogs | None = None,
                 clock_ms: Callable[[], int] = wall_clock_ms):
        self.shard_id = shard_id
        self._store = store
        self._coordinator = GroupCoordinator(store, work_clock_s)
        self._clock_s = clock_s
        self._clock_ms = clock_ms
        self._work_clock_s = work_clock_s
        self._slot_logs = slot_logs
        # Kafka's classic groups (the Kafka listener's): soft state, sent its held
        # answers through the shard's reply (SlotLogs.reply).
        self._classic = ClassicRequests(
            shard_id, slot_logs.reply if slot_logs is not None else _no_reply, clock_s)
        self._mark = store.directory.with_name(REPLICATED_MARK)
        # Groups live in replicated slots here (the internal topic exists); for good.
        self._replicated = slot_logs is not None and self._mark.exists()
        self._partition_counts: dict[str, int] = {}
        self._slot_count = 0                      # partitions of the internal topic (0: none)
        self._slots: dict[int, _Slot] = {}        # the slots led here, by partition
        self._waiting_count = 0                   # replies waiting, over every slot
        self._next_slots_check_s = 0.0

    @classmethod
    def open(cls, shard_id: str, data_dir: Path,
             clock_s: Callable[[], float] = time.monotonic,
             clock_ms: Callable[[], int] = wall_clock_ms,
             work_clock_s: Callable[[], float] = time.perf_counter,
             slot_logs: SlotLogs | None = None) -> GroupRequests:
        """Replay (and compact) the committed offsets under ``data_dir``. The clocks:
        ``clock_s`` for sessions, ``clock_ms`` (wall) for records and their expiry,
        ``work_clock_s`` to measure assignment work. ``slot_logs``: the shard's
        replicated slots (None: groups are never replicated here)."""
        return cls(shard_id, OffsetStore.open(data_dir, clock_ms), clock_s, work_clock_s,
                   slot_logs, clock_ms)

    def close(self) -> None:
        self._classic.close_all()
        for slot in list(self._slots.values()):
            self._drop(slot, NotLeaderError(f"{self.shard_id} is stopping; retry"))
        self._store.close()

    # --- Requests from clients ---------------------------------------------------

    def handle(self, request, payload: list = (), envelope: list | None = None) -> bytes | None:
        """The reply header to one of protocol.GROUP_REQUESTS; ``payload``: the frames
        after the header (the router's client key last). Raises BrokerError. None: of
        a replicated slot, the reply waits for the high watermark and goes to
        ``envelope`` later (``run_timers``)."""
        slot = self._slot_for(request.group)
        if isinstance(request, protocol_classic.CLASSIC_REQUESTS):
            groups = self._coordinator if slot is None else slot.coordinator
            group = groups.describe(request.group) if self._has_plinth(groups, request) else None
            return self._classic.handle(request, _client_key(payload), envelope,
                                        len(group.members) if group is not None else 0)
        if slot is None:
            return self._answer(self._coordinator, request, payload)
        if isinstance(request, _WRITES):
            self._slot_logs.check_acks_all(slot.part)
        if type(request) is not protocol.GroupHeartbeatRequest and \
                self._waiting_count >= limits.GROUP_REPLIES_WAITING_MAX:
            raise TooManyRequestsError(
                f"{self.shard_id}: {self._waiting_count} group replies wait for their slot's "
                f"replicas already, the limit (GROUP_REPLIES_WAITING_MAX); retry")
        header = self._answer(slot.coordinator, request, payload)
        end_offset = slot.part.log.end_offset
        if type(request) is protocol.GroupHeartbeatRequest or \
                slot.part.high_watermark >= end_offset or envelope is None:
            return header   # (membership is soft state: a heartbeat never waits)
        now_s = self._clock_s()
        slot.waiting.append(_Waiting(envelope, request.request_id, header, end_offset,
                                     now_s + limits.GROUP_REPLY_WAIT_MS_MAX / 1000, now_s))
        self._waiting_count += 1
        return None

    def refuse_while_loading(self, request, loading: UnavailableError) -> bytes:
        """The answer to one of protocol.GROUP_REQUESTS while the shard is still
        loading its groups' state (a restarted shard reopening its partitions,
        shard_server.py "Restarts"): a classic request's is COORDINATOR_LOAD_IN_PROGRESS,
        the code a Kafka client retries; any other raises ``loading``, retriable."""
        if isinstance(request, protocol_classic.CLASSIC_REQUESTS):
            return self._classic.loading(request)
        raise loading

    @staticmethod
    def _has_plinth(groups: GroupCoordinator, request) -> bool:
        """Whether a classic request's group may have Plinth members to check for."""
        return type(request) is protocol_classic.ClassicJoinRequest and \
            request.group in groups.group_names()

    def _answer(self, groups: GroupCoordinator, request, payload: list) -> bytes:
        rid = request.request_id
        match request:
            case protocol.GroupHeartbeatRequest():
                self._classic.refuse_plinth_member(request.group)
                result = groups.heartbeat(
                    request.group, request.member_id, request.member_epoch, list(request.topics),
                    set(request.owned), _session_timeout_ms(request), request.assignor,
                    self._clock_s(), _client_key(payload))
                return protocol.encode_heartbeat_reply(
                    rid, result.member_id, result.member_epoch, result.heartbeat_interval_ms,
                    result.assignment)
            case protocol.CommitOffsetsRequest(classic=True):
                self._classic.check_commit(request, _client_key(payload))
                groups.commit_classic(request.group, request.offsets,   # no Plinth members
                                      request.metadata)
                return protocol.encode_ok(rid)
            case protocol.CommitOffsetsRequest():
                self._classic.refuse_plinth_member(request.group)
                groups.commit(request.group, request.member_id, request.member_epoch,
                              request.offsets, _client_key(payload), request.metadata)
                return protocol.encode_ok(rid)
            case protocol.ResetOffsetsRequest():
                self._classic.refuse_if_members(request.group, "resetting its offsets")
                groups.reset_offsets(request.group, request.offsets, request.metadata)
                return protocol.encode_ok(rid)
            case protocol.DeleteGroupRequest():
                self._classic.refuse_if_members(request.group, "deleting it")
                groups.delete_group(request.group)
                return protocol.encode_ok(rid)
            case protocol.DeleteOffsetsRequest():
                outcomes = groups.delete_offsets(request.group, request.partitions,
                                                 self._classic.subscribes(request.group))
                return protocol.encode_offset_deletions_reply(rid, [
                    protocol.OffsetDeletion(topic, partition, error)
                    for (topic, partition), error in outcomes.items()])
            case protocol.FetchOffsetsRequest():
                return protocol.encode_committed_reply(rid, groups.committed(request.group),
                                                       groups.committed_metadata(request.group))
        return protocol.encode_group_reply(rid, self.info(request.group, groups))

    def info(self, name: str, groups: GroupCoordinator | None = None) -> protocol.GroupInfo:
        """A group's members, assignments and committed offsets."""
        groups = groups or self._coordinator_of(name)
        classic = self._classic.info(name, groups.committed(name))
        if classic is not None:
            return classic
        group = groups.describe(name)
        if group is None:
            raise UnknownGroupError(f"group {name!r} is not known: it has no members and no "
                                    f"committed offsets (its coordinator is {self.shard_id})")
        members = [protocol.MemberInfo(m.member_id, m.epoch, sorted(m.topics), set(m.assigned))
                   for m in group.members.values()]
        return protocol.GroupInfo(name, group.assignor, group.epoch, members,
                                  groups.committed(name))

    # --- Replicated slots ------------------------------------------------------------

    def _coordinator_of(self, name: str) -> GroupCoordinator:
        slot = self._slot_for(name)
        return self._coordinator if slot is None else slot.coordinator

    def _slot_for(self, name: str) -> _Slot | None:
        """The led slot holding group ``name``; None without replicated slots (this
        shard's own store). NotLeaderError if the slot is not led here."""
        if not self._replicated:
            return None
        if not self._slot_count:
            raise UnavailableError(
                f"{self.shard_id} is starting and does not know the slots of "
                f"{topics.OFFSETS_TOPIC} yet; retry")
        index = topics.offsets_slot(name, self._slot_count)
        slot = self._sync_slot(index)
        if slot is None:
            raise NotLeaderError(
                f"group {name!r} lives in {topics.OFFSETS_TOPIC}-{index}, which "
                f"{self.shard_id} does not lead; retry (the routers are learning its leader)")
        return slot

    def sync_slots(self) -> None:
        """Load the slots this shard has come to lead, drop those it no longer leads
        (after a leadership change, or a change of the internal topic)."""
        if self._slot_logs is None:
            return
        for index in set(range(self._slot_count)) | set(self._slots):
            self._sync_slot(index)

    def _sync_slot(self, index: int) -> _Slot | None:
        led = self._slot_logs.led(index) if index < self._slot_count else None
        slot = self._slots.get(index)
        if slot is not None and (led is None or led[0] is not slot.part
                                 or led[1] != slot.leader_epoch):
            self._drop(slot, NotLeaderError(
                f"{topics.OFFSETS_TOPIC}-{index} is no longer led by {self.shard_id} in "
                f"leader epoch {slot.leader_epoch}; retry (the routers are learning its leader)"))
            slot = None
        if slot is None and led is not None:
            slot = self._load(index, *led)
        return slot

    def _load(self, index: int, part: Partition, leader_epoch: int) -> _Slot:
        """Coordinate the groups of a slot led here from now on: replay its partition."""
        append = self._slot_logs.append

        def append_to_slot(batch: bytes, record_count: int, now_ms: int) -> int:
            return append(part, batch, record_count, now_ms)

        store = OffsetStore.load(part.log, append_to_slot, self._clock_ms)
        coordinator = GroupCoordinator(store, self._work_clock_s)
        coordinator.set_partition_counts(self._partition_counts)
        slot = self._slots[index] = _Slot(index, part, leader_epoch, store, coordinator)
        log.info("%s: leads %s in leader epoch %d: coordinates its %d groups (%d records "
                 "replayed, log end %d)", self.shard_id, part.name, leader_epoch,
                 store.group_count(), store.compaction.records_read, part.log.end_offset)
        return slot

    def _drop(self, slot: _Slot, error: BrokerError) -> None:
        """Stop coordinating a slot's groups: members rejoin at the new leader; the
        replies waiting for its high watermark get ``error``."""
        del self._slots[slot.index]
        self._classic.close_groups([name for name in self._classic.names()
                                    if topics.offsets_slot(name, self._slot_count or 1)
                                    == slot.index])
        while slot.waiting:
            waiting = slot.waiting.popleft()
            self._waiting_count -= 1
            self._slot_logs.reply(waiting.envelope, protocol.encode_error(waiting.request_id,
                                                                          error))
        slot.store.close()
        log.info("%s: stopped coordinating the groups of %s: %s", self.shard_id,
                 slot.part.name, error)

    def _write_due_snapshots(self) -> None:
        """Each led slot whose snapshot is due appends one (offset_store.py: what bounds
        a slot's log, with the internal topic's time retention)."""
        now_ms = self._clock_ms()
        for slot in self._slots.values():
            if not slot.store.snapshot_due(now_ms):
                continue
            try:
                written = slot.store.write_snapshot()
            except BrokerError as exc:   # the lead just ended, a full disk: next check again
                log.warning("%s: the snapshot of %s failed: %s", self.shard_id, slot.part.name,
                            exc)
                continue
            log.info("%s: wrote a snapshot of %s: %d records of %d groups", self.shard_id,
                     slot.part.name, written, slot.store.group_count())

    def _settle(self, slot: _Slot, now_s: float) -> None:
        """Send the waiting replies the high watermark has passed; time out the rest."""
        waiting, high_watermark = slot.waiting, slot.part.high_watermark
        while waiting and (waiting[0].end_offset <= high_watermark
                           or waiting[0].deadline_s <= now_s):
            held = waiting.popleft()
            self._waiting_count -= 1
            header = held.header
            if held.end_offset > high_watermark:
                header = protocol.encode_error(held.request_id, RequestTimedOutError(
                    f"{slot.part.name}: the high watermark {high_watermark} has not reached "
                    f"{held.end_offset} within {limits.GROUP_REPLY_WAIT_MS_MAX} ms (too few "
                    f"replicas keep up); retry"))
            self._slot_logs.reply(held.envelope, header)
            self._slot_logs.answered_after(now_s - held.received_s)

    # --- Timers (the loop) -------------------------------------------------------------

    def run_timers(self, now_s: float) -> None:
        """A loop round's group work: queued assignment work within its budget, members
        silent for longer than their session timeout, expired offsets of empty groups."""
        self._coordinator.run_assignments()
        self._coordinator.expire(now_s)
        self._classic.run_timers()
        if self._slot_logs is None or not (self._slots or self._slot_count):
            return
        if now_s >= self._next_slots_check_s:
            self._next_slots_check_s = now_s + limits.GROUP_SLOTS_CHECK_INTERVAL_MS / 1000
            self.sync_slots()
            self._write_due_snapshots()
        for slot in list(self._slots.values()):
            if slot.waiting:
                self._settle(slot, now_s)
            slot.coordinator.run_assignments()
            try:
                slot.coordinator.expire(now_s)   # may append deletions
            except BrokerError as exc:   # e.g. the lead just ended: the next check drops it
                log.warning("%s: expiring the groups of %s failed: %s", self.shard_id,
                            slot.part.name, exc)

    def next_timer_s(self) -> float | None:
        """When ``run_timers`` has work next: now if assignment work or expired offsets
        wait, else when the next member's session ends or a waiting reply's wait ends
        (None: nothing)."""
        now_s = self._clock_s()
        times = [self._coordinator.next_expiry_s(now_s), self._classic.next_timer_s()]
        if not self._slot_count and not self._slots:   # factor 1: this shard's store alone
            return min((t for t in times if t is not None), default=None)
        if self._slot_logs is not None:
            times.append(self._next_slots_check_s)
        for slot in self._slots.values():
            times.append(slot.coordinator.next_expiry_s(now_s))
            if slot.waiting:
                times.append(slot.waiting[0].deadline_s)
        return min((t for t in times if t is not None), default=None)

    def assignment_pending(self) -> bool:
        """Whether some group's assignment is still being computed."""
        return self._coordinator.assignment_pending() or \
            any(slot.coordinator.assignment_pending() for slot in self._slots.values())

    # --- Control calls (through ShardServer.call) ----------------------------------------

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Every topic's partition count, pushed by the controller (with the internal
        topic's: then groups live in its partitions, the replicated slots)."""
        self._partition_counts = dict(counts)
        self._slot_count = counts.get(topics.OFFSETS_TOPIC, 0)
        if self._slot_count and self._slot_logs is not None and not self._replicated:
            write_file_atomically(self._mark, b"groups live in the replicated slots of "
                                  b"__consumer_offsets\n", sync_dir=True)
            self._replicated = True
        self._coordinator.set_partition_counts(counts)
        for slot in self._slots.values():
            slot.coordinator.set_partition_counts(counts)
        self.sync_slots()

    def names(self) -> list[str]:
        """The groups this shard coordinates (of the replicated slots it leads, if any)."""
        classic = self._classic.names()
        if self._replicated:
            return sorted({name for slot in self._slots.values()
                           for name in slot.coordinator.group_names()} | set(classic))
        return sorted(set(self._coordinator.group_names()) | set(classic))

    def listings(self) -> list[protocol.GroupListing]:
        """The groups ``names`` gives, by name, each with its state: a classic group's from
        its coordinator; a Plinth group's Stable with members, else Empty (committed
        offsets only), as the Kafka listener's DescribeGroups shows it."""
        classic = {listing.group: listing for listing in self._classic.listings()}
        coordinators = [slot.coordinator for slot in self._slots.values()] \
            if self._replicated else [self._coordinator]
        plinth = [protocol.GroupListing(name, _plinth_state(coordinator, name))
                  for coordinator in coordinators for name in coordinator.group_names()
                  if name not in classic]   # a classic group's offsets are kept here too
        return sorted([*classic.values(), *plinth], key=lambda listing: listing.group)

    def hand_over(self, names: list[str]) -> dict[str, dict]:
        """Stop coordinating these groups; returns each one's state. Groups of the
        replicated slots never move with the shards (their slot stays): none is."""
        if self._replicated:
            return {}
        self._classic.close_groups(names)   # soft state: their members rejoin there
        return {name: self._coordinator.hand_over(name) for name in names}

    def adopt(self, states: dict[str, dict]) -> None:
        """Coordinate groups handed over by another shard (durable when this returns)."""
        now_s = self._clock_s()
        for name, state in states.items():
            self._coordinator.adopt(name, state, now_s)

    def committed_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        """Every coordinated group's committed offsets, for the shard's stats."""
        if self._replicated:
            return {name: slot.coordinator.committed(name) for slot in self._slots.values()
                    for name in slot.coordinator.group_names()}
        return {name: self._coordinator.committed(name) for name in self.names()}


def _plinth_state(coordinator: GroupCoordinator, name: str) -> str:
    return "Stable" if coordinator.describe(name).members else "Empty"


def _no_reply(envelope: list, header: bytes) -> None:
    raise AssertionError("a classic group answer was released with no way to send it "
                         "(GroupRequests made without SlotLogs)")


def _client_key(payload: list) -> str:
    """The client key the router added as the last frame ("" if none)."""
    if not payload:
        return ""
    frame = payload[-1]
    key = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
    if len(key) > limits.CLIENT_KEY_TEXT_BYTES or not key.isascii():
        raise MalformedRequestError(
            f"the client key frame of a group request holds {len(key)} bytes; a key is "
            f"{limits.CLIENT_KEY_TEXT_BYTES} bytes of Z85 text, or empty")
    return key.decode()


def _session_timeout_ms(request: protocol.GroupHeartbeatRequest) -> int:
    timeout_ms = request.session_timeout_ms or limits.SESSION_TIMEOUT_MS_DEFAULT
    if not limits.SESSION_TIMEOUT_MS_MIN <= timeout_ms <= limits.SESSION_TIMEOUT_MS_MAX:
        raise InvalidConfigError(
            f"session_timeout_ms={timeout_ms} is outside {limits.SESSION_TIMEOUT_MS_MIN}.."
            f"{limits.SESSION_TIMEOUT_MS_MAX}")
    return timeout_ms
