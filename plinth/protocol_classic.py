"""Kafka's classic group protocol on Plinth's wire: the four requests and their answer.

The Kafka listener (router/kafka/api_groups.py) sends a Kafka client's
JoinGroup, SyncGroup, Heartbeat and LeaveGroup as classicJoin, classicSync,
classicHeartbeat and classicLeave (schemas/protocol.capnp), routed like every
group request to the group's coordinating shard, whose classic coordinator
answers with a ClassicResult carrying Kafka's own error code. The listener
encodes requests and decodes answers; the shard decodes requests and encodes
answers. Any thread. Kafka's null strings are "" on this wire.

protocol.py registers the decoders here in its tables, so ``decode_request``
and ``decode_reply`` return these classes like every other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from plinth.schemas import protocol as schema


@dataclass(frozen=True, slots=True)
class ClassicJoinRequest:
    request_id: int
    group: str
    member_id: str
    group_instance_id: str
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]   # (name, metadata), in preference order
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str = ""
    client_host: str = ""
    require_known_member_id: bool = True
    kind: ClassVar[str] = "classicJoin"


@dataclass(frozen=True, slots=True)
class ClassicSyncRequest:
    request_id: int
    group: str
    generation_id: int
    member_id: str
    group_instance_id: str
    protocol_type: str
    protocol_name: str
    assignments: tuple[tuple[str, bytes], ...]   # (member id, assignment): the leader's
    kind: ClassVar[str] = "classicSync"


@dataclass(frozen=True, slots=True)
class ClassicHeartbeatRequest:
    request_id: int
    group: str
    generation_id: int
    member_id: str
    group_instance_id: str = ""
    kind: ClassVar[str] = "classicHeartbeat"


@dataclass(frozen=True, slots=True)
class ClassicLeaveRequest:
    request_id: int
    group: str
    members: tuple[tuple[str, str], ...]   # (member id, group instance id)
    kind: ClassVar[str] = "classicLeave"


CLASSIC_REQUESTS = (ClassicJoinRequest, ClassicSyncRequest, ClassicHeartbeatRequest,
                    ClassicLeaveRequest)


@dataclass
class ClassicResult:
    """A decoded ClassicResult: ``which`` is "none", "join", "sync" or "leave"."""

    error_code: int
    which: str = "none"
    generation_id: int = -1
    protocol_type: str = ""
    protocol_name: str = ""
    leader: str = ""
    member_id: str = ""
    members: list[tuple[str, str, bytes]] = field(default_factory=list)   # join: the leader's
    assignment: bytes = b""                                               # sync
    left: list[tuple[str, str, int]] = field(default_factory=list)        # leave


# --- Requests (the Kafka listener encodes, the shard decodes) ---------------------

def encode_request(request) -> bytes:
    """One of CLASSIC_REQUESTS as a Request message."""
    msg = schema.Request.new_message(requestId=request.request_id)
    body = msg.init(request.kind)
    body.group = request.group
    match request:
        case ClassicJoinRequest():
            body.memberId, body.groupInstanceId = request.member_id, request.group_instance_id
            body.protocolType = request.protocol_type
            body.sessionTimeoutMs = request.session_timeout_ms
            body.rebalanceTimeoutMs = request.rebalance_timeout_ms
            body.clientId, body.clientHost = request.client_id, request.client_host
            body.requireKnownMemberId = request.require_known_member_id
            out = body.init("protocols", len(request.protocols))
            for i, (name, metadata) in enumerate(request.protocols):
                out[i].name, out[i].metadata = name, metadata
        case ClassicSyncRequest():
            body.generationId, body.memberId = request.generation_id, request.member_id
            body.groupInstanceId = request.group_instance_id
            body.protocolType, body.protocolName = request.protocol_type, request.protocol_name
            out = body.init("assignments", len(request.assignments))
            for i, (member_id, assignment) in enumerate(request.assignments):
                out[i].memberId, out[i].assignment = member_id, assignment
        case ClassicHeartbeatRequest():
            body.generationId, body.memberId = request.generation_id, request.member_id
            body.groupInstanceId = request.group_instance_id
        case ClassicLeaveRequest():
            out = body.init("members", len(request.members))
            for i, (member_id, instance_id) in enumerate(request.members):
                out[i].memberId, out[i].groupInstanceId = member_id, instance_id
    return msg.to_bytes()


REQUEST_DECODERS = {
    "classicJoin": lambda rid, b: ClassicJoinRequest(
        rid, b.group, b.memberId, b.groupInstanceId, b.protocolType,
        tuple((p.name, bytes(p.metadata)) for p in b.protocols), b.sessionTimeoutMs,
        b.rebalanceTimeoutMs, b.clientId, b.clientHost, b.requireKnownMemberId),
    "classicSync": lambda rid, b: ClassicSyncRequest(
        rid, b.group, b.generationId, b.memberId, b.groupInstanceId, b.protocolType,
        b.protocolName, tuple((a.memberId, bytes(a.assignment)) for a in b.assignments)),
    "classicHeartbeat": lambda rid, b: ClassicHeartbeatRequest(
        rid, b.group, b.generationId, b.memberId, b.groupInstanceId),
    "classicLeave": lambda rid, b: ClassicLeaveRequest(
        rid, b.group, tuple((m.memberId, m.groupInstanceId) for m in b.members)),
}


# --- The answer (the shard encodes, the Kafka listener decodes) -------------------

def encode_result(request_id: int, result: ClassicResult) -> bytes:
    msg = schema.Reply.new_message(requestId=request_id)
    body = msg.init("classic")
    body.errorCode = result.error_code
    if result.which == "join":
        join = body.init("join")
        join.generationId, join.memberId, join.leader = (result.generation_id,
                                                         result.member_id, result.leader)
        join.protocolType, join.protocolName = result.protocol_type, result.protocol_name
        members = join.init("members", len(result.members))
        for i, (member_id, instance_id, metadata) in enumerate(result.members):
            members[i].memberId, members[i].groupInstanceId = member_id, instance_id
            members[i].metadata = metadata
    elif result.which == "sync":
        sync = body.init("sync")
        sync.protocolType, sync.protocolName = result.protocol_type, result.protocol_name
        sync.assignment = result.assignment
    elif result.which == "leave":
        left = body.init("leave", len(result.left))
        for i, (member_id, instance_id, code) in enumerate(result.left):
            left[i].memberId, left[i].groupInstanceId, left[i].errorCode = (
                member_id, instance_id, code)
    else:
        body.none = None
    return msg.to_bytes()


def decode_result(body) -> ClassicResult:
    """The ClassicResult of a Reply's ``classic`` field, copied out."""
    which = body.which()
    result = ClassicResult(body.errorCode, which)
    if which == "join":
        join = body.join
        result.generation_id, result.member_id, result.leader = (
            join.generationId, join.memberId, join.leader)
        result.protocol_type, result.protocol_name = join.protocolType, join.protocolName
        result.members = [(m.memberId, m.groupInstanceId, bytes(m.metadata))
                          for m in join.members]
    elif which == "sync":
        result.protocol_type, result.protocol_name = body.sync.protocolType, body.sync.protocolName
        result.assignment = bytes(body.sync.assignment)
    elif which == "leave":
        result.left = [(m.memberId, m.groupInstanceId, m.errorCode) for m in body.leave]
    return result
