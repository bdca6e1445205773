"""ListGroups (router/kafka/api_groups.py): each group's state and type, and the states
and types filters, answered from Plinth's listGroups by a backend that plays the router."""

from __future__ import annotations

import asyncio

from plinth import protocol
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_groups import list_groups

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
