"""ListGroups and DescribeGroups (router/kafka/api_groups.py): each group's state and
type, the states and types filters, and a Plinth group's members as Kafka clients read
them, answered from Plinth's listGroups and describeGroup by a backend that plays the
router."""

from __future__ import annotations

import asyncio

from kafka.protocol.old.consumer_protocol import ConsumerProtocolMemberAssignment_v0

from plinth import protocol
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_groups import consumer_assignment_bytes, describe_groups, list_groups
from plinth.shards.classic_requests import consumer_assignment

LISTINGS = [protocol.GroupListing("billing", "Stable"),            # a Plinth group
            protocol.GroupListing("connect-s3", "PreparingRebalance", "connect"),
            protocol.GroupListing("orders", "Stable", "consumer"),  # a classic group
            protocol.GroupListing("stale", "Empty")]                # committed offsets only


class ListingBackend:
    """A backend that plays the router: answers listGroups with LISTINGS, through the
    real encoding of the reply."""

    def __init__(self):
        self._next = 0

    def next_request_id(self) -> int:
        self._next += 1
        return self._next

    async def call(self, request_id: int, header: bytes, payload=None, timeout_ms: int = 0,
                   change: bool = False):
        assert protocol.decode_request(header).kind == "listGroups"
        return protocol.decode_reply(protocol.encode_groups_reply(request_id, LISTINGS)), None


class DescribingBackend(ListingBackend):
    """Answers describeGroup with ``info``, through the real encoding of the reply."""

    def __init__(self, info: protocol.GroupInfo):
        super().__init__()
        self.info = info

    async def call(self, request_id: int, header: bytes, payload=None, timeout_ms: int = 0,
                   change: bool = False):
        assert protocol.decode_request(header).kind == "describeGroup"
        return protocol.decode_reply(protocol.encode_group_reply(request_id, self.info)), None


class Gateway:
    def __init__(self, backend):
        self.backend = backend


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
