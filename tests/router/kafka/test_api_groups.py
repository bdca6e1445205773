"""ListGroups and DescribeGroups (router/kafka/api_groups.py): each group's state and
type, the states and types filters, and a Plinth group's members as Kafka clients read
them, answered from Plinth's listGroups and describeGroup by a backend that plays the
router. OffsetDelete: each partition's Kafka error code, and the whole request's for a
refusal of the group, from Plinth's deleteOffsets, answered by a backend that plays the
router (the real ACL, router/acl.py) and the coordinating shard (the real GroupRequests,
on a real offsets log)."""

from __future__ import annotations

import asyncio

import pytest
from kafka.protocol.old.consumer_protocol import ConsumerProtocolMemberAssignment_v0

from plinth import protocol
from plinth.errors import BrokerError, UnavailableError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_groups import (consumer_assignment_bytes, describe_groups,
                                            list_groups, offset_commit, offset_delete,
                                            offset_fetch)
from plinth.shards.classic_requests import consumer_assignment
from plinth.shards.group_requests import GroupRequests
from tests.router.kafka.router_backend import Gateway, RouterBackend
from tests.router.test_acl import KEY, acl_from

LISTINGS = [protocol.GroupListing("billing", "Stable"),            # a Plinth group
            protocol.GroupListing("connect-s3", "PreparingRebalance", "connect"),
            protocol.GroupListing("orders", "Stable", "consumer"),  # a classic group
            protocol.GroupListing("stale", "Empty")]                # committed offsets only


class ListingBackend(RouterBackend):
    """A backend that plays the router: answers listGroups with LISTINGS."""

    def answer(self, request_id: int, request: protocol.Request) -> bytes:
        assert request.kind == "listGroups"
        return protocol.encode_groups_reply(request_id, LISTINGS)


class DescribingBackend(RouterBackend):
    """Answers describeGroup with ``info``."""

    def __init__(self, info: protocol.GroupInfo):
        super().__init__()
        self.info = info

    def answer(self, request_id: int, request: protocol.Request) -> bytes:
        assert request.kind == "describeGroup"
        return protocol.encode_group_reply(request_id, self.info)


def listed(body: dict) -> list[tuple[str, str, str, str]]:
    answer = asyncio.run(list_groups(Gateway(ListingBackend()), None, body, None))
    assert answer["error_code"] == kafka.NONE
    return [(g["group_id"], g["protocol_type"], g["group_state"], g["group_type"])
            for g in answer["groups"]]


def test_without_filters_every_group_comes_with_its_state_protocol_type_and_type():
    assert listed({}) == [("billing", "consumer", "Stable", "consumer"),
                          ("connect-s3", "connect", "PreparingRebalance", "classic"),
                          ("orders", "consumer", "Stable", "classic"),
                          ("stale", "consumer", "Empty", "consumer")]


def test_the_states_filter_lets_through_the_groups_in_those_states_ignoring_case():
    assert [g[0] for g in listed({"states_filter": ["stable"]})] == ["billing", "orders"]
    assert [g[0] for g in listed({"states_filter": ["Empty", "PREPARINGREBALANCE"]})] == [
        "connect-s3", "stale"]
    assert listed({"states_filter": ["Dead"]}) == []


def test_the_types_filter_lets_through_groups_of_those_types_and_combines_with_states():
    # librdkafka names the types "Classic" and "Consumer"
    assert [g[0] for g in listed({"types_filter": ["Classic"]})] == ["connect-s3", "orders"]
    assert [g[0] for g in listed({"types_filter": ["consumer"],
                                  "states_filter": ["Stable"]})] == ["billing"]
    assert listed({"types_filter": ["share"]}) == []


def described(info: protocol.GroupInfo) -> dict:
    answer = asyncio.run(describe_groups(Gateway(DescribingBackend(info)), None,
                                         {"groups": [info.group]}, None))
    [group] = answer["groups"]
    assert group["error_code"] == kafka.NONE
    return group


def test_a_plinth_group_is_described_as_listed_with_each_members_partitions_as_kafka_reads_them():
    # Given a Plinth group of two members, with the sticky assignor
    info = protocol.GroupInfo("billing", "sticky", 4, [
        protocol.MemberInfo("m-1", 4, ["orders", "pay"], {("orders", 2), ("pay", 0), ("orders", 0)}),
        protocol.MemberInfo("m-2", 4, ["orders"], set())])
    group = described(info)
    # Then it is a Stable "consumer" group, as ListGroups types it, with its assignor
    assert (group["group_state"], group["protocol_type"], group["protocol_data"]) == (
        "Stable", "consumer", "sticky")
    # And each member's partitions are a ConsumerProtocolAssignment that Kafka clients
    # (kafka-python's own decoder) and the shards' reader both read back
    first, second = group["members"]
    decoded = ConsumerProtocolMemberAssignment_v0.decode(first["member_assignment"])
    assert [(t, sorted(ps)) for t, ps in decoded.assigned_partitions] == [
        ("orders", [0, 2]), ("pay", [0])]
    assert consumer_assignment(first["member_assignment"]) == {("orders", 0), ("orders", 2),
                                                               ("pay", 0)}
    assert ConsumerProtocolMemberAssignment_v0.decode(
        second["member_assignment"]).assigned_partitions == []


def test_an_empty_plinth_group_is_a_consumer_group_with_no_protocol():
    group = described(protocol.GroupInfo("stale", "sticky", 0, [], {("orders", 0): 12}))
    assert (group["group_state"], group["protocol_type"], group["protocol_data"],
            group["members"]) == ("Empty", "consumer", "", [])


def test_a_classic_groups_members_are_described_with_the_bytes_they_sent():
    sent = consumer_assignment_bytes({("orders", 1)}) + b"userdata"
    info = protocol.GroupInfo("orders-app", "range", 3, [
        protocol.MemberInfo("rdkafka-1", 3, [], {("orders", 1)}, client_id="rdkafka",
                            metadata=b"meta", assignment_bytes=sent)],
        protocol_type="consumer", state="Stable", leader="rdkafka-1")
    group = described(info)
    assert (group["protocol_type"], group["protocol_data"]) == ("consumer", "range")
    assert (group["members"][0]["member_metadata"], group["members"][0]["member_assignment"]) == (
        b"meta", sent)


# --- OffsetDelete ------------------------------------------------------------------

class ShardBackend(RouterBackend):
    """The router and the group's shard: each request checked against ``acl`` (None:
    no ACL) for KEY, then answered by ``groups``."""

    def __init__(self, groups: GroupRequests, acl=None):
        super().__init__()
        self.groups, self.acl = groups, acl

    def answer(self, request_id: int, request: protocol.Request) -> bytes:
        try:
            if self.acl is not None:
                self.acl.check(KEY, request)
            return self.groups.handle(request)
        except BrokerError as exc:
            return protocol.encode_error(request_id, exc)


@pytest.fixture
def groups(tmp_path):
    """A shard's groups: topics t (2 partitions) and u (1); group g with offsets of
    t-0, t-1 and u-0, and then a member subscribed to t."""
    groups = GroupRequests.open("shard-a", tmp_path / "shard")
    groups.set_partition_counts({"t": 2, "u": 1})
    groups.handle(protocol.decode_request(protocol.encode_commit_offsets(
        1, "resetOffsets", "g", "", 0, {("t", 0): 1, ("t", 1): 2, ("u", 0): 3})))
    groups.handle(protocol.decode_request(protocol.encode_group_heartbeat(
        2, "g", "", 0, ["t"], set(), 3000, "")))
    yield groups
    groups.close()


def delete(backend, group: str, topics: dict[str, list[int]]) -> dict:
    body = {"group_id": group, "topics": [
        {"name": name, "partitions": [{"partition_index": p} for p in partitions]}
        for name, partitions in topics.items()]}
    return asyncio.run(offset_delete(Gateway(backend), None, body, None))


def codes(answer: dict) -> dict[tuple[str, int], int]:
    assert answer["error_code"] == kafka.NONE
    return {(t["name"], p["partition_index"]): p["error_code"]
            for t in answer["topics"] for p in t["partitions"]}


def committed(groups) -> dict:
    return groups.info("g").committed


def test_each_partition_is_answered_with_kafkas_code_and_only_unsubscribed_ones_are_deleted(
        groups):
    # When offsets of t (subscribed), u, and partitions that do not exist are deleted
    answer = delete(ShardBackend(groups), "g", {"t": [0], "u": [0, 9, -1], "nope": [0]})
    # Then t-0 is kept (GROUP_SUBSCRIBED_TO_TOPIC), u-0 deleted, the rest unknown
    assert codes(answer) == {("t", 0): kafka.GROUP_SUBSCRIBED_TO_TOPIC, ("u", 0): kafka.NONE,
                             ("u", 9): kafka.UNKNOWN_TOPIC_OR_PARTITION,
                             ("u", -1): kafka.UNKNOWN_TOPIC_OR_PARTITION,
                             ("nope", 0): kafka.UNKNOWN_TOPIC_OR_PARTITION}
    assert [t["name"] for t in answer["topics"]] == ["t", "u", "nope"]   # the request's order
    assert committed(groups) == {("t", 0): 1, ("t", 1): 2}


def test_an_unknown_group_is_the_whole_requests_error_with_no_topics(groups):
    for topics in ({"u": [0]}, {}):   # with nothing to ask, the group is still asked about
        assert delete(ShardBackend(groups), "nobody", topics) == {
            "error_code": kafka.GROUP_ID_NOT_FOUND, "throttle_time_ms": 0, "topics": []}
    assert delete(ShardBackend(groups), "g", {}) == {
        "error_code": kafka.NONE, "throttle_time_ms": 0, "topics": []}


def test_a_topic_the_acl_refuses_fails_alone_and_a_refused_group_fails_the_request(
        groups, tmp_path):
    # Given a key with admin on group g and consume on topic u only
    acl = acl_from(tmp_path, {KEY: [{"operations": ["admin"], "groups": "g"},
                                    {"operations": ["consume"], "topics": "u"}]})
    # Then t's partitions are TOPIC_AUTHORIZATION_FAILED and u's offset is deleted
    assert codes(delete(ShardBackend(groups, acl), "g", {"t": [1], "u": [0]})) == {
        ("t", 1): kafka.TOPIC_AUTHORIZATION_FAILED, ("u", 0): kafka.NONE}
    assert committed(groups) == {("t", 0): 1, ("t", 1): 2}
    # And another group is GROUP_AUTHORIZATION_FAILED, for the whole request
    assert delete(ShardBackend(groups, acl), "other", {"u": [0]})["error_code"] == \
        kafka.GROUP_AUTHORIZATION_FAILED


# --- A group's shard that cannot answer now -------------------------------------------

class RecoveringBackend(RouterBackend):
    """The group's shard answers every request unavailable (restarted, recovering)."""

    def answer(self, request_id: int, request: protocol.Request) -> bytes:
        return protocol.encode_error(request_id, UnavailableError(
            "shard-a is recovering after a restart: it has reopened 3 of its partitions so "
            "far and serves groups once all are open; retry"))


class Header:
    api_version = 7


def test_a_groups_shard_that_cannot_answer_now_is_coordinator_not_available_to_kafka_clients():
    # Given a group's shard that answers unavailable (NOT_LEADER_OR_FOLLOWER, a partition's
    # code, which the Java consumer's commit takes as a fatal error)
    gateway = Gateway(RecoveringBackend())
    # When a Kafka client commits, fetches offsets and deletes offsets
    committed = asyncio.run(offset_commit(gateway, Header(), {"group_id": "g", "topics": [
        {"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 5}]}]}, None))
    fetched = asyncio.run(offset_fetch(gateway, Header(), {"group_id": "g", "topics": None}, None))
    deleted = delete(RecoveringBackend(), "g", {"t": [0]})
    # Then each is told COORDINATOR_NOT_AVAILABLE, which its client retries
    assert committed["topics"][0]["partitions"][0]["error_code"] == kafka.COORDINATOR_NOT_AVAILABLE
    assert fetched["error_code"] == kafka.COORDINATOR_NOT_AVAILABLE
    assert deleted["error_code"] == kafka.COORDINATOR_NOT_AVAILABLE
