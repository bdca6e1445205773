"""Kafka's classic group requests at the shard: from the wire to the coordinator and back.

Runs in the shard actor, on its loop thread only, for GroupRequests
(group_requests.py), which hands it the classicJoin, classicSync,
classicHeartbeat and classicLeave requests of the groups this shard
coordinates (plinth/protocol_classic.py) and calls its timers. The rules live
in classic_group.py; this module translates, keeps the time, and sends the
answers that the coordinator releases later (a held join or sync) through the
shard's ``reply``.

A reply token is ``(envelope, request_id)``: where the answer goes and the id
it carries. A request's own answer, when ready at once, is returned to the
caller like every group request's; every other released answer is sent.

The two group protocols never mix in one group: a classic join to a group
with Plinth members is answered INCONSISTENT_GROUP_PROTOCOL, and GroupRequests
refuses a Plinth heartbeat to a classic group. Both share the committed
offsets (offset_store.py): a classic OffsetCommit is checked here
(``check_commit``) and written by the Plinth coordinator as a commit without
Plinth members.

Consumer assignments. Kafka's consumers use protocol type "consumer", whose
assignment bytes are the ConsumerProtocolAssignment (big-endian):

    version int16, then assigned partitions: int32 count, each
        topic: int16 length + UTF-8, partitions: int32 count + int32 each
    then user data (ignored)

``consumer_assignment`` reads the partitions out of it so that ``plinth group
describe`` shows a Kafka member's partitions; anything it cannot read shows
as none (the bytes are the members', opaque to the broker).

Consumer subscriptions. A member's metadata for its protocol is the
ConsumerProtocolSubscription (big-endian; every version starts so):

    version int16, then topics: int32 count, each int16 length + UTF-8,
        then user data, owned partitions, ... (ignored)

``subscription_topics`` reads the topics out of it, for OffsetDelete, which
keeps the offsets of topics the group's members subscribe to: while one
member's cannot be read, or no protocol is chosen yet, every topic counts as
subscribed (Kafka's ClassicGroup.isSubscribedToTopic), so an offset a member
may be using is never deleted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from plinth import limits, protocol, protocol_classic
from plinth.errors import (BrokerError, FencedInstanceIdError, GroupNotEmptyError,
                           InconsistentGroupProtocolError, InvalidGroupError,
                           RebalanceInProgressError, StaleMemberEpochError, UnknownMemberIdError)
from plinth.shards.classic_group import (ClassicGroupCoordinator, HeartbeatAnswer, JoinAnswer,
                                         KafkaError, LeaveAnswer, SyncAnswer)

CONSUMER_PROTOCOL_TYPE = "consumer"
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")

# A refused classic commit, as the Plinth error the commit reply carries
# (router/kafka/plinth_errors.py maps each back to Kafka's code).
_COMMIT_ERRORS: dict[KafkaError, type[BrokerError]] = {
    KafkaError.UNKNOWN_MEMBER_ID: UnknownMemberIdError,
    KafkaError.ILLEGAL_GENERATION: StaleMemberEpochError,
    KafkaError.REBALANCE_IN_PROGRESS: RebalanceInProgressError,
    KafkaError.FENCED_INSTANCE_ID: FencedInstanceIdError,
    KafkaError.INVALID_GROUP_ID: InvalidGroupError,
}


class ClassicRequests:
    """The classic groups of one shard. Loop thread only, every method."""

    def __init__(self, shard_id: str, reply: Callable[[list, bytes], None],
                 clock_s: Callable[[], float],
                 initial_rebalance_delay_ms: int = limits.CLASSIC_INITIAL_REBALANCE_DELAY_MS):
        self.shard_id = shard_id
        self._reply = reply
        self._clock_s = clock_s
        self.coordinator = ClassicGroupCoordinator(
            initial_rebalance_delay_ms=initial_rebalance_delay_ms)

    def _now_ms(self) -> int:
        return int(self._clock_s() * 1000)

    def handle(self, request, client_key: str, envelope: list,
               plinth_members: int) -> bytes | None:
        """The reply header to a classic request if it is answered at once, else None
        (its answer is sent when the coordinator releases it). ``plinth_members``: the
        Plinth members the group has (a classic join to such a group is refused)."""
        token = (envelope, request.request_id)
        now_ms = self._now_ms()
        c = self.coordinator
        match request:
            case protocol_classic.ClassicJoinRequest() if plinth_members:
                return self._encode(request.request_id, JoinAnswer(
                    KafkaError.INCONSISTENT_GROUP_PROTOCOL, request.member_id))
            case protocol_classic.ClassicJoinRequest():
                replies = c.join(
                    token, request.group, request.member_id, request.group_instance_id or None,
                    request.protocol_type, list(request.protocols), request.session_timeout_ms,
                    request.rebalance_timeout_ms, now_ms, client_id=request.client_id,
                    client_host=request.client_host, client_key=client_key,
                    require_known_member_id=request.require_known_member_id)
            case protocol_classic.ClassicSyncRequest():
                replies = c.sync(
                    token, request.group, request.generation_id, request.member_id,
                    request.group_instance_id or None, request.protocol_type or None,
                    request.protocol_name or None, list(request.assignments), now_ms,
                    client_key=client_key)
            case protocol_classic.ClassicHeartbeatRequest():
                replies = c.heartbeat(token, request.group, request.generation_id,
                                      request.member_id, request.group_instance_id or None,
                                      now_ms, client_key=client_key)
            case protocol_classic.ClassicLeaveRequest():
                replies = c.leave(token, request.group,
                                  [(m, i or None) for m, i in request.members], now_ms,
                                  client_key=client_key)
            case _:
                raise AssertionError(f"not a classic group request: {request!r}")
        return self._deliver(replies, token)

    def loading(self, request) -> bytes:
        """The reply header to a classic request that the shard cannot answer yet (it
        is loading its groups: shard_server.py, "Restarts"): Kafka's
        COORDINATOR_LOAD_IN_PROGRESS, after which a Kafka client retries the same
        coordinator. Nothing of the group is looked at or changed."""
        code = KafkaError.COORDINATOR_LOAD_IN_PROGRESS
        match request:
            case protocol_classic.ClassicJoinRequest():
                answer = JoinAnswer(code, request.member_id)
            case protocol_classic.ClassicSyncRequest():
                answer = SyncAnswer(code)
            case protocol_classic.ClassicHeartbeatRequest():
                answer = HeartbeatAnswer(code)
            case protocol_classic.ClassicLeaveRequest():
                answer = LeaveAnswer(code)
            case _:
                raise AssertionError(f"not a classic group request: {request!r}")
        return self._encode(request.request_id, answer)

    def _deliver(self, replies, own_token) -> bytes | None:
        """Send every released answer but the request's own, which is returned."""
        own = None
        for token, answer in replies:
            envelope, request_id = token
            header = self._encode(request_id, answer)
            if token is own_token:
                own = header
            else:
                self._reply(envelope, header)
        return own

    @staticmethod
    def _encode(request_id: int, answer) -> bytes:
        return protocol_classic.encode_result(request_id, _result(answer))

    def check_commit(self, request: protocol.CommitOffsetsRequest, client_key: str) -> None:
        """Raise the Plinth error for a classic OffsetCommit the coordinator refuses."""
        error = self.coordinator.check_commit(request.group, request.member_id,
                                              request.member_epoch,
                                              request.group_instance_id or None,
                                              client_key=client_key)
        if error is not KafkaError.NONE:
            cls = _COMMIT_ERRORS.get(error, UnknownMemberIdError)
            raise cls(f"group {request.group!r} refuses the commit of member "
                      f"{request.member_id!r} in generation {request.member_epoch}: "
                      f"{error.name}")

    def refuse_plinth_member(self, group: str) -> None:
        """InconsistentGroupProtocolError if ``group`` is a classic group here."""
        if self.coordinator.has_group(group):
            raise InconsistentGroupProtocolError(
                f"group {group!r} is used by Kafka clients (the classic group protocol); "
                f"a Plinth consumer cannot join it: use another group name")

    def refuse_if_members(self, group: str, action: str) -> None:
        """GroupNotEmptyError if ``group`` is a classic group here: it has Kafka members
        (an empty classic group is forgotten at once: classic_group.py)."""
        if self.coordinator.has_group(group):
            members = self.coordinator.describe(group).members
            raise GroupNotEmptyError(f"group {group!r} has {len(members)} active Kafka "
                                     f"members; stop them before {action}")

    def subscribes(self, group: str) -> Callable[[str], bool] | None:
        """For deleteOffsets (Kafka's OffsetDelete): whether the classic group's members
        subscribe to a topic, None if it has no members here. GroupNotEmptyError if
        they are not consumers (protocol type other than "consumer"), whose topics
        the broker cannot know: Kafka's NON_EMPTY_GROUP."""
        found = self.coordinator.subscriptions(group)
        if found is None:
            return None
        protocol_type, metadata = found
        if protocol_type != CONSUMER_PROTOCOL_TYPE:
            members = self.coordinator.describe(group).members
            raise GroupNotEmptyError(
                f"group {group!r} has {len(members)} active Kafka members of protocol type "
                f"{protocol_type!r}, not {CONSUMER_PROTOCOL_TYPE!r}: none of its offsets "
                f"may be deleted while it has members")
        topics = subscription_topics(metadata) if metadata is not None else None
        return (lambda topic: True) if topics is None else topics.__contains__

    def info(self, group: str, committed: dict) -> protocol.GroupInfo | None:
        """A classic group's description for describeGroup, or None if not classic here."""
        if not self.coordinator.has_group(group):
            return None
        d = self.coordinator.describe(group)
        consumer = d.protocol_type == CONSUMER_PROTOCOL_TYPE
        members = [protocol.MemberInfo(
            m.member_id, d.generation_id, [], consumer_assignment(m.assignment) if consumer
            else set(), m.group_instance_id or "", m.client_id, m.client_host, m.metadata,
            m.assignment) for m in d.members]
        return protocol.GroupInfo(group, d.protocol_name, d.generation_id, members, committed,
                                  d.protocol_type, d.state.value, d.leader_id)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.coordinator.list_groups()]

    def listings(self) -> list[protocol.GroupListing]:
        """Every classic group here, with its state and protocol type, by name."""
        return [protocol.GroupListing(name, state.value, protocol_type)
                for name, protocol_type, state in self.coordinator.list_groups()]

    def close_groups(self, names) -> None:
        """Stop coordinating these groups here: their held requests are answered
        NOT_COORDINATOR, and their members rejoin at the new coordinator."""
        for name in names:
            self._deliver(self.coordinator.close_group(name), None)

    def close_all(self) -> None:
        self._deliver(self.coordinator.close_all(), None)

    def run_timers(self) -> None:
        self._deliver(self.coordinator.tick(self._now_ms()), None)

    def next_timer_s(self) -> float | None:
        deadline_ms = self.coordinator.next_deadline_ms()
        # tick handles deadlines strictly before its now: come back just after.
        return None if deadline_ms is None else (deadline_ms + 1) / 1000


def _result(answer) -> protocol_classic.ClassicResult:
    code = int(answer.error)
    match answer:
        case JoinAnswer():
            return protocol_classic.ClassicResult(
                code, "join", answer.generation_id, answer.protocol_type or "",
                answer.protocol_name or "", answer.leader_id, answer.member_id,
                [(m.member_id, m.group_instance_id or "", m.metadata) for m in answer.members])
        case SyncAnswer():
            return protocol_classic.ClassicResult(
                code, "sync", protocol_type=answer.protocol_type or "",
                protocol_name=answer.protocol_name or "", assignment=answer.assignment)
        case LeaveAnswer():
            return protocol_classic.ClassicResult(
                code, "leave", left=[(m.member_id, m.group_instance_id or "", int(m.error))
                                     for m in answer.members])
        case HeartbeatAnswer():
            return protocol_classic.ClassicResult(code)
    raise AssertionError(f"not a classic answer: {answer!r}")


def consumer_assignment(data: bytes) -> set[tuple[str, int]]:
    """The (topic, partition) pairs of a ConsumerProtocolAssignment (module docstring);
    empty if the bytes are not one."""
    try:
        position = _INT16.size   # the version
        (topic_count,) = _INT32.unpack_from(data, position)
        position += _INT32.size
        pairs = set()
        for _ in range(max(topic_count, 0)):
            topic, position = _string_at(data, position)
            (count,) = _INT32.unpack_from(data, position)
            position += _INT32.size
            if count < 0 or position + count * _INT32.size > len(data):
                return set()
            pairs.update((topic, p) for p in struct.unpack_from(f">{count}i", data, position))
            position += count * _INT32.size
        return pairs
    except (struct.error, UnicodeDecodeError):
        return set()


def subscription_topics(metadata: list[bytes]) -> frozenset[str] | None:
    """The topics of every member's ConsumerProtocolSubscription (module docstring),
    None if any one's cannot be read."""
    topics: set[str] = set()
    for data in metadata:
        try:
            (topic_count,) = _INT32.unpack_from(data, _INT16.size)   # after the version
            position = _INT16.size + _INT32.size
            if topic_count < 0:
                return None
            for _ in range(topic_count):   # each reads 2 bytes at least: bounded by the data
                topic, position = _string_at(data, position)
                topics.add(topic)
        except (struct.error, UnicodeDecodeError):
            return None
    return frozenset(topics)


def _string_at(data: bytes, position: int) -> tuple[str, int]:
    """The int16-length UTF-8 string at ``position`` and the position after it;
    struct.error if its length is negative or runs past the data."""
    (name_bytes,) = _INT16.unpack_from(data, position)
    position += _INT16.size
    if name_bytes < 0 or position + name_bytes > len(data):
        raise struct.error(f"a string of {name_bytes} bytes at position {position} of "
                           f"{len(data)}")
    return data[position:position + name_bytes].decode(), position + name_bytes
