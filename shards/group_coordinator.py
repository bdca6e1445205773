"""Consumer group coordination, server side, in the style of Kafka's KIP-848.

Runs in the shard actor that the group's name hashes to, on its loop thread
only (no locks; the clock is passed in). Each group is coordinated by exactly
one shard, so coordination scales with the shards.

Protocol. A member sends heartbeats carrying its subscription and the
partitions it owns right now. The coordinator keeps a target assignment,
recomputed by the group's assignor whenever membership, subscriptions or
partition counts change (the group epoch then increases). Each heartbeat is
answered with the partitions the member may own now: its target partitions
that no other member may still own. A member may own what it reports, and
every partition it was told since, reported or not (the answer may be on its
way, or being applied while its next heartbeat travels). A partition moving
from A to B is therefore first left out of A's answer (A revokes it, commits,
and reports it no longer owned), and only then included in B's answer (B,
waiting for it, is asked back after the shortest heartbeat interval); a report
without it that comes before A's answer left it out frees nothing.
Members whose partitions do not move never stop. A member silent for its ``session_timeout_ms`` is
removed and its partitions are free at once.

Whose member it is. A member belongs to the client key that joined it (the
CurveZMQ public key the router forwards; empty without keys) and is known by
its member id, 128 random bits the coordinator hands out only in the answer
to the join. A heartbeat, leave or commit naming a member id that is not in
the group, or that another client key joined, is refused with
unknownMemberId, and the member stays. Member epochs fence the rest: a
member's epoch is bumped every time the partitions it is told to own change,
and a heartbeat must carry the current epoch, or the one before it if the
answer that bumped it was lost (Kafka's rule: then the member may own only
partitions it is still assigned); anything else is refused with
staleMemberEpoch and changes nothing. A member told either rejoins.

Bounds. GROUPS_PER_SHARD_MAX groups (tooManyGroups), GROUP_MEMBERS_MAX
members per group, GROUP_MEMBERS_PER_CLIENT_KEY_MAX of one client key in one
group (keyless clients excepted: they are one principal) and
GROUP_MEMBERS_PER_SHARD_MAX in all (groupMaxSizeReached). A group lives in
memory only while it has members; then its committed offsets stay durable
and are deleted OFFSETS_RETENTION_MS after its last member left or its last
commit, whichever is later (Kafka's offsets.retention.minutes); a group with
neither members nor offsets leaves no trace. Sessions and offset expiries
are kept in heaps (deadlines.py), so a loop round costs nothing per idle
group or member.

Assignment work. A change marks the group's target stale and queues it; the
assignor runs in steps (assignors.assign_steps). A heartbeat runs steps of
its own group's assignment while the round's budget (GROUP_ASSIGNMENT_ROUND_MS)
lasts, so a small group is answered with its new target at once; the loop's
timer (``run_assignments``) shares the rest among the queued groups in turn.
A heartbeat answered while its group's assignment is still running is
answered from the previous target and asked to come back after the shortest
heartbeat interval.

Committed offsets go to the OffsetStore and survive restarts; membership is
soft state that members rebuild with their next heartbeats. An administrator
deletes some of a group's offsets with ``delete_offsets`` (Kafka's OffsetDelete),
which keeps those of topics its members subscribe to.

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

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field

from plinth import limits, protocol
from plinth.counted import counted
from plinth.topics import validate_group_name  # noqa: F401 (classic_group's import)
from plinth.errors import (BrokerError, GroupMaxSizeReachedError, GroupNotEmptyError,
                           GroupSubscribedToTopicError, InvalidConfigError, InvalidGroupError,
                           NotOwnerError, OffsetMetadataTooLargeError, OffsetOutOfRangeError,
                           PartitionOutOfRangeError, StaleMemberEpochError, TooManyGroupsError,
                           UnavailableError, UnknownGroupError, UnknownMemberIdError,
                           UnknownTopicError)
from plinth.shards import assignors
from plinth.shards.deadlines import Deadlines
from plinth.shards.offset_store import OffsetStore

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]

_MOVED_SETTING = "moved"   # "1" while another shard coordinates the group
_ASSIGNOR_SETTING = "assignor"


@dataclass
class Member:
    member_id: str
    client_key: str                  # who joined it; "" without CurveZMQ
    topics: set[str]                 # replaced, never changed in place (assignments read it)
    session_timeout_ms: int
    last_seen_s: float
    epoch: int = 0
    previous_epoch: int = 0          # the epoch before the last bump (a lost answer's)
    # What it may own: as it last reported, and what it was told since (counted in claims).
    owned: set[TopicPartition] = field(default_factory=set)
    assigned: set[TopicPartition] = field(default_factory=set)   # as it was last told

    @property
    def session_end_s(self) -> float:
        return self.last_seen_s + self.session_timeout_ms / 1000


@dataclass
class Group:
    name: str
    assignor: str
    epoch: int = 0            # bumped by every change the target depends on
    target_epoch: int = 0     # the epoch the target was computed for
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, set[TopicPartition]] = field(default_factory=dict)
    # Counts without zeros (_count_up, _count_down):
    # partition -> members that may own it
    claims: Counter = field(default_factory=Counter)
    subscribed: Counter = field(default_factory=Counter)        # topic -> members subscribing
    members_per_key: Counter = field(default_factory=Counter)   # client key -> members


@dataclass
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: set[TopicPartition]


@dataclass
class _AssignmentRun:
    """A group's assignment in progress: computed for ``epoch`` with ``counts``."""
    epoch: int
    counts: Mapping[str, int]
    steps: Generator


def heartbeat_interval_ms_for(session_timeout_ms: int) -> int:
    """A member heartbeats five times per session timeout, within bounds."""
    return max(limits.HEARTBEAT_INTERVAL_MS_MIN,
               min(limits.HEARTBEAT_INTERVAL_MS_MAX, session_timeout_ms // 5))


class GroupCoordinator:
    """The groups one shard coordinates. Loop thread only, every method.

    ``work_clock_s`` measures the assignment work against its budget (tests
    pass a fake one); the store's clock stamps records and expires offsets.
    """

    def __init__(self, store: OffsetStore,
                 work_clock_s: Callable[[], float] = time.perf_counter):
        self._store = store
        self._groups: dict[str, Group] = {}          # groups with members
        self._partition_counts: dict[str, int] = {}
        self._unstored: set[str] = set()             # groups with members and nothing stored
        self._member_count = 0
        self._sessions = Deadlines(limits.GROUP_DEADLINE_HEAP_ENTRIES_MIN)    # (group, member)
        self._offsets_expiry = Deadlines(limits.GROUP_DEADLINE_HEAP_ENTRIES_MIN)  # group, wall ms
        # Membership is not stored: after a restart every group looks empty. Its members
        # rejoin within their session timeout, so no group's offsets expire before that,
        # though a group with members may not have committed for the whole retention.
        rejoined_ms = store.now_ms() + max(limits.SESSION_TIMEOUT_MS_MAX,
                                           limits.CLASSIC_SESSION_TIMEOUT_MS_MAX)
        for name in store.groups():
            self._offsets_expiry.set(name, max(
                rejoined_ms, store.written_ms(name) + limits.OFFSETS_RETENTION_MS))
        # Groups whose target is stale, in turn; the run is None until it starts.
        self._assigning: dict[str, _AssignmentRun | None] = {}
        self._work_clock_s = work_clock_s
        self._round_work_s = 0.0

    # --- Topics ------------------------------------------------------------------

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """The controller's view of every topic; retargets groups whose topics changed,
        and forgets the offsets of topics deleted since the last view."""
        changed = {t for t in set(counts) | set(self._partition_counts)
                   if counts.get(t) != self._partition_counts.get(t)}
        deleted = set(self._partition_counts) - set(counts)
        self._partition_counts = dict(counts)   # a new dict: running assignments keep theirs
        for group in self._groups.values():
            smaller, larger = sorted((changed, group.subscribed), key=len)
            if any(topic in larger for topic in smaller):
                self._retarget(group)
        if deleted:
            self._forget_offsets_of(deleted)

    def _forget_offsets_of(self, deleted_topics: set[str]) -> None:
        """Delete every group's committed offsets of these deleted topics (Kafka does, at
        a topic's deletion): a topic created again under the name is another topic, and
        its consumers must start from their reset policy, not from the old one's
        offsets. A group left with neither members nor offsets is deleted."""
        for name in sorted(self._store.groups()):
            gone = [tp for tp in self._store.offsets(name) if tp[0] in deleted_topics]
            if not gone:
                continue
            self._store.delete_offsets(name, gone)
            if name not in self._groups and not self._store.offsets(name):
                self._store.delete([name])
                self._offsets_expiry.discard(name)
            log.info("group %s: deleted its %d committed offsets of deleted topics %s", name,
                     len(gone), sorted({topic for topic, _ in gone}))

    # --- Membership ----------------------------------------------------------------

    def heartbeat(self, name: str, member_id: str, member_epoch: int, topics: list[str],
                  owned: set[TopicPartition], session_timeout_ms: int, assignor: str,
                  now_s: float, client_key: str = "") -> HeartbeatResult:
        interval_ms = heartbeat_interval_ms_for(session_timeout_ms)
        if member_epoch == protocol.LEAVE_EPOCH:
            group, member = self._own_member(name, member_id, client_key)
            self._remove_member(group, member)
            return HeartbeatResult(member_id, protocol.LEAVE_EPOCH, interval_ms, set())
        if member_id:
            group, member = self._own_member(name, member_id, client_key)
            _check_epoch(group, member, member_epoch, owned)
        else:
            group, member = self._join(name, assignor, topics, session_timeout_ms, now_s,
                                       client_key)
        member.last_seen_s = now_s
        member.session_timeout_ms = session_timeout_ms
        self._sessions.set((name, member.member_id), member.session_end_s)
        _report_owned(group, member, owned)
        if topics and set(topics) != member.topics:
            _count_down(group.subscribed, member.topics)
            member.topics = set(topics)
            _count_up(group.subscribed, member.topics)
            self._retarget(group)
        self._advance(group)
        answer = _answer(group, member)   # may bump the member's epoch
        # Come back soon while the target is being computed, or while partitions of it
        # wait for their old owners to report them revoked (they do at once, as told).
        if name in self._assigning or _withheld(group, member, answer):
            interval_ms = limits.HEARTBEAT_INTERVAL_MS_MIN
        return HeartbeatResult(member.member_id, member.epoch, interval_ms, answer)

    def _own_member(self, name: str, member_id: str, client_key: str) -> tuple[Group, Member]:
        """The member, if it is in the group and this client key joined it."""
        group = self._groups.get(name)
        member = group.members.get(member_id) if group is not None else None
        if member is None or member.client_key != client_key:
            validate_group_name(name)
            self._check_not_moved(name)
            raise UnknownMemberIdError(
                f"member {member_id} is not in group {name!r} for this client (it may have "
                f"missed heartbeats for its session timeout); rejoin")
        return group, member

    def _join(self, name: str, assignor: str, topics: list[str], session_timeout_ms: int,
              now_s: float, client_key: str) -> tuple[Group, Member]:
        group = self._groups.get(name)
        self._check_room(group, name, client_key)
        if group is None:
            group = self._new_group(name, assignor)
        member = Member(uuid.uuid4().hex, client_key, set(topics), session_timeout_ms, now_s)
        group.members[member.member_id] = member
        _count_up(group.subscribed, member.topics)
        _count_up(group.members_per_key, (client_key,))
        self._member_count += 1
        self._retarget(group)
        return group, member

    def _check_room(self, group: Group | None, name: str, client_key: str) -> None:
        if self._member_count >= limits.GROUP_MEMBERS_PER_SHARD_MAX:
            raise GroupMaxSizeReachedError(
                f"cannot join group {name!r}: this shard coordinates {self._member_count} "
                f"members, the limit (GROUP_MEMBERS_PER_SHARD_MAX "
                f"{limits.GROUP_MEMBERS_PER_SHARD_MAX})")
        if group is None:
            return
        if len(group.members) >= limits.GROUP_MEMBERS_MAX:
            raise GroupMaxSizeReachedError(
                f"group {name!r} already has {len(group.members)} members, the limit "
                f"(GROUP_MEMBERS_MAX {limits.GROUP_MEMBERS_MAX})")
        of_key = group.members_per_key.get(client_key, 0)
        if client_key and of_key >= limits.GROUP_MEMBERS_PER_CLIENT_KEY_MAX:
            raise GroupMaxSizeReachedError(
                f"client key {client_key[:8]}... already has {of_key} members in group "
                f"{name!r}, the limit per client key (GROUP_MEMBERS_PER_CLIENT_KEY_MAX "
                f"{limits.GROUP_MEMBERS_PER_CLIENT_KEY_MAX})")

    def _new_group(self, name: str, assignor: str) -> Group:
        validate_group_name(name)
        self._check_not_moved(name)
        chosen = self._store.setting(name, _ASSIGNOR_SETTING) or assignor or \
            assignors.DEFAULT_ASSIGNOR
        if chosen not in assignors.ASSIGNORS:
            raise InvalidConfigError(f"assignor {chosen!r} for group {name!r} is not one of "
                                     f"{', '.join(assignors.ASSIGNORS)}")
        if not self._store.has(name):
            self._check_group_room(name)
            self._unstored.add(name)
        self._offsets_expiry.discard(name)   # kept while it has members
        group = self._groups[name] = Group(name, chosen)
        return group

    def _check_group_room(self, name: str) -> None:
        """Room for one more group (one this shard neither keeps nor stores)."""
        count = self._store.group_count() + len(self._unstored)
        if count >= limits.GROUPS_PER_SHARD_MAX:
            raise TooManyGroupsError(
                f"cannot create group {name!r}: this shard coordinates {count} groups, the "
                f"limit (GROUPS_PER_SHARD_MAX {limits.GROUPS_PER_SHARD_MAX}); a group leaves "
                f"when it has no members and its committed offsets expire "
                f"({limits.OFFSETS_RETENTION_MS // 60_000} minutes after its last commit or "
                f"member)")

    def _remove_member(self, group: Group, member: Member) -> None:
        del group.members[member.member_id]
        _count_down(group.claims, member.owned)   # gone: it owns nothing, told or not
        member.owned = set()
        _count_down(group.subscribed, member.topics)
        _count_down(group.members_per_key, (member.client_key,))
        self._member_count -= 1
        self._sessions.discard((group.name, member.member_id))
        if group.members:
            self._retarget(group)
        else:
            self._forget(group)

    def _forget(self, group: Group) -> None:
        """A group without members leaves memory; its offsets, if any, expire later. One
        without offsets (they went with a deleted topic while it had members) is deleted
        from the store too, as a group with neither is at once: its stored assignor
        alone kept it listed, Empty, for the offsets' retention."""
        del self._groups[group.name]
        self._assigning.pop(group.name, None)
        self._unstored.discard(group.name)
        if not self._store.has(group.name):
            return
        if self._store.offsets(group.name) or \
                self._store.setting(group.name, _MOVED_SETTING) == "1":
            self._offsets_expiry.set(group.name,
                                     self._store.now_ms() + limits.OFFSETS_RETENTION_MS)
        else:
            self._store.delete([group.name])
            self._offsets_expiry.discard(group.name)

    # --- Timers (the loop) ----------------------------------------------------------

    def expire(self, now_s: float) -> list[tuple[str, str]]:
        """Remove members silent for longer than their session timeout, and delete
        expired offsets of empty groups (each up to its per-round bound); returns the
        removed (group, member)s."""
        removed = []
        for name, member_id in self._sessions.pop_due(
                now_s, limits.GROUP_MEMBERS_EXPIRED_PER_ROUND_MAX):
            group = self._groups[name]
            self._remove_member(group, group.members[member_id])
            removed.append((name, member_id))
        expired = self._offsets_expiry.pop_due(self._store.now_ms(),
                                               limits.GROUPS_DELETED_PER_ROUND_MAX)
        if expired:
            self._store.delete(expired)
            log.info("deleted the committed offsets of %d groups without members for %d "
                     "minutes", len(expired), limits.OFFSETS_RETENTION_MS // 60_000)
        return removed

    def next_expiry_s(self, now_s: float) -> float | None:
        """When the loop should next call ``expire`` or ``run_assignments``: now if work
        waits (assignments, offsets due), else when the next session ends."""
        expiry_ms = self._offsets_expiry.next_deadline()
        if self._assigning or (expiry_ms is not None and expiry_ms < self._store.now_ms()):
            return now_s
        return self._sessions.next_deadline()

    def run_assignments(self) -> None:
        """The loop's share of assignment work: queued groups in turn, a step each,
        while the round's budget lasts (at least one step); then a new round begins."""
        budget_s = limits.GROUP_ASSIGNMENT_ROUND_MS / 1000
        first = True
        while self._assigning and (first or self._round_work_s < budget_s):
            name = next(iter(self._assigning))
            self._assigning[name] = self._assigning.pop(name)   # to the back: in turn
            self._step(self._groups[name])
            first = False
        self._round_work_s = 0.0

    def assignment_pending(self) -> bool:
        return bool(self._assigning)

    # --- Assignment ----------------------------------------------------------------

    def _retarget(self, group: Group) -> None:
        group.epoch += 1
        if group.name not in self._assigning:
            self._assigning[group.name] = None

    def _advance(self, group: Group) -> None:
        """Steps of this group's assignment: at least one, more while the round's budget lasts."""
        budget_s = limits.GROUP_ASSIGNMENT_ROUND_MS / 1000
        while group.name in self._assigning:
            self._step(group)
            if self._round_work_s >= budget_s:
                return

    def _step(self, group: Group) -> None:
        """One step of the group's assignment; the target is replaced when it is done."""
        started_s = self._work_clock_s()
        run = self._assigning[group.name]
        if run is None:
            subscriptions = {m.member_id: m.topics for m in group.members.values()}
            run = self._assigning[group.name] = _AssignmentRun(
                group.epoch, self._partition_counts,
                assignors.assign_steps(group.assignor, subscriptions, self._partition_counts,
                                       group.target))
        try:
            next(run.steps)
        except StopIteration as done:
            self._finish(group, run, done.value)
        self._round_work_s += self._work_clock_s() - started_s

    def _finish(self, group: Group, run: _AssignmentRun, target: dict) -> None:
        del self._assigning[group.name]
        if run.counts is self._partition_counts or run.epoch == group.epoch:
            # Members that left since are not asked; members that joined get nothing yet.
            group.target, group.target_epoch = target, run.epoch
        if group.target_epoch != group.epoch:   # changed meanwhile: again, with the news
            self._assigning[group.name] = None

    # --- Offsets -------------------------------------------------------------------

    def commit(self, name: str, member_id: str, member_epoch: int,
               offsets: dict[TopicPartition, int], client_key: str = "",
               metadata: dict[TopicPartition, str] | None = None) -> None:
        """Store offsets durably, each with its ``metadata`` (where given); only for
        partitions the member owns (or an empty group)."""
        if not member_id:
            self._commit_without_members(name, offsets, "commit as one of them",
                                         metadata=metadata)
            return
        group, member = self._own_member(name, member_id, client_key)
        _check_metadata(name, metadata)
        negative = sorted(tp for tp, offset in offsets.items() if offset < 0)
        if negative:
            raise _negative(name, *negative[0], offsets[negative[0]])
        allowed = member.assigned | member.owned
        foreign = sorted(set(offsets) - allowed)
        if foreign:
            topic, partition = foreign[0]
            raise NotOwnerError(
                f"member {member_id} (epoch {member_epoch}) of group {name!r} does not own "
                f"{topic}-{partition}; it owns {len(allowed)} partitions")
        settings = {}
        if self._store.setting(name, _ASSIGNOR_SETTING) is None:
            settings[_ASSIGNOR_SETTING] = group.assignor   # kept for its next members
        self._store.commit(name, offsets, settings, metadata)
        self._unstored.discard(name)

    def reset_offsets(self, name: str, offsets: dict[TopicPartition, int],
                      metadata: dict[TopicPartition, str] | None = None) -> None:
        """An administrator's (or a member-less consumer's) commit, while the group has
        no members; every offset must be of a partition that exists, and not negative.
        Logged (INFO), old -> new: the audit trail of who moved a group's position."""
        before = self._store.offsets(name) if self._store.has(name) else {}
        self._commit_without_members(name, offsets, "stop them before resetting its offsets",
                                     metadata=metadata)
        if offsets:
            log.info("group %r: offsets of %s reset: %s", name,
                     counted(len(offsets), "partition"),
                     _offset_changes({tp: (before.get(tp), offset)
                                      for tp, offset in offsets.items()}))

    def commit_classic(self, name: str, offsets: dict[TopicPartition, int],
                       metadata: dict[TopicPartition, str] | None = None) -> None:
        """A Kafka client's commit (its member and generation checked by the classic
        coordinator, shards/classic_group.py): of partitions that exist; a negative
        offset is stored as Kafka's broker stores it (clients read -1 as "none"), each
        with its metadata (OffsetCommit's committed_metadata)."""
        self._commit_without_members(name, offsets, "commit as one of them",
                                     negative_allowed=True, metadata=metadata)

    def _check_offsets(self, name: str, offsets: dict[TopicPartition, int], *,
                       negative_allowed: bool) -> None:
        """UnknownTopicError or PartitionOutOfRangeError for an offset of a partition
        that does not exist (a deleted topic's would outlive it: ``_forget_offsets_of``
        ran already), OffsetOutOfRangeError for a negative one unless allowed."""
        for (topic, partition), offset in sorted(offsets.items()):
            count = self._partition_counts.get(topic)
            if count is None:
                raise UnknownTopicError(f"group {name!r}: cannot commit an offset of "
                                        f"{topic}-{partition}: unknown topic {topic!r}")
            if not 0 <= partition < count:
                raise PartitionOutOfRangeError(
                    f"group {name!r}: cannot commit an offset of {topic}-{partition}: topic "
                    f"{topic!r} has {count} partitions")
            if offset < 0 and not negative_allowed:
                raise _negative(name, topic, partition, offset)

    def _commit_without_members(self, name: str, offsets: dict[TopicPartition, int],
                                advice: str, negative_allowed: bool = False,
                                metadata: dict[TopicPartition, str] | None = None) -> None:
        validate_group_name(name)
        self._check_not_moved(name)
        self._check_offsets(name, offsets, negative_allowed=negative_allowed)
        _check_metadata(name, metadata)
        group = self._groups.get(name)
        if group is not None:
            raise GroupNotEmptyError(
                f"group {name!r} has {counted(len(group.members), 'active member')}; {advice}")
        if not offsets:
            return
        if not self._store.has(name):
            self._check_group_room(name)
        self._store.commit(name, offsets, metadata=metadata)
        self._offsets_expiry.set(name, self._store.now_ms() + limits.OFFSETS_RETENTION_MS)

    def delete_group(self, name: str) -> None:
        """Forget a group without members: its committed offsets and settings (Kafka's
        DeleteGroups). GroupNotEmptyError while it has members; UnknownGroupError if
        this shard holds nothing of it."""
        validate_group_name(name)
        self._check_not_moved(name)
        group = self._groups.get(name)
        if group is not None:
            raise GroupNotEmptyError(f"group {name!r} has "
                                     f"{counted(len(group.members), 'active member')}; "
                                     f"stop them before deleting it")
        if not self._store.has(name):
            raise UnknownGroupError(f"group {name!r} has no committed offsets to delete")
        before = self._store.offsets(name)
        self._store.delete([name])
        self._offsets_expiry.discard(name)
        log.info("group %r deleted, with its committed offsets of %s: %s", name,
                 counted(len(before), "partition"),
                 _offset_changes({tp: (offset, None) for tp, offset in before.items()}))

    def delete_offsets(self, name: str, partitions: Iterable[TopicPartition],
                       classic_subscribes: Callable[[str], bool] | None = None
                       ) -> dict[TopicPartition, BrokerError | None]:
        """Forget some of a group's committed offsets (Kafka's OffsetDelete), durably:
        tombstones in the offsets log, as a deleted topic's (of a replicated slot,
        appended like a commit). Returns each partition's outcome, by topic then
        partition: None if deleted or there was none to delete (not an error, as in
        Kafka); UnknownTopicError or PartitionOutOfRangeError for one that does not
        exist; GroupSubscribedToTopicError for one of a topic the group's members
        subscribe to (kept; the others are deleted). ``classic_subscribes``: whether
        the group's Kafka (classic) members subscribe to a topic, None if it has none.
        UnknownGroupError, for the whole request, if the group has neither members
        nor offsets here. A group left with neither is deleted, as Kafka does."""
        validate_group_name(name)
        self._check_not_moved(name)
        group = self._groups.get(name)
        has_members = group is not None or classic_subscribes is not None
        if not has_members and not self._store.has(name):
            raise UnknownGroupError(f"group {name!r} is not known: it has no members and no "
                                    f"committed offsets to delete")
        outcomes = {tp: self._deletion_refusal(name, group, classic_subscribes, *tp)
                    for tp in sorted(set(partitions))}
        gone = [tp for tp, refusal in outcomes.items() if refusal is None]
        before = self._store.offsets(name) if self._store.has(name) else {}
        self._store.delete_offsets(name, gone)
        deleted = {tp: (before[tp], None) for tp in gone if tp in before}
        if deleted:
            log.info("group %r: committed offsets of %s deleted: %s", name,
                     counted(len(deleted), "partition"), _offset_changes(deleted))
        if not has_members and self._store.has(name) and not self._store.offsets(name):
            self._store.delete([name])
            self._offsets_expiry.discard(name)
            log.info("group %r deleted: it has no members and no committed offsets left",
                     name)
        return outcomes

    def _deletion_refusal(self, name: str, group: Group | None,
                          classic_subscribes: Callable[[str], bool] | None,
                          topic: str, partition: int) -> BrokerError | None:
        """Why deleteOffsets keeps this partition's offset, or None (delete it)."""
        count = self._partition_counts.get(topic)
        where = f"group {name!r}: cannot delete the offset of {topic}-{partition}"
        if count is None:
            return UnknownTopicError(f"{where}: unknown topic {topic!r}")
        if not 0 <= partition < count:
            return PartitionOutOfRangeError(f"{where}: topic {topic!r} has {count} partitions")
        if group is not None and group.subscribed.get(topic, 0):
            return GroupSubscribedToTopicError(
                f"{where}: the group has {counted(len(group.members), 'active member')}, "
                f"{group.subscribed[topic]} of them subscribed to topic {topic!r}; stop them "
                f"first")
        if classic_subscribes is not None and classic_subscribes(topic):
            return GroupSubscribedToTopicError(
                f"{where}: its Kafka members subscribe to topic {topic!r} (or may: a "
                f"subscription not read yet counts); stop them first")
        return None

    def committed(self, name: str) -> dict[TopicPartition, int]:
        validate_group_name(name)
        self._check_not_moved(name)
        return self._store.offsets(name)

    def committed_metadata(self, name: str) -> dict[TopicPartition, str]:
        """The metadata committed with the group's offsets, where not empty."""
        validate_group_name(name)
        self._check_not_moved(name)
        return self._store.metadata(name)

    # --- Moving groups between shards ------------------------------------------------

    def hand_over(self, name: str) -> dict:
        """Stop coordinating a group; returns its state for the new coordinator:
        {"offsets": [[topic, partition, offset], ...], "metadata": [[topic, partition,
        metadata], ...] (of offsets that have one), "settings": {name: value},
        "group": its members and assignments (a Group), or None if it has none}."""
        self._check_not_moved(name)
        group = self._groups.get(name)
        if group is not None:
            for member_id in group.members:
                self._sessions.discard((name, member_id))
            self._member_count -= len(group.members)
            self._forget(group)
        state = {"offsets": [[t, p, o] for (t, p), o in self._store.offsets(name).items()],
                 "metadata": [[t, p, m] for (t, p), m in self._store.metadata(name).items()],
                 "settings": self._store.settings(name), "group": group}
        self._store.set_setting(name, _MOVED_SETTING, "1")
        self._offsets_expiry.set(name, self._store.now_ms() + limits.OFFSETS_RETENTION_MS)
        return state

    def adopt(self, name: str, state: dict, now_s: float) -> None:
        """Coordinate a group handed over by another shard (its offsets and settings
        durable before this returns); its members' sessions start again at ``now_s``.
        The bounds do not apply: the group exists already."""
        validate_group_name(name)
        settings = {setting: value for setting, value in state["settings"].items()
                    if setting != _MOVED_SETTING}
        # (A shard from before metadata hands over none.)
        self._store.commit(name, {(t, p): o for t, p, o in state["offsets"]},
                           {**settings, _MOVED_SETTING: "0"},
                           {(t, p): m for t, p, m in state.get("metadata", [])})
        here = self._groups.get(name)
        if here is not None:   # (members joined here by mistake: they rejoin)
            for member in list(here.members.values()):
                self._remove_member(here, member)
        group = state.get("group")
        if group is None:
            self._offsets_expiry.set(name, self._store.now_ms() + limits.OFFSETS_RETENTION_MS)
            return
        for member in group.members.values():
            member.last_seen_s = now_s   # the old shard's clock means nothing here
            self._sessions.set((name, member.member_id), member.session_end_s)
        self._member_count += len(group.members)
        self._offsets_expiry.discard(name)
        self._groups[name] = group
        if group.target_epoch != group.epoch:
            self._assigning[name] = None

    def _check_not_moved(self, name: str) -> None:
        if self._store.setting(name, _MOVED_SETTING) == "1":
            raise UnavailableError(f"group {name!r} moved to another shard; retry (the routers "
                                   f"are learning its new coordinator)")

    # --- Inspection ------------------------------------------------------------------

    def describe(self, name: str) -> Group | None:
        validate_group_name(name)
        self._check_not_moved(name)
        group = self._groups.get(name)
        if group is None and self._store.has(name):
            # Offsets only: the assignor its members last chose, if a Plinth group stored
            # one; a Kafka (classic) group's members chose theirs client-side, and none
            # is stored: "" (not Plinth's default, which it never used).
            group = Group(name, self._store.setting(name, _ASSIGNOR_SETTING) or "")
        return group

    def group_names(self) -> list[str]:
        """The groups this shard coordinates (not those it handed over)."""
        return sorted(name for name in set(self._groups) | self._store.groups()
                      if self._store.setting(name, _MOVED_SETTING) != "1")

    def member_count(self) -> int:
        return self._member_count


def _check_metadata(name: str, metadata: dict[TopicPartition, str] | None) -> None:
    """OffsetMetadataTooLargeError for metadata over OFFSET_METADATA_BYTES_MAX (Kafka's
    offset.metadata.max.bytes), naming the first such partition. It refuses the whole
    commit: Plinth's commits are all or none, where Kafka refuses that partition only."""
    for (topic, partition), text in sorted((metadata or {}).items()):
        size_bytes = len(text.encode())
        if size_bytes > limits.OFFSET_METADATA_BYTES_MAX:
            raise OffsetMetadataTooLargeError(
                f"group {name!r}: the metadata of the offset of {topic}-{partition} is "
                f"{size_bytes} bytes, over the limit of {limits.OFFSET_METADATA_BYTES_MAX} "
                f"bytes (offset.metadata.max.bytes); nothing of this commit was stored")


# Partitions an audit line names one by one; the rest are counted.
_AUDIT_PARTITIONS_NAMED_MAX = 20


def _offset_changes(changes: dict[TopicPartition, tuple[int | None, int | None]]) -> str:
    """An audit line's ``topic-partition old -> new`` list, by topic then partition
    ("none": no offset committed, or deleted), its first _AUDIT_PARTITIONS_NAMED_MAX."""
    def word(offset: int | None) -> str:
        return "none" if offset is None else str(offset)

    items = sorted(changes.items())
    named = ", ".join(f"{topic}-{partition} {word(old)} -> {word(new)}"
                      for (topic, partition), (old, new) in items[:_AUDIT_PARTITIONS_NAMED_MAX])
    more = len(items) - _AUDIT_PARTITIONS_NAMED_MAX
    return named + (f", ... ({more} more)" if more > 0 else "")


def _negative(name: str, topic: str, partition: int, offset: int) -> OffsetOutOfRangeError:
    return OffsetOutOfRangeError(f"group {name!r}: offset {offset} of {topic}-{partition} "
                                 f"is negative; committed offsets are 0 or more")


def _check_epoch(group: Group, member: Member, member_epoch: int,
                 owned: set[TopicPartition]) -> None:
    """The member's current epoch, or the previous one if the answer that bumped it
    was lost and the member owns only partitions it is still assigned (Kafka's rule)."""
    if member_epoch == member.epoch:
        return
    if member_epoch == member.previous_epoch and owned <= member.assigned:
        return
    raise StaleMemberEpochError(
        f"member {member.member_id} of group {group.name!r} sent epoch {member_epoch}, "
        f"but its epoch is {member.epoch}; rejoin")


def _report_owned(group: Group, member: Member, owned: set[TopicPartition]) -> None:
    """What the member may own now: of what it reports, what it may own already, and
    what its last answer told it whatever it reports. That answer may still be on its
    way, or being applied as this heartbeat left: a report that leaves it out does
    not prove the member will not take it, so only a partition since taken out of
    its answers is freed by a report without it. (Counting only reports, a partition
    given in an answer was free until the member's next heartbeat, and members
    joining together were given partitions their first members had just been told
    to own.)"""
    may_own = {tp for tp in owned if tp in member.owned} | member.assigned
    _count_down(group.claims, member.owned - may_own)
    _count_up(group.claims, may_own - member.owned)   # (none: _answer counted its answers)
    member.owned = may_own


def _answer(group: Group, member: Member) -> set[TopicPartition]:
    """The member's target partitions that nobody else may still own (and of topics
    it still subscribes to: the target may predate a change of its subscription).
    What it is told it may own from now on, until a report without it comes after
    an answer without it."""
    claims, topics = group.claims, member.topics
    answer = {tp for tp in group.target.get(member.member_id, ())
              if tp[0] in topics and claims.get(tp, 0) == (tp in member.owned)}
    if answer != member.assigned:
        member.assigned = answer
        member.previous_epoch = member.epoch
        member.epoch += 1
        _count_up(group.claims, answer - member.owned)
        member.owned |= answer
    return answer


def _withheld(group: Group, member: Member, answer: set[TopicPartition]) -> bool:
    """Whether the member's target has partitions of its topics left out of its answer."""
    target = group.target.get(member.member_id, ())
    return len(answer) < sum(1 for tp in target if tp[0] in member.topics)


def _count_up(counts: Counter, keys) -> None:
    for key in keys:
        counts[key] += 1


def _count_down(counts: Counter, keys) -> None:
    """Keys counted down to zero leave the map: it holds only what is counted."""
    for key in keys:
        left = counts[key] - 1
        if left > 0:
            counts[key] = left
        elif left == 0:
            del counts[key]
        else:
            raise AssertionError(f"{key!r} counted down below zero")
