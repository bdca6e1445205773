"""Consumer group coordination, server side, in the style of Kafka's KIP-848.

Runs in the shard actor that the group's name hashes to, on its loop thread
only (no locks; the clock is passed in). Each group is coordinated by exactly
one shard, so coordination scales with the shards.

Protocol. A member sends heartbeats carrying its subscription and the
partitions it owns right now. The coordinator keeps a target assignment,
recomputed by the group's assignor whenever membership, subscriptions or
partition counts change (the group epoch then increases). Each heartbeat is
answered with the partitions the member may own now: its target partitions
that no other member still owns. A partition moving from A to B is therefore
first left out of A's answer (A revokes it, commits, and reports it no longer
owned), and only then included in B's answer. Members whose partitions do
not move never stop. A member silent for its ``session_timeout_ms`` is
removed and its partitions are free at once.

Member epochs. A member's epoch is bumped every time the partitions it is told
to own change. A heartbeat with an epoch above the member's is fenced
(staleMemberEpoch); one from an unknown member id (expired, or the
coordinator restarted) is answered unknownMemberId; the client rejoins.

Committed offsets go to the OffsetStore and survive restarts; membership is
soft state that members rebuild with their next heartbeats.

Moving a group. When shards are added or removed, a group whose name now
hashes to another shard is handed over: ``hand_over`` returns its committed
offsets and settings, and its members with their assignments, and marks it
moved in the store (durably), so this shard answers "unavailable, retry" for
it from then on; the new coordinator ``adopt``s the state before any router
sends it the group. Members carry on there with their member ids, epochs and
partitions, and no partition is revoked. (Were the coordinator to restart in
between, members would rejoin, as after any coordinator restart.)
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from plinth import limits, protocol
from plinth.errors import (GroupNotEmptyError, InvalidConfigError, InvalidGroupError, NotOwnerError,
                           StaleMemberEpochError, UnavailableError, UnknownMemberIdError)
from plinth.shards import assignors
from plinth.shards.offset_store import OffsetStore

TopicPartition = tuple[str, int]

_MOVED_SETTING = "moved"   # "1" while another shard coordinates the group
_GROUP_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class Member:
    member_id: str
    topics: set[str]
    session_timeout_ms: int
    last_seen_s: float
    epoch: int = 0
    owned: set[TopicPartition] = field(default_factory=set)      # as it last reported
    assigned: set[TopicPartition] = field(default_factory=set)   # as it was last told


@dataclass
class Group:
    name: str
    assignor: str
    epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, set[TopicPartition]] = field(default_factory=dict)


@dataclass
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: set[TopicPartition]


def heartbeat_interval_ms_for(session_timeout_ms: int) -> int:
    """A member heartbeats five times per session timeout, within bounds."""
    return max(limits.HEARTBEAT_INTERVAL_MS_MIN,
               min(limits.HEARTBEAT_INTERVAL_MS_MAX, session_timeout_ms // 5))


class GroupCoordinator:
    def __init__(self, store: OffsetStore):
        self._store = store
        self._groups: dict[str, Group] = {}
        self._partition_counts: dict[str, int] = {}

    # --- Topics ------------------------------------------------------------------

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """The controller's view of every topic; retargets groups whose topics changed."""
        changed = {t for t in set(counts) | set(self._partition_counts)
                   if counts.get(t) != self._partition_counts.get(t)}
        self._partition_counts = dict(counts)
        for group in self._groups.values():
            if any(changed & m.topics for m in group.members.values()):
                self._retarget(group)

    # --- Membership ----------------------------------------------------------------

    def heartbeat(self, name: str, member_id: str, member_epoch: int, topics: list[str],
                  owned: set[TopicPartition], session_timeout_ms: int, assignor: str,
                  now_s: float) -> HeartbeatResult:
        group = self._group(name, assignor)
        interval_ms = heartbeat_interval_ms_for(session_timeout_ms)
        if member_epoch == protocol.LEAVE_EPOCH:
            if group.members.pop(member_id, None) is not None:
                self._retarget(group)
            return HeartbeatResult(member_id, protocol.LEAVE_EPOCH, interval_ms, set())
        member = self._member(group, member_id, member_epoch, topics, session_timeout_ms, now_s)
        member.last_seen_s = now_s
        member.session_timeout_ms = session_timeout_ms
        member.owned = {tp for tp in owned if tp in member.assigned or tp in member.owned}
        if topics and set(topics) != member.topics:
            member.topics = set(topics)
            self._retarget(group)
        answer = self._answer(group, member)   # may bump the member's epoch
        return HeartbeatResult(member.member_id, member.epoch, interval_ms, answer)

    def _member(self, group: Group, member_id: str, member_epoch: int, topics: list[str],
                session_timeout_ms: int, now_s: float) -> Member:
        if not member_id:
            if len(group.members) >= limits.GROUP_MEMBERS_MAX:
                raise InvalidConfigError(f"group {group.name!r} already has "
                                         f"{limits.GROUP_MEMBERS_MAX} members, the limit")
            member = Member(uuid.uuid4().hex, set(topics), session_timeout_ms, now_s)
            group.members[member.member_id] = member
            self._retarget(group)
            return member
        member = group.members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(
                f"member {member_id} is not in group {group.name!r} (it may have missed "
                f"heartbeats for its session timeout); rejoin")
        if member_epoch > member.epoch:
            raise StaleMemberEpochError(
                f"member {member_id} of group {group.name!r} sent epoch {member_epoch}, "
                f"but its epoch is {member.epoch}; rejoin")
        return member

    def _answer(self, group: Group, member: Member) -> set[TopicPartition]:
        """The member's target partitions that nobody else still owns."""
        owned_by_others = set()
        for other in group.members.values():
            if other is not member:
                owned_by_others |= other.owned
        answer = group.target.get(member.member_id, set()) - owned_by_others
        if answer != member.assigned:
            member.assigned = answer
            member.epoch += 1
        return answer

    def _retarget(self, group: Group) -> None:
        group.epoch += 1
        subscriptions = {m.member_id: m.topics for m in group.members.values()}
        group.target = assignors.assign(group.assignor, subscriptions, self._partition_counts,
                                        group.target)

    def expire(self, now_s: float) -> list[tuple[str, str]]:
        """Remove members silent for longer than their session timeout; returns (group, member)."""
        removed = []
        for group in self._groups.values():
            dead = [m for m in group.members.values()
                    if now_s - m.last_seen_s > m.session_timeout_ms / 1000]
            for member in dead:
                del group.members[member.member_id]
                removed.append((group.name, member.member_id))
            if dead:
                self._retarget(group)
        return removed

    def next_expiry_s(self) -> float | None:
        deadlines = [m.last_seen_s + m.session_timeout_ms / 1000
                     for g in self._groups.values() for m in g.members.values()]
        return min(deadlines) if deadlines else None

    def _group(self, name: str, assignor: str = "") -> Group:
        group = self._groups.get(name)
        if group is not None:
            return group
        validate_group_name(name)
        self._check_not_moved(name)
        stored = self._store.setting(name, "assignor")
        chosen = stored or assignor or assignors.DEFAULT_ASSIGNOR
        if chosen not in assignors.ASSIGNORS:
            raise InvalidConfigError(f"assignor {chosen!r} for group {name!r} is not one of "
                                     f"{', '.join(assignors.ASSIGNORS)}")
        if stored is None:
            self._store.set_setting(name, "assignor", chosen)
        group = self._groups[name] = Group(name, chosen)
        return group

    # --- Offsets -------------------------------------------------------------------

    def commit(self, name: str, member_id: str, member_epoch: int,
               offsets: dict[TopicPartition, int]) -> None:
        """Store offsets durably; only for partitions the member owns (or an empty group)."""
        group = self._group(name)
        if member_id:
            member = group.members.get(member_id)
            if member is None:
                raise UnknownMemberIdError(f"member {member_id} is not in group {name!r}; rejoin")
            allowed = member.assigned | member.owned
            foreign = sorted(set(offsets) - allowed)
            if foreign:
                topic, partition = foreign[0]
                raise NotOwnerError(
                    f"member {member_id} (epoch {member_epoch}) of group {name!r} does not own "
                    f"{topic}-{partition}; it owns {len(allowed)} partitions")
        elif group.members:
            raise GroupNotEmptyError(
                f"group {name!r} has {len(group.members)} members; commit as one of them")
        self._store.commit(name, offsets)

    def reset_offsets(self, name: str, offsets: dict[TopicPartition, int]) -> None:
        group = self._group(name)
        if group.members:
            raise GroupNotEmptyError(
                f"group {name!r} has {len(group.members)} active members; stop them before "
                f"resetting its offsets")
        self._store.commit(name, offsets)

    def committed(self, name: str) -> dict[TopicPartition, int]:
        validate_group_name(name)
        self._check_not_moved(name)
        return self._store.offsets(name)

    # --- Moving groups between shards ------------------------------------------------

    def hand_over(self, name: str) -> dict:
        """Stop coordinating a group; returns its state for the new coordinator:
        {"offsets": [[topic, partition, offset], ...], "settings": {name: value},
        "group": its members and assignments (a Group), or None if it has none}."""
        self._check_not_moved(name)
        state = {"offsets": [[t, p, o] for (t, p), o in self._store.offsets(name).items()],
                 "settings": self._store.settings(name), "group": self._groups.pop(name, None)}
        self._store.set_setting(name, _MOVED_SETTING, "1")
        return state

    def adopt(self, name: str, state: dict, now_s: float) -> None:
        """Coordinate a group handed over by another shard (its offsets and settings
        durable before this returns); its members' sessions start again at ``now_s``."""
        validate_group_name(name)
        self._store.commit(name, {(t, p): o for t, p, o in state["offsets"]})
        for setting, value in state["settings"].items():
            if setting != _MOVED_SETTING:
                self._store.set_setting(name, setting, value)
        self._store.set_setting(name, _MOVED_SETTING, "0")
        group = state.get("group")
        if group is None:
            self._groups.pop(name, None)
            return
        for member in group.members.values():
            member.last_seen_s = now_s   # the old shard's clock means nothing here
        self._groups[name] = group

    def _check_not_moved(self, name: str) -> None:
        if self._store.setting(name, _MOVED_SETTING) == "1":
            raise UnavailableError(f"group {name!r} moved to another shard; retry (the routers "
                                   f"are learning its new coordinator)")

    # --- Inspection ------------------------------------------------------------------

    def describe(self, name: str) -> Group | None:
        validate_group_name(name)
        self._check_not_moved(name)
        group = self._groups.get(name)
        if group is None and name in self._store.groups():
            group = Group(name, self._store.setting(name, "assignor") or assignors.DEFAULT_ASSIGNOR)
        return group

    def group_names(self) -> list[str]:
        """The groups this shard coordinates (not those it handed over)."""
        return sorted(name for name in set(self._groups) | self._store.groups()
                      if self._store.setting(name, _MOVED_SETTING) != "1")


def validate_group_name(name: str) -> None:
    if not name or len(name.encode()) > limits.GROUP_NAME_BYTES_MAX or not _GROUP_NAME.match(name):
        raise InvalidGroupError(
            f"group name {name!r} must be 1 to {limits.GROUP_NAME_BYTES_MAX} bytes of ASCII "
            f"letters, digits, '.', '_' and '-'")
