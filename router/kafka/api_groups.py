"""The group APIs: Kafka's classic protocol and committed offsets, answered by the shards.

Runs on the Kafka listener's event loop thread (gateway.py). JoinGroup,
SyncGroup, Heartbeat and LeaveGroup become Plinth's classicJoin, classicSync,
classicHeartbeat and classicLeave (plinth/protocol_classic.py), answered by
the group's coordinating shard (shards/classic_group.py) with Kafka's error
codes, so they pass through unchanged. A join or a sync is answered when the
rebalance it waits for completes, so its Plinth request waits up to the
rebalance timeout (plus the usual request timeout).

Committed offsets are Plinth's: OffsetCommit is a commitOffsets marked
classic (the coordinator checks the member and generation), OffsetFetch a
fetchOffsets, so Kafka groups and Plinth groups share one offset store and
``plinth group describe`` shows either. Each offset's committed_metadata is
stored with it and OffsetFetch returns it ("" for none, as Kafka's broker
stores a null). A commit is all or none in Plinth: where Kafka refuses only the
partitions whose metadata is over offset.metadata.max.bytes
(OFFSET_METADATA_TOO_LARGE) and commits the others, every partition of the
commit gets that code and none is stored. A commit too big for one request
header (thousands of partitions, or long metadata) is sent in parts
(protocol.commit_offsets_parts), each all or none, and each partition is
answered with its part's code. DescribeGroups and ListGroups come
from describeGroup and listGroups (each group's state from its coordinator, the
states and types filters applied here); DeleteGroups is a deleteGroup per group,
refused (NON_EMPTY_GROUP) while the group has members of either protocol.

OffsetDelete is a deleteOffsets per topic, all at once, each partition answered
with the coordinator's outcome (shards/group_coordinator.py, Kafka's rules):
NONE where the offset is gone or none was committed, GROUP_SUBSCRIBED_TO_TOPIC
where the group's members subscribe to the topic, UNKNOWN_TOPIC_OR_PARTITION
where the partition does not exist (a negative index, or one no topic can have,
is answered so here without asking). A topic the ACL refuses (consume on it, as
Kafka's READ) is TOPIC_AUTHORIZATION_FAILED for its partitions alone; any other
refusal is the group's (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP for a Kafka group of
another protocol type with members, GROUP_AUTHORIZATION_FAILED without admin on
the group, ...): the top-level error code, with no topics, as Kafka's error
response. A request with nothing to ask still asks whether the group exists.

A Plinth group is described as Kafka describes its KIP-848 consumer groups to
DescribeGroups: protocol type "consumer", its assignor as the protocol (none
while Empty, as a classic group then has none), and each member's partitions
as the ConsumerProtocolAssignment a classic member would have sent (written
here, read by shards/classic_requests.py; big-endian):

    version int16 (0)
    topic count int32, then per topic (by name):
        name length int16, name UTF-8, partition count int32, partitions int32 each
    user data length int32 (-1: null)
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct

from plinth import limits, protocol, protocol_classic
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_cluster import AUTHORIZED_OPERATIONS_OMITTED
from plinth.router.kafka.backend import ask
from plinth.router.kafka.plinth_errors import kafka_code
from plinth.router.kafka.request_values import partition_error

NO_GENERATION = -1
NO_REQUEST_ID = 0    # a classic request's id is given when it is sent (_classic)
JOIN_NULLABLE_PROTOCOL_VERSION = 7
LEAVE_BATCH_VERSION = 3           # LeaveGroup: a list of members from here on
OFFSET_FETCH_GROUPS_VERSION = 8   # OffsetFetch: several groups from here on
CONSUMER_PROTOCOL_TYPE = "consumer"
CLASSIC_GROUP_TYPE = "classic"     # ListGroups v5's group types, by Kafka's names
CONSUMER_GROUP_TYPE = "consumer"
_LEADER_EPOCH_UNKNOWN = -1
_OFFSET_NONE = -1


def _group_code(error: BaseException | None) -> int:
    """``kafka_code`` for a group API's answer. A group's shard that cannot answer now
    (restarting, recovering its partitions, its group moving to another shard) is
    COORDINATOR_NOT_AVAILABLE, which Kafka's clients retry after finding the
    coordinator again; NOT_LEADER_OR_FOLLOWER, a partition's code for it, is an
    unexpected error to a commit (the Java consumer's commit fails for good)."""
    code = kafka_code(error)
    return kafka.COORDINATOR_NOT_AVAILABLE if code == kafka.NOT_LEADER_OR_FOLLOWER else code


async def _classic(gateway, request, wait_ms: int = 0) -> protocol_classic.ClassicResult:
    """One classic group request's answer (sent with a request id of its own); a Plinth
    error as its Kafka code."""
    reply, _ = await ask(
        gateway.backend,
        lambda rid: protocol_classic.encode_request(dataclasses.replace(request, request_id=rid)),
        timeout_ms=wait_ms + limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS)
    if reply.error is not None:
        return protocol_classic.ClassicResult(_group_code(reply.error))
    return reply.classic


def _host(connection) -> str:
    peer = getattr(connection, "peer", None)
    return f"/{peer[0]}" if peer else ""


async def join_group(gateway, header, body: dict, connection) -> dict:
    session_ms = body["session_timeout_ms"]
    rebalance_ms = body.get("rebalance_timeout_ms", -1)
    request = protocol_classic.ClassicJoinRequest(
        NO_REQUEST_ID, body["group_id"], body.get("member_id") or "",
        body.get("group_instance_id") or "", body.get("protocol_type") or "",
        tuple((p["name"], bytes(p["metadata"])) for p in body.get("protocols") or []),
        session_ms, rebalance_ms, header.client_id or "", _host(connection),
        require_known_member_id=header.api_version >= 4)
    result = await _classic(gateway, request, max(rebalance_ms, session_ms))
    # protocol_name may be null from v7 on (an error answer has none); "" before.
    null = None if header.api_version >= JOIN_NULLABLE_PROTOCOL_VERSION else ""
    return {"throttle_time_ms": 0, "error_code": result.error_code,
            "generation_id": result.generation_id, "protocol_type": result.protocol_type or null,
            "protocol_name": result.protocol_name or null, "leader": result.leader,
            "member_id": result.member_id or request.member_id,
            "members": [{"member_id": member_id, "group_instance_id": instance_id or None,
                         "metadata": metadata} for member_id, instance_id, metadata in result.members]}


async def sync_group(gateway, header, body: dict, connection) -> dict:
    request = protocol_classic.ClassicSyncRequest(
        NO_REQUEST_ID, body["group_id"], body["generation_id"],
        body["member_id"], body.get("group_instance_id") or "",
        body.get("protocol_type") or "", body.get("protocol_name") or "",
        tuple((a["member_id"], bytes(a["assignment"])) for a in body.get("assignments") or []))
    result = await _classic(gateway, request, limits.KAFKA_GROUP_SYNC_WAIT_MS_MAX)
    return {"throttle_time_ms": 0, "error_code": result.error_code,
            "protocol_type": result.protocol_type or None,
            "protocol_name": result.protocol_name or None, "assignment": result.assignment}


async def heartbeat(gateway, header, body: dict, connection) -> dict:
    request = protocol_classic.ClassicHeartbeatRequest(
        NO_REQUEST_ID, body["group_id"], body["generation_id"],
        body["member_id"], body.get("group_instance_id") or "")
    result = await _classic(gateway, request)
    return {"throttle_time_ms": 0, "error_code": result.error_code}


async def leave_group(gateway, header, body: dict, connection) -> dict:
    members = body["members"]
    if header.api_version < LEAVE_BATCH_VERSION:   # v0-2: one member, by id
        members = [{"member_id": body["member_id"], "group_instance_id": None}]
    request = protocol_classic.ClassicLeaveRequest(
        NO_REQUEST_ID, body["group_id"],
        tuple((m.get("member_id") or "", m.get("group_instance_id") or "") for m in members))
    result = await _classic(gateway, request)
    return {"throttle_time_ms": 0, "error_code": result.error_code,
            "members": [{"member_id": member_id, "group_instance_id": instance_id or None,
                         "error_code": code} for member_id, instance_id, code in result.left]}


# --- Committed offsets ------------------------------------------------------------

async def offset_commit(gateway, header, body: dict, connection) -> dict:
    generation = body.get("generation_id_or_member_epoch", body.get("generation_id",
                                                                    NO_GENERATION))
    offsets = {(t["name"], p["partition_index"]): p["committed_offset"]
               for t in body.get("topics") or [] for p in t.get("partitions") or []}
    # A null metadata is none, stored as "" (Kafka's broker does the same).
    metadata = {(t["name"], p["partition_index"]): p.get("committed_metadata") or ""
                for t in body.get("topics") or [] for p in t.get("partitions") or []}
    # A commit is all or none in Plinth: a partition that cannot exist refuses it, as
    # the coordinator refuses one beyond its topic's partitions.
    code = max((partition_error(partition) for _, partition in offsets), default=kafka.NONE)
    # So does metadata over the limit (the coordinator's check, made here too so that
    # no part of the commit is stored).
    if code == kafka.NONE and any(len(text.encode()) > limits.OFFSET_METADATA_BYTES_MAX
                                  for text in metadata.values()):
        code = kafka.OFFSET_METADATA_TOO_LARGE
    codes = dict.fromkeys(offsets, code)
    if code == kafka.NONE:
        # In parts that each fit a request header; each part is all or none, and its
        # partitions get its code, as Kafka answers each partition of a commit.
        for part in protocol.commit_offsets_parts(offsets, metadata):
            reply, _ = await ask(gateway.backend, lambda rid, part=part: protocol.encode_commit_offsets(
                rid, "commitOffsets", body["group_id"], body.get("member_id") or "", generation,
                part, classic=True, group_instance_id=body.get("group_instance_id") or "",
                metadata={tp: metadata[tp] for tp in part}))
            codes.update(dict.fromkeys(part, _group_code(reply.error)))
    return {"throttle_time_ms": 0, "topics": [
        {"name": t["name"], "partitions": [{"partition_index": p["partition_index"],
                                            "error_code": codes[t["name"], p["partition_index"]]}
                                           for p in t.get("partitions") or []]}
        for t in body.get("topics") or []]}


async def offset_fetch(gateway, header, body: dict, connection) -> dict:
    if header.api_version >= OFFSET_FETCH_GROUPS_VERSION:   # several groups
        groups = await asyncio.gather(*(_offsets_of(gateway, g["group_id"], g.get("topics"))
                                        for g in body["groups"]))
        return {"throttle_time_ms": 0, "groups": [
            {"group_id": g["group_id"], "topics": topics, "error_code": code}
            for g, (topics, code) in zip(body["groups"], groups)]}
    topics, code = await _offsets_of(gateway, body["group_id"], body.get("topics"))
    return {"throttle_time_ms": 0, "topics": topics, "error_code": code}


async def _offsets_of(gateway, group: str, wanted) -> tuple[list[dict], int]:
    """(topics answer, error code) of one group's committed offsets; ``wanted`` None: all."""
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_group_request(
        rid, "fetchOffsets", group))
    if reply.error is not None:
        return [], _group_code(reply.error)
    committed, metadata = reply.committed, reply.committed_metadata
    if wanted is None:
        pairs: dict[str, list[int]] = {}
        for topic, partition in sorted(committed):
            pairs.setdefault(topic, []).append(partition)
        wanted = [{"name": t, "partition_indexes": ps} for t, ps in pairs.items()]
    return [{"name": t["name"], "partitions": [
        {"partition_index": p, "committed_offset": committed.get((t["name"], p), _OFFSET_NONE),
         "committed_leader_epoch": _LEADER_EPOCH_UNKNOWN,
         "metadata": metadata.get((t["name"], p), ""),
         "error_code": kafka.NONE} for p in t.get("partition_indexes") or []]}
        for t in wanted], kafka.NONE


# --- Describing and listing ---------------------------------------------------------

async def delete_groups(gateway, header, body: dict, connection) -> dict:
    results = await asyncio.gather(*(_delete(gateway, name)
                                     for name in body.get("groups_names") or []))
    return {"throttle_time_ms": 0, "results": list(results)}


async def _delete(gateway, name: str) -> dict:
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_group_request(
        rid, "deleteGroup", name))
    return {"group_id": name, "error_code": _group_code(reply.error)}


async def offset_delete(gateway, header, body: dict, connection) -> dict:
    group = body.get("group_id") or ""
    asked = _offset_delete_asks(body.get("topics") or [])
    work = [(topic, numbers) for topic, numbers in asked.items() if numbers] or [("", set())]
    replies = await asyncio.gather(*(_delete_offsets(gateway, group, topic, numbers)
                                     for topic, numbers in work))
    codes: dict[tuple[str, int], int] = {}   # (topic, partition) -> its error code
    for (topic, numbers), reply in zip(work, replies):
        code = _group_code(reply.error)
        if code == kafka.TOPIC_AUTHORIZATION_FAILED:   # this topic's alone
            codes.update({(topic, p): code for p in numbers})
        elif reply.error is not None:                  # the group's: the whole request's
            return {"error_code": code, "throttle_time_ms": 0, "topics": []}
        codes.update({(d.topic, d.partition): _group_code(d.error)
                      for d in reply.offset_deletions})
    return {"error_code": kafka.NONE, "throttle_time_ms": 0, "topics": [
        {"name": t["name"], "partitions": [
            {"partition_index": p["partition_index"],
             "error_code": codes.get((t["name"], p["partition_index"]),
                                     kafka.UNKNOWN_TOPIC_OR_PARTITION)}
            for p in t.get("partitions") or []]}
        for t in body.get("topics") or [] if t.get("partitions")]}


def _offset_delete_asks(topics: list[dict]) -> dict[str, set[int]]:
    """OffsetDelete's partitions to ask about, by topic: those some topic may have."""
    asked: dict[str, set[int]] = {}
    for topic in topics:
        numbers = asked.setdefault(topic["name"], set())
        numbers.update(p["partition_index"] for p in topic.get("partitions") or []
                       if 0 <= p["partition_index"] < limits.PARTITIONS_PER_TOPIC_MAX)
    return asked


async def _delete_offsets(gateway, group: str, topic: str, numbers: set[int]):
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_delete_offsets(
        rid, group, {(topic, p) for p in numbers}))
    return reply


async def describe_groups(gateway, header, body: dict, connection) -> dict:
    described = await asyncio.gather(*(_describe(gateway, name)
                                       for name in body.get("groups") or []))
    return {"throttle_time_ms": 0, "groups": list(described)}


async def _describe(gateway, name: str) -> dict:
    answer = {"error_code": kafka.NONE, "group_id": name, "group_state": "Dead",
              "protocol_type": "", "protocol_data": "", "members": [],
              "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_group_request(
        rid, "describeGroup", name))
    if reply.error is not None:
        if getattr(reply.error, "code_name", "") != "unknownGroup":   # unknown: Dead, as Kafka
            answer["error_code"] = _group_code(reply.error)
        return answer
    info = reply.group
    if info.protocol_type:   # a classic group: as its members sent it
        answer.update(group_state=info.state or ("Stable" if info.members else "Empty"),
                      protocol_type=info.protocol_type,
                      protocol_data=info.assignor)
    else:                    # a Plinth group: as ListGroups types it (module docstring)
        answer.update(group_state="Stable" if info.members else "Empty",
                      protocol_type=CONSUMER_PROTOCOL_TYPE,
                      protocol_data=info.assignor if info.members else "")
    answer["members"] = [{"member_id": m.member_id,
                          "group_instance_id": m.group_instance_id or None,
                          "client_id": m.client_id, "client_host": m.client_host,
                          "member_metadata": m.metadata,
                          "member_assignment": m.assignment_bytes if info.protocol_type
                          else consumer_assignment_bytes(m.assignment)}
                         for m in info.members]
    return answer


def consumer_assignment_bytes(partitions: set[tuple[str, int]]) -> bytes:
    """A Plinth member's (topic, partition) pairs as a ConsumerProtocolAssignment, v0
    (module docstring), topics and partitions in order."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    out = [struct.pack(">hi", 0, len(by_topic))]
    for topic, numbers in by_topic.items():
        name = topic.encode()
        out.append(struct.pack(f">h{len(name)}si{len(numbers)}i", len(name), name,
                               len(numbers), *numbers))
    out.append(struct.pack(">i", -1))
    return b"".join(out)


async def list_groups(gateway, header, body: dict, connection) -> dict:
    reply, _ = await ask(gateway.backend, protocol.encode_list_groups)
    if reply.error is not None:
        return {"throttle_time_ms": 0, "error_code": _group_code(reply.error), "groups": []}
    # Kafka matches both filters ignoring case (librdkafka asks for "Consumer"); an
    # empty filter lets every group through.
    states = {state.lower() for state in body.get("states_filter") or ()}
    types = {group_type.lower() for group_type in body.get("types_filter") or ()}
    listed = [_listed(listing) for listing in reply.group_listings]
    return {"throttle_time_ms": 0, "error_code": kafka.NONE,
            "groups": [g for g in listed if (not states or g["group_state"].lower() in states)
                       and (not types or g["group_type"] in types)]}


def _listed(listing: protocol.GroupListing) -> dict:
    """A group as ListGroups shows it. A classic group is Kafka's classic type with its
    members' protocol type; a Plinth group (members heartbeating to the coordinator,
    which assigns) is Kafka's KIP-848 consumer type, protocol type consumer."""
    classic = bool(listing.protocol_type)
    return {"group_id": listing.group,
            "protocol_type": listing.protocol_type if classic else CONSUMER_PROTOCOL_TYPE,
            "group_state": listing.state,
            "group_type": CLASSIC_GROUP_TYPE if classic else CONSUMER_GROUP_TYPE}
