"""Kafka's classic group protocol, coordinator side: JoinGroup, SyncGroup,
Heartbeat and LeaveGroup with client-side assignors.

Runs in the shard actor that coordinates the group, beside Plinth's own
groups (group_coordinator.py), on its loop thread only: every method, no
locks, no I/O; the clock is passed in (``now_ms``, monotonic milliseconds).
It follows Kafka's GroupMetadataManager and ClassicGroup.

Protocol. A group goes Empty -> PreparingRebalance -> CompletingRebalance ->
Stable, and back to PreparingRebalance whenever its membership or a member's
metadata changes (a group without members leaves memory: Dead). In
PreparingRebalance every member must (re)join: each join is HELD until all
known members joined, or until the rebalance timeout (the largest of the
members') ran out; members that did not rejoin are then removed (static ones
stay, for their session), the generation id is bumped, the protocol (the
assignor) is chosen by the members' votes among those all of them support,
and every held join is answered: generation, protocol, leader, and, for the
leader only, every member's metadata. A new group first waits
``initial_rebalance_delay_ms`` (extended while members keep arriving, within
the rebalance timeout), so that consumers started together form one
generation. In CompletingRebalance each member sends SyncGroup; followers are
held until the leader's sync brings the assignments, which answer every held
sync and every later one; the group is then Stable. Members that do not sync
within the rebalance timeout are removed (and the group rebalances). Members
heartbeat; a heartbeat during a rebalance answers REBALANCE_IN_PROGRESS, which
tells the member to rejoin. A member silent for its session timeout is
removed, and the others rebalance.

Member ids. A member joining without one (v4+, ``require_known_member_id``) is
handed a new id with MEMBER_ID_REQUIRED (KIP-394) and becomes a member when it
joins again with it, within its session timeout. Ids are the client id (or
group instance id), a dash and a random UUID (122 random bits: unguessable).
A member belongs to the client key that joined it (the CurveZMQ public key;
empty without keys): a request of another key naming it is answered
UNKNOWN_MEMBER_ID and changes nothing. Static members (KIP-345, a group
instance id) survive restarts: a known instance joining without a member id
replaces the old member, whose held requests are answered
FENCED_INSTANCE_ID; an instance id of another client key is refused with
FENCED_INSTANCE_ID.

Held answers. Each request carries a reply token, an opaque object (never
None) the shard uses to send the answer later. Every request method returns
the answers that are ready, as a list of (reply token, answer) pairs: its
own if it is not held, and any held ones it released; ``tick`` returns those
released by deadlines. No held request is ever dropped: a member removed,
replaced or asked to rejoin gets its answer, and ``close_all`` (the shard no
longer coordinates) answers every held one NOT_COORDINATOR. A member holds at
most one request (a join or a sync); a newer one answers the older
REBALANCE_IN_PROGRESS.

Deadlines (sessions, rebalances, syncs, pending member ids) live in one heap
(deadlines.py): a loop round costs nothing per idle group or member;
``next_deadline_ms`` says when to ``tick``.

Bounds (plinth/limits.py): groups per shard, members per group, per client
key and per shard (pending member ids count), protocols and metadata bytes
per member, assignment bytes per group, metadata and assignment bytes per
shard. Held requests are at most one per member, so members bound them.

Offsets are not kept here: the shard writes them to its OffsetStore after
``check_commit`` allowed the commit.

Use, in the shard's loop: pass each request with its reply token and send
every (token, answer) returned; when ``next_deadline_ms()`` is before now,
call ``tick(now_ms)`` and send what it returns. ``now_ms`` is one monotonic
clock for every call.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field

from plinth import limits
from plinth.errors import InvalidGroupError
from plinth.shards.deadlines import Deadlines
from plinth.shards.group_coordinator import validate_group_name

log = logging.getLogger(__name__)


class KafkaError(enum.IntEnum):
    """The Kafka error codes these answers carry, with Kafka's numbers."""
    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_REQUEST = 42
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82


class GroupState(enum.Enum):
    """A group's state, by Kafka's names (DescribeGroups, ListGroups)."""
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


NO_GENERATION = -1
Protocol = tuple[str, bytes]          # (protocol name, the member's metadata for it)


# --- Answers ---------------------------------------------------------------------

@dataclass(frozen=True)
class JoinedMember:
    """One member as the leader's join answer lists it."""
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True)
class JoinAnswer:
    error: KafkaError
    member_id: str
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: tuple[JoinedMember, ...] = ()   # the leader's only
    skip_assignment: bool = False            # (v9+; never set: see the static rejoin)


@dataclass(frozen=True)
class SyncAnswer:
    error: KafkaError
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True)
class HeartbeatAnswer:
    error: KafkaError


@dataclass(frozen=True)
class LeftMember:
    member_id: str
    group_instance_id: str | None
    error: KafkaError


@dataclass(frozen=True)
class LeaveAnswer:
    error: KafkaError
    members: tuple[LeftMember, ...] = ()


Answer = JoinAnswer | SyncAnswer | HeartbeatAnswer | LeaveAnswer
Reply = tuple[object, Answer]          # (the request's reply token, its answer)


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes       # for the group's protocol; empty unless Stable (as Kafka)
    assignment: bytes     # empty unless Stable (as Kafka)


@dataclass(frozen=True)
class GroupDescription:
    name: str
    state: GroupState
    protocol_type: str
    protocol_name: str    # empty unless Stable (as Kafka)
    generation_id: int
    leader_id: str
    members: tuple[MemberDescription, ...]


# --- State -----------------------------------------------------------------------

@dataclass
class _Member:
    member_id: str
    instance_id: str | None
    client_key: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[Protocol, ...]
    assignment: bytes = b""
    join_token: object = None      # the held join's reply token
    sync_token: object = None      # the held sync's reply token
    is_new: bool = True            # joined, not yet answered: no session yet

    def metadata(self, protocol_name: str | None) -> bytes:
        return next((meta for name, meta in self.protocols if name == protocol_name), b"")

    def vote(self, candidates: set[str]) -> str:
        return next(name for name, _ in self.protocols if name in candidates)


@dataclass
class _Group:
    name: str
    state: GroupState = GroupState.EMPTY
    previous_state: GroupState = GroupState.DEAD
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)   # joined first, first
    static: dict[str, str] = field(default_factory=dict)        # instance id -> member id
    pending: dict[str, str] = field(default_factory=dict)       # told its id -> client key
    pending_sync: set[str] = field(default_factory=set)
    supported: Counter = field(default_factory=Counter)         # protocol -> members
    members_per_key: Counter = field(default_factory=Counter)   # client key -> members
    awaiting_join: int = 0
    new_member_added: bool = False
    initial_delay_ms: int = 0        # the initial rebalance's current delay
    initial_remaining_ms: int = 0    # and what is left of its rebalance timeout
    initial_deadline_ms: int = 0     # when the current delay runs out

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def all_joined(self) -> bool:
        return self.awaiting_join == len(self.members) and not self.pending


def _protocol_bytes(protocol_type: str, protocols) -> int:
    return len(protocol_type.encode()) + sum(len(name.encode()) + len(meta)
                                             for name, meta in protocols)


# --- The coordinator ---------------------------------------------------------------

class ClassicGroupCoordinator:
    """The classic groups one shard coordinates. Loop thread only, every method."""

    def __init__(self, *, initial_rebalance_delay_ms: int = limits.CLASSIC_INITIAL_REBALANCE_DELAY_MS):
        if initial_rebalance_delay_ms < 0:
            raise AssertionError(f"initial rebalance delay {initial_rebalance_delay_ms} ms < 0")
        self._initial_delay_ms = initial_rebalance_delay_ms
        self._groups: dict[str, _Group] = {}
        self._member_count = 0       # members and pending member ids, every group
        self._bytes = 0              # members' metadata and assignments, every group
        # ("join", group), ("sync", group), ("session", group, member), ("pending", group, member)
        self._deadlines = Deadlines(limits.GROUP_DEADLINE_HEAP_ENTRIES_MIN)
        self._held = 0

    # --- JoinGroup -----------------------------------------------------------------

    def join(self, token: object, group: str, member_id: str, group_instance_id: str | None,
             protocol_type: str, protocols: list[Protocol], session_timeout_ms: int,
             rebalance_timeout_ms: int, now_ms: int, *, client_id: str = "",
             client_host: str = "", client_key: str = "",
             require_known_member_id: bool = True) -> list[Reply]:
        """JoinGroup. ``rebalance_timeout_ms`` <= 0 (v0) means the session timeout;
        ``require_known_member_id`` is Kafka's choice for v4+ (KIP-394)."""
        _check_token(token)
        out: list[Reply] = []
        refused = self._refuse_join(group, group_instance_id, protocol_type, protocols,
                                    session_timeout_ms)
        if refused is not None:
            out.append((token, JoinAnswer(refused, member_id)))
            return out
        request = _JoinRequest(
            token, member_id, group_instance_id, protocol_type, tuple(protocols),
            session_timeout_ms, _rebalance_timeout_ms(rebalance_timeout_ms, session_timeout_ms),
            client_id[:limits.CLASSIC_CLIENT_ID_CHARS_MAX],
            client_host[:limits.CLASSIC_CLIENT_ID_CHARS_MAX], client_key,
            require_known_member_id, now_ms)
        g = self._groups.get(group)
        if g is None:
            if member_id:
                out.append((token, JoinAnswer(KafkaError.UNKNOWN_MEMBER_ID, member_id)))
                return out
            if len(self._groups) >= limits.GROUPS_PER_SHARD_MAX:
                log.warning("refused to create classic group %r: this shard coordinates %d "
                            "classic groups, the limit (GROUPS_PER_SHARD_MAX %d)", group,
                            len(self._groups), limits.GROUPS_PER_SHARD_MAX)
                out.append((token, JoinAnswer(KafkaError.COORDINATOR_NOT_AVAILABLE, "")))
                return out
            g = self._groups[group] = _Group(group)
        if member_id:
            self._join_known(g, request, out)
        else:
            self._join_unknown(g, request, out)
        self._maybe_forget(g)
        return out

    def _refuse_join(self, group: str, instance_id: str | None, protocol_type: str,
                     protocols: list[Protocol], session_timeout_ms: int) -> KafkaError | None:
        if not _valid_group_name(group):
            return KafkaError.INVALID_GROUP_ID
        if not (limits.SESSION_TIMEOUT_MS_MIN <= session_timeout_ms
                <= limits.CLASSIC_SESSION_TIMEOUT_MS_MAX):
            return KafkaError.INVALID_SESSION_TIMEOUT
        too_long = instance_id is not None and (
            not instance_id or
            len(instance_id.encode()) > limits.CLASSIC_GROUP_INSTANCE_ID_BYTES_MAX)
        if (too_long or len(protocols) > limits.CLASSIC_MEMBER_PROTOCOLS_MAX or
                _protocol_bytes(protocol_type, protocols) > limits.CLASSIC_MEMBER_METADATA_BYTES_MAX):
            log.warning("refused a join of classic group %r: %d protocols of %d bytes (limits "
                        "CLASSIC_MEMBER_PROTOCOLS_MAX %d, CLASSIC_MEMBER_METADATA_BYTES_MAX %d), "
                        "group instance id of %d bytes (limit %d)", group, len(protocols),
                        _protocol_bytes(protocol_type, protocols),
                        limits.CLASSIC_MEMBER_PROTOCOLS_MAX,
                        limits.CLASSIC_MEMBER_METADATA_BYTES_MAX,
                        len((instance_id or "").encode()),
                        limits.CLASSIC_GROUP_INSTANCE_ID_BYTES_MAX)
            return KafkaError.INVALID_REQUEST
        return None

    def _join_unknown(self, g: _Group, r: _JoinRequest, out: list[Reply]) -> None:
        """A join without a member id: a new member, or a static member restarting."""
        if not _supports(g, r.protocol_type, r.protocols):
            out.append((r.token, JoinAnswer(KafkaError.INCONSISTENT_GROUP_PROTOCOL, "")))
            return
        new_id = f"{(r.instance_id or r.client_id)[:limits.CLASSIC_CLIENT_ID_CHARS_MAX]}-{uuid.uuid4()}"
        old_id = g.static.get(r.instance_id) if r.instance_id is not None else None
        if old_id is not None:
            if g.members[old_id].client_key != r.client_key:
                out.append((r.token, JoinAnswer(KafkaError.FENCED_INSTANCE_ID, "")))
            elif not self._room_for_metadata(g, g.members[old_id], r):
                out.append((r.token, JoinAnswer(KafkaError.COORDINATOR_NOT_AVAILABLE, "")))
            else:
                self._replace_static_member(g, old_id, new_id, r, out)
            return
        refused = self._check_room(g, r.client_key, pending_id=None)
        if refused is not None:
            out.append((r.token, JoinAnswer(refused, "")))
        elif r.instance_id is None and r.require_known_member_id:
            g.pending[new_id] = r.client_key
            self._count_member(g, r.client_key, +1)
            self._deadlines.set(("pending", g.name, new_id), r.now_ms + r.session_timeout_ms)
            out.append((r.token, JoinAnswer(KafkaError.MEMBER_ID_REQUIRED, new_id)))
        else:
            self._add_member(g, new_id, r, out)

    def _join_known(self, g: _Group, r: _JoinRequest, out: list[Reply]) -> None:
        if not _supports(g, r.protocol_type, r.protocols):
            out.append((r.token, JoinAnswer(KafkaError.INCONSISTENT_GROUP_PROTOCOL, r.member_id)))
            return
        if r.member_id in g.pending:
            if g.pending[r.member_id] != r.client_key or r.instance_id is not None:
                out.append((r.token, JoinAnswer(KafkaError.UNKNOWN_MEMBER_ID, r.member_id)))
                return
            refused = self._check_room(g, r.client_key, pending_id=r.member_id)
            if refused is not None:
                out.append((r.token, JoinAnswer(refused, "")))
                return
            self._forget_pending(g, r.member_id)
            self._add_member(g, r.member_id, r, out)
            return
        error = _validate_member(g, r.member_id, r.instance_id, r.client_key)
        if error is not KafkaError.NONE:
            out.append((r.token, JoinAnswer(error, r.member_id)))
            return
        member = g.members[r.member_id]
        unchanged = member.protocols == r.protocols
        if g.state is GroupState.PREPARING_REBALANCE or not unchanged or (
                g.state is GroupState.STABLE and r.member_id == g.leader_id):
            # (the leader rejoining a stable group asks for a new assignment, e.g. new partitions)
            if not self._room_for_metadata(g, member, r):
                out.append((r.token, JoinAnswer(KafkaError.COORDINATOR_NOT_AVAILABLE,
                                                r.member_id)))
                return
            self._update_member(g, member, r, out)
            self._rebalance_or_complete(g, r.now_ms, out)
        else:   # CompletingRebalance or Stable, same metadata: the current generation again
            out.append((r.token, self._joined(g, member)))

    def _add_member(self, g: _Group, member_id: str, r: _JoinRequest, out: list[Reply]) -> None:
        member = _Member(member_id, r.instance_id, r.client_key, r.client_id, r.client_host,
                         r.session_timeout_ms, r.rebalance_timeout_ms, r.protocol_type,
                         r.protocols, join_token=r.token)
        if g.state is GroupState.PREPARING_REBALANCE and g.previous_state is GroupState.EMPTY:
            g.new_member_added = True   # the initial rebalance waits a little longer
        if not g.members:
            g.protocol_type = r.protocol_type
        if g.leader_id is None:
            g.leader_id = member_id
        g.members[member_id] = member
        if r.instance_id is not None:
            g.static[r.instance_id] = member_id
        _count_protocols(g, member.protocols, +1)
        self._count_member(g, r.client_key, +1)
        self._bytes += _protocol_bytes(r.protocol_type, r.protocols)
        g.awaiting_join += 1
        self._held += 1
        # No session before its first answer: it cannot heartbeat without its id.
        self._deadlines.set(("session", g.name, member_id),
                            r.now_ms + limits.CLASSIC_NEW_MEMBER_JOIN_TIMEOUT_MS)
        self._rebalance_or_complete(g, r.now_ms, out)

    def _update_member(self, g: _Group, member: _Member, r: _JoinRequest,
                       out: list[Reply]) -> None:
        """New protocols and timeouts; the member's join is held."""
        _count_protocols(g, member.protocols, -1)
        self._bytes += (_protocol_bytes(r.protocol_type, r.protocols) -
                        _protocol_bytes(member.protocol_type, member.protocols))
        member.protocols, member.protocol_type = r.protocols, r.protocol_type
        _count_protocols(g, member.protocols, +1)
        member.session_timeout_ms = r.session_timeout_ms
        member.rebalance_timeout_ms = r.rebalance_timeout_ms
        if member.join_token is not None:   # superseded: answered, not dropped
            self._answer_join(g, member, JoinAnswer(KafkaError.REBALANCE_IN_PROGRESS,
                                                    member.member_id), out)
        if member.sync_token is not None:
            self._answer_sync(member, SyncAnswer(KafkaError.REBALANCE_IN_PROGRESS), out)
        member.join_token = r.token
        g.awaiting_join += 1
        self._held += 1

    def _replace_static_member(self, g: _Group, old_id: str, new_id: str, r: _JoinRequest,
                               out: list[Reply]) -> None:
        """A known group instance joined again without its member id (it restarted):
        the new member takes the old one's place, assignment and leadership."""
        leader_before = g.leader_id
        old = g.members.pop(old_id)
        if old.join_token is not None:
            self._answer_join(g, old, JoinAnswer(KafkaError.FENCED_INSTANCE_ID, old_id), out)
        if old.sync_token is not None:
            self._answer_sync(old, SyncAnswer(KafkaError.FENCED_INSTANCE_ID), out)
        self._deadlines.discard(("session", g.name, old_id))
        g.pending_sync.discard(old_id)
        member = _Member(new_id, r.instance_id, r.client_key, r.client_id, r.client_host,
                         old.session_timeout_ms, old.rebalance_timeout_ms, old.protocol_type,
                         old.protocols, assignment=old.assignment, is_new=False)
        g.members[new_id] = member
        g.static[r.instance_id] = new_id
        if g.leader_id == old_id:
            g.leader_id = new_id
        self._deadlines.set(("session", g.name, new_id), r.now_ms + r.session_timeout_ms)
        self._update_member(g, member, r, out)
        if g.state is GroupState.STABLE:
            if _select_protocol(g) == g.protocol_name:
                # No rebalance. Told the old leader id, it will not assign (it cannot send
                # the assignment of a stable group); it syncs and gets the old one's.
                answer = self._joined(g, member, leader_id=leader_before or "")
                self._answer_join(g, member, answer, out)
            else:
                self._rebalance_or_complete(g, r.now_ms, out)
        elif g.state is GroupState.COMPLETING_REBALANCE:
            # The leader may be assigning to the old member id: assign again.
            self._prepare_rebalance(g, r.now_ms, out)
        else:
            self._maybe_complete_join(g, r.now_ms, out)

    def _check_room(self, g: _Group, client_key: str, pending_id: str | None) -> KafkaError | None:
        """Room for one more member (``pending_id`` is counted already)."""
        already = 1 if pending_id is not None else 0
        of_key = g.members_per_key.get(client_key, 0) - already
        if len(g.members) + len(g.pending) - already >= limits.GROUP_MEMBERS_MAX or (
                client_key and of_key >= limits.GROUP_MEMBERS_PER_CLIENT_KEY_MAX) or (
                self._member_count - already >= limits.GROUP_MEMBERS_PER_SHARD_MAX):
            log.info("classic group %r is full: %d members, %d pending, %d of this client key; "
                     "%d in this shard's classic groups (limits GROUP_MEMBERS_MAX %d, "
                     "GROUP_MEMBERS_PER_CLIENT_KEY_MAX %d, GROUP_MEMBERS_PER_SHARD_MAX %d)",
                     g.name, len(g.members), len(g.pending), of_key, self._member_count,
                     limits.GROUP_MEMBERS_MAX, limits.GROUP_MEMBERS_PER_CLIENT_KEY_MAX,
                     limits.GROUP_MEMBERS_PER_SHARD_MAX)
            return KafkaError.GROUP_MAX_SIZE_REACHED
        if not self._room_for_bytes(g, limits.CLASSIC_MEMBER_METADATA_BYTES_MAX):
            return KafkaError.COORDINATOR_NOT_AVAILABLE
        return None

    def _room_for_metadata(self, g: _Group, member: _Member, r: _JoinRequest) -> bool:
        """Room for the member's new metadata in place of its old."""
        return self._room_for_bytes(g, _protocol_bytes(r.protocol_type, r.protocols) -
                                    _protocol_bytes(member.protocol_type, member.protocols))

    def _room_for_bytes(self, g: _Group, more_bytes: int) -> bool:
        if self._bytes + more_bytes <= limits.CLASSIC_GROUP_BYTES_PER_SHARD_MAX:
            return True
        log.warning("refused %d more bytes of metadata in classic group %r: this shard's classic "
                    "groups hold %d bytes of metadata and assignments "
                    "(CLASSIC_GROUP_BYTES_PER_SHARD_MAX %d)", more_bytes, g.name, self._bytes,
                    limits.CLASSIC_GROUP_BYTES_PER_SHARD_MAX)
        return False

    # --- The join phase ----------------------------------------------------------------

    def _rebalance_or_complete(self, g: _Group, now_ms: int, out: list[Reply]) -> None:
        if g.state in (GroupState.EMPTY, GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(g, now_ms, out)
        else:
            self._maybe_complete_join(g, now_ms, out)

    def _prepare_rebalance(self, g: _Group, now_ms: int, out: list[Reply]) -> None:
        if g.state is GroupState.COMPLETING_REBALANCE:   # held syncs: rejoin
            self._propagate_assignment(g, {}, KafkaError.REBALANCE_IN_PROGRESS, now_ms, out)
        self._deadlines.discard(("sync", g.name))
        g.pending_sync.clear()
        initial = g.state is GroupState.EMPTY
        _transition(g, GroupState.PREPARING_REBALANCE)
        if initial:   # a new group: give its members time to arrive
            g.initial_delay_ms = self._initial_delay_ms
            g.initial_remaining_ms = max(g.rebalance_timeout_ms() - self._initial_delay_ms, 0)
            g.new_member_added = False
            g.initial_deadline_ms = now_ms + self._initial_delay_ms
            self._deadlines.set(("join", g.name), g.initial_deadline_ms)
        elif g.all_joined():
            self._complete_join(g, now_ms, out)
        else:
            self._deadlines.set(("join", g.name), now_ms + g.rebalance_timeout_ms())

    def _maybe_complete_join(self, g: _Group, now_ms: int, out: list[Reply]) -> None:
        """Complete the join phase if every member joined (not the initial one: its
        delay runs out first)."""
        if g.state is GroupState.PREPARING_REBALANCE and \
                g.previous_state is not GroupState.EMPTY and g.all_joined():
            self._complete_join(g, now_ms, out)

    def _join_deadline(self, g: _Group, now_ms: int, out: list[Reply]) -> None:
        if g.previous_state is GroupState.EMPTY and g.new_member_added and g.initial_remaining_ms:
            # Members keep arriving at a new group: wait another delay, within the timeout.
            delay_ms = min(self._initial_delay_ms, g.initial_remaining_ms)
            g.initial_remaining_ms = max(g.initial_remaining_ms - g.initial_delay_ms, 0)
            g.initial_delay_ms = delay_ms
            g.new_member_added = False
            # From when the last delay ran out, not from a late tick.
            g.initial_deadline_ms += delay_ms
            self._deadlines.set(("join", g.name), g.initial_deadline_ms)
        else:
            self._complete_join(g, now_ms, out)

    def _complete_join(self, g: _Group, now_ms: int, out: list[Reply]) -> None:
        """The next generation: without the dynamic members that did not rejoin."""
        self._deadlines.discard(("join", g.name))
        for member in [m for m in g.members.values() if m.join_token is None
                       and m.instance_id is None]:
            self._remove_member(g, member, out)
        if g.members and g.members[g.leader_id].join_token is None:
            joined = next((m.member_id for m in g.members.values()
                           if m.join_token is not None), None)
            if joined is None:   # only static members that did not rejoin: wait for them
                self._deadlines.set(("join", g.name), now_ms + g.rebalance_timeout_ms())
                return
            g.leader_id = joined
        g.generation_id += 1
        g.pending_sync.clear()
        if not g.members:
            g.protocol_name = None
            _transition(g, GroupState.EMPTY)
            return
        g.protocol_name = _select_protocol(g)
        _transition(g, GroupState.COMPLETING_REBALANCE)
        for member in g.members.values():
            if member.join_token is not None:
                self._answer_join(g, member, self._joined(g, member), out)
            member.is_new = False
            self._deadlines.set(("session", g.name, member.member_id),
                                now_ms + member.session_timeout_ms)
            g.pending_sync.add(member.member_id)
        self._deadlines.set(("sync", g.name), now_ms + g.rebalance_timeout_ms())

    def _joined(self, g: _Group, member: _Member, leader_id: str | None = None) -> JoinAnswer:
        """The current generation, as a join answer to ``member``."""
        members = ()
        if member.member_id == g.leader_id and leader_id is None:
            members = tuple(JoinedMember(m.member_id, m.instance_id, m.metadata(g.protocol_name))
                            for m in g.members.values())
        return JoinAnswer(KafkaError.NONE, member.member_id, g.generation_id, g.protocol_type,
                          g.protocol_name, g.leader_id if leader_id is None else leader_id,
                          members)

    # --- SyncGroup -----------------------------------------------------------------

    def sync(self, token: object, group: str, generation_id: int, member_id: str,
             group_instance_id: str | None, protocol_type: str | None,
             protocol_name: str | None, assignments: list[tuple[str, bytes]], now_ms: int, *,
             client_key: str = "") -> list[Reply]:
        """SyncGroup. ``protocol_type`` and ``protocol_name`` are None before v5.
        Followers send no assignments; the leader's answer every held sync."""
        _check_token(token)
        out: list[Reply] = []
        g = self._groups.get(group)
        error = _refuse_sync(group, g, generation_id, member_id, group_instance_id,
                             protocol_type, protocol_name, client_key)
        if error is not KafkaError.NONE:
            out.append((token, SyncAnswer(error)))
            return out
        member = g.members[member_id]
        self._synced(g, member_id)
        if g.state is GroupState.STABLE:
            out.append((token, SyncAnswer(KafkaError.NONE, g.protocol_type, g.protocol_name,
                                          member.assignment)))
            return out
        if member.sync_token is not None:   # superseded: answered, not dropped
            self._answer_sync(member, SyncAnswer(KafkaError.REBALANCE_IN_PROGRESS), out)
        member.sync_token = token
        self._held += 1
        if member_id == g.leader_id:
            self._leader_synced(g, dict(assignments), now_ms, out)
        return out

    def _leader_synced(self, g: _Group, assignments: dict[str, bytes], now_ms: int,
                       out: list[Reply]) -> None:
        """The leader's assignments: every member's (empty if it has none), then Stable."""
        kept = {member_id: assignments.get(member_id, b"") for member_id in g.members}
        total_bytes = sum(len(a) for a in kept.values())
        added_bytes = total_bytes - sum(len(m.assignment) for m in g.members.values())
        if total_bytes > limits.CLASSIC_GROUP_ASSIGNMENT_BYTES_MAX or \
                self._bytes + added_bytes > limits.CLASSIC_GROUP_BYTES_PER_SHARD_MAX:
            log.warning("refused the assignments of classic group %r generation %d: %d bytes "
                        "(CLASSIC_GROUP_ASSIGNMENT_BYTES_MAX %d), the shard's classic groups "
                        "hold %d (CLASSIC_GROUP_BYTES_PER_SHARD_MAX %d)", g.name,
                        g.generation_id, total_bytes, limits.CLASSIC_GROUP_ASSIGNMENT_BYTES_MAX,
                        self._bytes, limits.CLASSIC_GROUP_BYTES_PER_SHARD_MAX)
            # As Kafka when the group's record is too large for its log: all rejoin.
            self._propagate_assignment(g, {}, KafkaError.UNKNOWN_SERVER_ERROR, now_ms, out)
            self._prepare_rebalance(g, now_ms, out)
            return
        self._propagate_assignment(g, kept, KafkaError.NONE, now_ms, out)
        _transition(g, GroupState.STABLE)

    def _propagate_assignment(self, g: _Group, assignments: dict[str, bytes],
                              error: KafkaError, now_ms: int, out: list[Reply]) -> None:
        """Set every member's assignment and answer the held syncs with it."""
        ok = error is KafkaError.NONE
        for member in g.members.values():
            new = assignments.get(member.member_id, b"")
            self._bytes += len(new) - len(member.assignment)
            member.assignment = new
            if member.sync_token is not None:
                self._answer_sync(member, SyncAnswer(
                    error, g.protocol_type if ok else None, g.protocol_name if ok else None,
                    new), out)
                # Its session restarts: it may have waited for the leader all along.
                self._deadlines.set(("session", g.name, member.member_id),
                                    now_ms + member.session_timeout_ms)

    def _synced(self, g: _Group, member_id: str) -> None:
        g.pending_sync.discard(member_id)
        if not g.pending_sync:
            self._deadlines.discard(("sync", g.name))

    # --- Heartbeat and LeaveGroup ------------------------------------------------------

    def heartbeat(self, token: object, group: str, generation_id: int, member_id: str,
                  group_instance_id: str | None, now_ms: int, *,
                  client_key: str = "") -> list[Reply]:
        """Heartbeat: keeps the member's session; REBALANCE_IN_PROGRESS asks it to rejoin."""
        _check_token(token)
        g = self._groups.get(group)
        error = KafkaError.UNKNOWN_MEMBER_ID if _valid_group_name(group) else \
            KafkaError.INVALID_GROUP_ID
        if g is not None and g.members:
            error = _validate_member(g, member_id, group_instance_id, client_key)
            if error is KafkaError.NONE and generation_id != g.generation_id:
                error = KafkaError.ILLEGAL_GENERATION
            if error is KafkaError.NONE:
                member = g.members[member_id]
                self._deadlines.set(("session", group, member_id),
                                    now_ms + member.session_timeout_ms)
                if g.state is GroupState.PREPARING_REBALANCE:
                    error = KafkaError.REBALANCE_IN_PROGRESS
        return [(token, HeartbeatAnswer(error))]

    def leave(self, token: object, group: str, members: list[tuple[str, str | None]],
              now_ms: int, *, client_key: str = "") -> list[Reply]:
        """LeaveGroup: (member id, group instance id) pairs (v3+ batches; before v3 one
        member id). An empty member id with an instance id removes that static member."""
        _check_token(token)
        out: list[Reply] = []
        g = self._groups.get(group)
        if g is None:
            error = KafkaError.UNKNOWN_MEMBER_ID if _valid_group_name(group) else \
                KafkaError.INVALID_GROUP_ID
            left = tuple(LeftMember(m, i, error) for m, i in members)
            out.append((token, LeaveAnswer(error, left)))
            return out
        left = tuple(LeftMember(m, i, self._leave_one(g, m, i, client_key, now_ms, out))
                     for m, i in members)
        self._maybe_forget(g)
        out.append((token, LeaveAnswer(KafkaError.NONE, left)))
        return out

    def _leave_one(self, g: _Group, member_id: str, instance_id: str | None, client_key: str,
                   now_ms: int, out: list[Reply]) -> KafkaError:
        if not member_id:   # an administrator removing a static member
            member_id = g.static.get(instance_id, "") if instance_id is not None else ""
            member = g.members.get(member_id)
            if member is None or member.client_key != client_key:
                return KafkaError.UNKNOWN_MEMBER_ID
        elif member_id in g.pending:
            if g.pending[member_id] != client_key:
                return KafkaError.UNKNOWN_MEMBER_ID
            self._forget_pending(g, member_id)
            if g.state is GroupState.PREPARING_REBALANCE and g.all_joined():
                self._complete_join(g, now_ms, out)
            return KafkaError.NONE
        else:
            error = _validate_member(g, member_id, instance_id, client_key)
            if error is not KafkaError.NONE:
                return error
        self._remove_member_and_rebalance(g, g.members[member_id], now_ms, out)
        return KafkaError.NONE

    # --- Removing members ------------------------------------------------------------

    def _remove_member_and_rebalance(self, g: _Group, member: _Member, now_ms: int,
                                     out: list[Reply]) -> None:
        self._remove_member(g, member, out)
        if g.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(g, now_ms, out)
        elif g.state is GroupState.PREPARING_REBALANCE and g.all_joined():
            self._complete_join(g, now_ms, out)

    def _remove_member(self, g: _Group, member: _Member, out: list[Reply]) -> None:
        """Out of the group; its held request is answered (it is told to join again)."""
        if member.join_token is not None:
            self._answer_join(g, member, JoinAnswer(KafkaError.UNKNOWN_MEMBER_ID, ""), out)
        if member.sync_token is not None:
            self._answer_sync(member, SyncAnswer(KafkaError.UNKNOWN_MEMBER_ID), out)
        del g.members[member.member_id]
        _count_protocols(g, member.protocols, -1)
        self._count_member(g, member.client_key, -1)
        self._bytes -= _protocol_bytes(member.protocol_type, member.protocols) + \
            len(member.assignment)
        if member.instance_id is not None:
            del g.static[member.instance_id]
        if g.leader_id == member.member_id:
            g.leader_id = next(iter(g.members), None)
        g.pending_sync.discard(member.member_id)
        self._deadlines.discard(("session", g.name, member.member_id))

    def _forget_pending(self, g: _Group, member_id: str) -> None:
        self._count_member(g, g.pending.pop(member_id), -1)
        self._deadlines.discard(("pending", g.name, member_id))

    def _count_member(self, g: _Group, client_key: str, step: int) -> None:
        self._member_count += step
        g.members_per_key[client_key] += step
        if not g.members_per_key[client_key]:
            del g.members_per_key[client_key]

    def _maybe_forget(self, g: _Group) -> None:
        """A group without members or pending ids leaves memory (Dead)."""
        if g.state is GroupState.EMPTY and not g.members and not g.pending:
            _transition(g, GroupState.DEAD)
            del self._groups[g.name]
            for kind in ("join", "sync"):
                self._deadlines.discard((kind, g.name))

    # --- Answers -----------------------------------------------------------------------

    def _answer_join(self, g: _Group, member: _Member, answer: JoinAnswer,
                     out: list[Reply]) -> None:
        out.append((member.join_token, answer))
        member.join_token = None
        g.awaiting_join -= 1
        self._held -= 1

    def _answer_sync(self, member: _Member, answer: SyncAnswer, out: list[Reply]) -> None:
        out.append((member.sync_token, answer))
        member.sync_token = None
        self._held -= 1

    # --- Deadlines (the loop) ------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Reply]:
        """Handle the deadlines before ``now_ms`` (up to CLASSIC_DEADLINES_PER_TICK_MAX);
        returns the answers they released."""
        out: list[Reply] = []
        for _ in range(limits.CLASSIC_DEADLINES_PER_TICK_MAX):
            # One at a time: handling one may discard the next (a member removed).
            due = self._deadlines.pop_due(now_ms, 1)
            if not due:
                break
            key = due[0]
            g = self._groups.get(key[1])
            if g is None:
                raise AssertionError(f"a deadline {key!r} of a group this shard forgot")
            kind = key[0]
            if kind == "join":
                self._join_deadline(g, now_ms, out)
            elif kind == "sync":
                self._sync_deadline(g, now_ms, out)
            elif kind == "session":
                self._session_deadline(g, g.members[key[2]], now_ms, out)
            else:
                self._forget_pending(g, key[2])
                if g.state is GroupState.PREPARING_REBALANCE and g.all_joined():
                    self._complete_join(g, now_ms, out)
            self._maybe_forget(g)
        return out

    def next_deadline_ms(self) -> float | None:
        """When ``tick`` has work next (it handles deadlines strictly before its
        ``now_ms``), or None."""
        return self._deadlines.next_deadline()

    def _session_deadline(self, g: _Group, member: _Member, now_ms: int,
                          out: list[Reply]) -> None:
        if not member.is_new and (member.join_token is not None or member.sync_token is not None):
            # Waiting for the group counts as alive (Kafka's hasSatisfiedHeartbeat).
            self._deadlines.set(("session", g.name, member.member_id),
                                now_ms + member.session_timeout_ms)
            return
        log.info("classic group %r: member %s silent for %d ms, removed", g.name,
                 member.member_id, member.session_timeout_ms)
        self._remove_member_and_rebalance(g, member, now_ms, out)

    def _sync_deadline(self, g: _Group, now_ms: int, out: list[Reply]) -> None:
        """Members that did not sync within the rebalance timeout are removed."""
        if not g.pending_sync:
            return
        log.info("classic group %r generation %d: %d members did not sync within %d ms, removed",
                 g.name, g.generation_id, len(g.pending_sync), g.rebalance_timeout_ms())
        for member_id in list(g.pending_sync):
            self._remove_member(g, g.members[member_id], out)
        self._prepare_rebalance(g, now_ms, out)

    # --- Offsets, inspection, hand-over ---------------------------------------------------

    def check_commit(self, group: str, member_id: str, generation_id: int,
                     group_instance_id: str | None, *, client_key: str = "") -> KafkaError:
        """May this OffsetCommit be written? Generation -1 without a member is an
        administrator's or a simple consumer's commit: allowed while the group has no
        members."""
        if not _valid_group_name(group):
            return KafkaError.INVALID_GROUP_ID
        g = self._groups.get(group)
        if g is None or not g.members:
            return KafkaError.NONE if generation_id < 0 else KafkaError.ILLEGAL_GENERATION
        if generation_id < 0 and not member_id and group_instance_id is None:
            return KafkaError.UNKNOWN_MEMBER_ID
        error = _validate_member(g, member_id, group_instance_id, client_key)
        if error is not KafkaError.NONE:
            return error
        if generation_id != g.generation_id:
            return KafkaError.ILLEGAL_GENERATION
        if g.state is GroupState.COMPLETING_REBALANCE:
            return KafkaError.REBALANCE_IN_PROGRESS
        return KafkaError.NONE

    def describe(self, group: str) -> GroupDescription:
        """DescribeGroups: a group this shard does not have is Dead, as in Kafka."""
        g = self._groups.get(group)
        if g is None:
            return GroupDescription(group, GroupState.DEAD, "", "", NO_GENERATION, "", ())
        stable = g.state is GroupState.STABLE
        members = tuple(MemberDescription(
            m.member_id, m.instance_id, m.client_id, m.client_host,
            m.metadata(g.protocol_name) if stable else b"", m.assignment if stable else b"")
            for m in g.members.values())
        return GroupDescription(g.name, g.state, g.protocol_type or "",
                                (g.protocol_name or "") if stable else "", g.generation_id,
                                g.leader_id or "", members)

    def list_groups(self) -> list[tuple[str, str, GroupState]]:
        """ListGroups: (name, protocol type, state) of every group, by name."""
        return sorted((g.name, g.protocol_type or "", g.state) for g in self._groups.values())

    def subscriptions(self, group: str) -> tuple[str, list[bytes] | None] | None:
        """What deleting some of the group's offsets needs (OffsetDelete): its protocol
        type and each member's metadata for the group's protocol, the list None while
        no protocol is chosen yet (its first rebalance). None if the group has no
        members here (a group without members is forgotten at once)."""
        g = self._groups.get(group)
        if g is None or not g.members:
            return None
        if g.protocol_name is None:
            return g.protocol_type or "", None
        return g.protocol_type or "", [m.metadata(g.protocol_name) for m in g.members.values()]

    def has_group(self, group: str) -> bool:
        return group in self._groups

    def held_count(self) -> int:
        """Requests held for an answer (at most one per member)."""
        return self._held

    def member_count(self) -> int:
        """Members and pending member ids of every group."""
        return self._member_count

    def close_group(self, group: str) -> list[Reply]:
        """Stop coordinating one group (it moved to another shard): its held requests are
        answered NOT_COORDINATOR and its members rejoin at the new coordinator."""
        g = self._groups.pop(group, None)
        if g is None:
            return []
        out: list[Reply] = []
        for member in g.members.values():
            if member.join_token is not None:
                self._answer_join(g, member, JoinAnswer(KafkaError.NOT_COORDINATOR,
                                                        member.member_id), out)
            if member.sync_token is not None:
                self._answer_sync(member, SyncAnswer(KafkaError.NOT_COORDINATOR), out)
            self._deadlines.discard(("session", group, member.member_id))
            self._member_count -= 1
            self._bytes -= _protocol_bytes(member.protocol_type, member.protocols) + \
                len(member.assignment)
        for member_id in g.pending:
            self._deadlines.discard(("pending", group, member_id))
            self._member_count -= 1
        for kind in ("join", "sync"):
            self._deadlines.discard((kind, group))
        _transition(g, GroupState.DEAD)
        return out

    def close_all(self) -> list[Reply]:
        """Stop coordinating every group (the shard hands over or stops)."""
        out: list[Reply] = []
        for group in list(self._groups):
            out.extend(self.close_group(group))
        return out


@dataclass(frozen=True)
class _JoinRequest:
    token: object
    member_id: str
    instance_id: str | None
    protocol_type: str
    protocols: tuple[Protocol, ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str
    client_key: str
    require_known_member_id: bool
    now_ms: int


def _check_token(token: object) -> None:
    if token is None:
        raise AssertionError("a reply token must not be None (None means nothing is held)")


def _valid_group_name(group: str) -> bool:
    try:
        validate_group_name(group)
    except InvalidGroupError:
        return False
    return True


def _rebalance_timeout_ms(rebalance_timeout_ms: int, session_timeout_ms: int) -> int:
    if rebalance_timeout_ms <= 0:   # JoinGroup v0 has none: the session timeout
        return session_timeout_ms
    return min(rebalance_timeout_ms, limits.CLASSIC_REBALANCE_TIMEOUT_MS_MAX)


def _supports(g: _Group, protocol_type: str, protocols: tuple[Protocol, ...]) -> bool:
    """The member's protocol type is the group's and it shares a protocol with every
    member (any non-empty one for a group without members)."""
    if not g.members:
        return bool(protocol_type) and bool(protocols)
    return protocol_type == g.protocol_type and any(
        g.supported.get(name, 0) == len(g.members) for name, _ in protocols)


def _select_protocol(g: _Group) -> str:
    """Each member votes for its first protocol that all members support; most votes
    win (ties: the protocol voted for first, in joining order)."""
    candidates = {name for name, count in g.supported.items() if count == len(g.members)}
    votes = Counter(m.vote(candidates) for m in g.members.values())
    return votes.most_common(1)[0][0]


def _count_protocols(g: _Group, protocols: tuple[Protocol, ...], step: int) -> None:
    for name in {name for name, _ in protocols}:
        g.supported[name] += step
        if not g.supported[name]:
            del g.supported[name]


def _validate_member(g: _Group, member_id: str, instance_id: str | None,
                     client_key: str) -> KafkaError:
    """Kafka's validateMember, and the member must be this client key's."""
    if instance_id is not None:
        existing = g.static.get(instance_id)
        if existing is None:
            return KafkaError.UNKNOWN_MEMBER_ID
        if existing != member_id:
            return KafkaError.FENCED_INSTANCE_ID
    member = g.members.get(member_id)
    if member is None or member.client_key != client_key:
        return KafkaError.UNKNOWN_MEMBER_ID
    return KafkaError.NONE


def _refuse_sync(name: str, g: _Group | None, generation_id: int, member_id: str,
                 instance_id: str | None, protocol_type: str | None, protocol_name: str | None,
                 client_key: str) -> KafkaError:
    if not _valid_group_name(name):
        return KafkaError.INVALID_GROUP_ID
    if g is None or not g.members:
        return KafkaError.UNKNOWN_MEMBER_ID
    error = _validate_member(g, member_id, instance_id, client_key)
    if error is not KafkaError.NONE:
        return error
    if generation_id != g.generation_id:
        return KafkaError.ILLEGAL_GENERATION
    if _inconsistent(protocol_type, g.protocol_type) or \
            _inconsistent(protocol_name, g.protocol_name):
        return KafkaError.INCONSISTENT_GROUP_PROTOCOL
    if g.state is GroupState.PREPARING_REBALANCE:
        return KafkaError.REBALANCE_IN_PROGRESS
    return KafkaError.NONE


def _inconsistent(requested: str | None, of_group: str | None) -> bool:
    return requested is not None and of_group is not None and requested != of_group


def _transition(g: _Group, state: GroupState) -> None:
    g.previous_state, g.state = g.state, state
