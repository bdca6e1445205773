"""router/router.py: a real Router between real client DEALERs and fake shards (real
ROUTER sockets answering real Reply frames) and a fake controller (tests/router/fakes.py)."""

from __future__ import annotations

import ctypes
import itertools
import os
import time

import pytest
import zmq

from plinth import limits, protocol, topics
from plinth.control import placement
from plinth.errors import (InvalidTopicError, MalformedRequestError, NotLeaderError,
                           OffsetOutOfRangeError, PartitionOutOfRangeError,
                           RecordTooLargeError, RequestTooLargeError,
                           TooManyRequestsError, TopicExistsError, UnavailableError,
                           UnknownTopicError)
from tests.router import fakes
from tests.router.fakes import (FakeShard, answer,
                                holding_shard_under_a_router_budget_of_three_batches,
                                send_one_maximal_produce_too_many, wait_for_reply)
from tests.support import wait_until

FETCH_BYTES = 4 * 1024 * 1024


def fetch(request_id: int, topic: str = "t", partition: int = 0, offset: int = 0) -> bytes:
    return protocol.encode_fetch(request_id, topic, partition, offset, 1024, 0)


def list_offsets(request_id: int, topic: str = "t", partition: int = 0) -> bytes:
    return protocol.encode_list_offsets(request_id, topic, partition)


def test_produce_fetch_and_list_offsets_go_to_the_shard_that_owns_the_partition(router_rig):
    # Given topic t whose partition 0 is on shard-0 and partition 1 on shard-1
    rig = router_rig(topics={"t": 2}, owners={"t": ("shard-0", "shard-1")})
    client = rig.client()
    # When a client produces to, fetches from and lists offsets of partition 1
    produced = client.request(protocol.encode_produce(1, "t", 1, 1), b"batch")
    fetched = client.request(fetch(2, partition=1))
    offsets = client.request(list_offsets(3, partition=1))
    # Then shard-1 got all three, with the produce's payload, and answered each
    assert (produced.kind, produced.error) == ("produce", None)
    assert (fetched.kind, fetched.error) == ("fetch", None)
    assert offsets.offsets.shard == "shard-1"
    assert [r.request_id for r in rig.shards["shard-1"].wait_for_requests(3)] == [1, 2, 3]
    assert rig.shards["shard-1"].received[0][2] == len(b"batch")
    assert rig.shards["shard-0"].requests() == []


def test_a_plaintext_router_serves_a_socket_of_its_own_process_over_inproc(router_rig):
    # Given a plaintext router, and a DEALER in the same process and context (as the
    # Kafka listener's backend) connected to its inproc endpoint, not its TCP one
    rig = router_rig(topics={"t": 2}, owners={"t": ("shard-0", "shard-1")})
    assert rig.router.in_process_url.startswith("inproc://")
    assert rig.router.context is rig.context
    client = fakes.Client(rig.router.in_process_url)
    try:
        # When it produces and lists offsets
        produced = client.request(protocol.encode_produce(1, "t", 1, 1), b"batch")
        offsets = client.request(list_offsets(2, partition=1))
    finally:
        client.close()
    # Then the router routed both to the partition's shard and answered over inproc
    assert (produced.kind, produced.error) == ("produce", None)
    assert offsets.offsets.shard == "shard-1"
    assert rig.shards["shard-1"].received[0][2] == len(b"batch")


def test_a_curvezmq_router_offers_no_inproc_endpoint_which_would_skip_its_keys(router_rig):
    rig = router_rig(curve=True)
    assert rig.router.in_process_url is None


def test_a_fetch_goes_to_the_shard_holding_its_offset_after_the_partition_moved(router_rig):
    # Given partition 0 whose offsets 0..99 are on shard-0 and 100.. on shard-1 (its owner now)
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-1",)},
                     ranges={"t": {0: ((0, "shard-0"), (100, "shard-1"))}})
    client = rig.client()
    # When the client fetches at offsets 50 and 150, and produces
    client.request(fetch(1, offset=50))
    client.request(fetch(2, offset=150))
    client.request(protocol.encode_produce(3, "t", 0, 1), b"batch")
    # Then offset 50 was read from shard-0; offset 150 and the produce went to shard-1
    assert [r.request_id for r in rig.shards["shard-0"].requests()] == [1]
    assert [r.request_id for r in rig.shards["shard-1"].requests()] == [2, 3]


def test_list_offsets_of_a_partition_spanning_shards_is_answered_by_the_controller(router_rig):
    # Given a partition whose history spans two shards
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-1",)},
                     ranges={"t": {0: ((0, "shard-0"), (100, "shard-1"))}})
    # When a client lists its offsets
    view = rig.client().request(list_offsets(1))
    # Then the controller's merged answer comes back, and no shard was asked
    assert (view.offsets.shard, view.offsets.start_offset, view.offsets.end_offset) == (
        "controller", 0, 150)
    assert rig.shards["shard-0"].requests() == rig.shards["shard-1"].requests() == []


def test_group_requests_go_to_the_shard_the_group_name_hashes_to(router_rig):
    # Given two shards, and groups hashed to each of them
    rig = router_rig(topics={"t": 1})
    shard_ids = ["shard-0", "shard-1"]
    groups = {placement.shard_for_group(f"g{n}", shard_ids): f"g{n}" for n in range(20)}
    assert set(groups) == set(shard_ids)
    client = rig.client()
    # When a client asks each group's committed offsets
    for request_id, shard_id in enumerate(shard_ids, start=1):
        view = client.request(protocol.encode_group_request(request_id, "fetchOffsets",
                                                            groups[shard_id]))
        assert (view.kind, view.error) == ("committed", None)
    # Then each request reached the shard its group hashes to
    assert [r.group for r in rig.shards["shard-0"].requests()] == [groups["shard-0"]]
    assert [r.group for r in rig.shards["shard-1"].requests()] == [groups["shard-1"]]


def test_with_replicated_offsets_a_group_request_goes_to_the_leader_of_its_slot(router_rig):
    # Given a broker whose internal topic has two slots, led by shard-1 and shard-0, and
    # for each slot a group whose name hashes to the other shard (factor 1's coordinator)
    leaders = ("shard-1", "shard-0")
    owners = {"t": ("shard-0",), topics.OFFSETS_TOPIC: leaders}
    rig = router_rig(topics={"t": 1, topics.OFFSETS_TOPIC: 2}, owners=owners)
    by_slot = {topics.offsets_slot(g, 2): g for g in (f"g{n}" for n in range(40))
               if placement.shard_for_group(g, ["shard-0", "shard-1"]) !=
               leaders[topics.offsets_slot(g, 2)]}
    client = rig.client()
    # When a client asks each slot's group's committed offsets
    for request_id, slot in enumerate((0, 1), start=1):
        view = client.request(protocol.encode_group_request(request_id, "fetchOffsets",
                                                            by_slot[slot]))
        assert (view.kind, view.error) == ("committed", None)
    # Then each went to its slot's leader
    assert [r.group for r in rig.shards["shard-1"].requests()] == [by_slot[0]]
    assert [r.group for r in rig.shards["shard-0"].requests()] == [by_slot[1]]
    # And a slot with no leader is answered unavailable, naming it
    leaderless = router_rig(topics={topics.OFFSETS_TOPIC: 1}, owners={topics.OFFSETS_TOPIC: ("",)})
    view = leaderless.client().request(protocol.encode_group_request(9, "fetchOffsets", "g"))
    assert isinstance(view.error, UnavailableError)
    assert f"{topics.OFFSETS_TOPIC}-0" in view.error.message


def test_a_produce_to_the_internal_topic_is_refused_naming_it(router_rig):
    # Given a broker with the internal topic
    rig = router_rig(topics={topics.OFFSETS_TOPIC: 1}, owners={topics.OFFSETS_TOPIC: ("shard-0",)})
    # When a client produces to it
    view = rig.client().request(protocol.encode_produce(1, topics.OFFSETS_TOPIC, 0, 1), b"batch")
    # Then it is refused, naming the topic, and no shard saw it
    assert isinstance(view.error, InvalidTopicError) and "is internal" in view.error.message
    assert rig.shards["shard-0"].requests() == []


def test_requests_for_a_topic_being_looked_up_are_held_and_forwarded_in_order(router_rig):
    # Given a router that does not know topic "new", and a controller that is slow to answer
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    rig.controller.hold_routing()
    client = rig.client()
    # When a client pipelines produces and fetches for "new" while the look-up waits
    for request_id in range(1, 6):
        if request_id % 2:
            client.send(protocol.encode_produce(request_id, "new", 0, 1), b"batch")
        else:
            client.send(fetch(request_id, "new"))
    rig.controller.wait_for_routing_call()
    rig.controller.add_topic("new", 1, ("shard-0",))
    rig.controller.allow_routing()
    # Then once the controller answers, the shard gets them all, in the order sent
    assert [r.request_id for r in rig.shards["shard-0"].wait_for_requests(5)] == [1, 2, 3, 4, 5]
    assert sorted(client.recv()[0].request_id for _ in range(5)) == [1, 2, 3, 4, 5]


def test_a_held_request_goes_out_with_the_first_routing_table_that_knows_its_topic(router_rig):
    # Given a routing refresh waiting at the controller
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    rig.controller.hold_routing()
    rig.controller.wait_for_routing_call()
    client = rig.client()
    # And a request for topic "new" held behind it (the fetch from t answered after it
    # shows that the router has taken it)
    client.send(fetch(1, "new"))
    assert client.request(fetch(2, "t")).request_id == 2
    # When the refresh returns a table that knows "new", while the look-up still waits
    rig.controller.add_topic("new", 1, ("shard-0",))
    rig.controller.allow_routing(calls=1)
    # Then the held request is forwarded at once, and a later one after it
    assert [r.request_id for r in rig.shards["shard-0"].wait_for_requests(2)] == [2, 1]
    client.send(fetch(3, "new"))
    assert [r.request_id for r in rig.shards["shard-0"].wait_for_requests(3)] == [2, 1, 3]
    rig.controller.allow_routing()


def test_requests_for_a_topic_the_controller_does_not_know_are_answered_unknown_topic(
        router_rig, monkeypatch):
    # Given a router that remembers unknown topics long, and makes no routing refresh
    monkeypatch.setattr(limits, "ROUTER_UNKNOWN_TOPIC_TTL_S", 60.0)
    monkeypatch.setattr(limits, "ROUTING_REFRESH_INTERVAL_S", 3600.0)
    rig = router_rig(topics={"t": 1})
    client = rig.client()
    # When a client sends two requests for a topic nobody knows
    client.send(fetch(1, "nope"))
    client.send(protocol.encode_produce(2, "nope", 0, 1), b"batch")
    # Then both are answered unknownTopic, in order
    replies = [client.recv()[0] for _ in range(2)]
    assert [v.request_id for v in replies] == [1, 2]
    assert all(isinstance(v.error, UnknownTopicError) and "'nope'" in str(v.error)
               for v in replies)
    # And a request soon after is answered at once, without asking the controller again
    # (which now would not answer)
    rig.controller.hold_routing()
    client.send(fetch(3, "nope"))
    view, _ = client.recv(timeout_s=2)
    assert (view.request_id, type(view.error)) == (3, UnknownTopicError)
    rig.controller.allow_routing()


def test_a_partition_out_of_range_is_answered_with_the_partition_count(router_rig):
    rig = router_rig(topics={"t": 2})
    view = rig.client().request(fetch(1, partition=2))
    assert isinstance(view.error, PartitionOutOfRangeError)
    assert "partition 2 of topic 't' does not exist: it has 2 partitions (0 to 1)" in str(view.error)


def test_a_batch_over_the_limit_is_refused_at_the_router(router_rig):
    rig = router_rig(topics={"t": 1})
    view = rig.client().request(protocol.encode_produce(1, "t", 0, 1),
                                bytes(limits.BATCH_BYTES_MAX + 1))
    assert isinstance(view.error, RecordTooLargeError)
    assert f"limit of {limits.BATCH_BYTES_MAX} bytes" in str(view.error)
    assert rig.shards["shard-0"].requests() == []


def test_a_malformed_header_is_answered_malformed_and_the_next_request_served(router_rig):
    rig = router_rig(topics={"t": 1})
    client = rig.client()
    view = client.request(b"\x00" * 24)
    assert (view.request_id, type(view.error)) == (0, MalformedRequestError)
    assert client.request(fetch(2)).error is None


def test_a_header_over_the_limit_is_answered_too_large_with_its_own_id(router_rig):
    # Given a client that skips the client library's check of a header's size
    rig = router_rig(topics={"t": 1})
    client = rig.client()
    header = protocol.encode_topic_request(7, "describeTopic", "t" * limits.HEADER_BYTES_MAX)
    # When it sends a header over HEADER_BYTES_MAX
    view = client.request(header)
    # Then the refusal carries the request's own id (its waiter hears at once) and
    # names the header's size and the limit; the next request is served
    assert (view.request_id, type(view.error)) == (7, RequestTooLargeError)
    assert f"{len(header)} bytes, over the limit of {limits.HEADER_BYTES_MAX}" in str(view.error)
    assert client.request(fetch(8)).error is None


def test_a_client_over_its_in_flight_limit_is_refused_until_a_reply_comes_back(router_rig):
    # Given a shard that holds every request unanswered
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    client, other = rig.client(), rig.client()
    limit = limits.CLIENT_REQUESTS_IN_FLIGHT_MAX
    # When a client has the most requests in flight, and sends one more
    for request_id in range(1, limit + 1):   # produces: fetches are also bounded by bytes
        client.send(protocol.encode_produce(request_id, "t", 0, 1), b"batch")
    shard.wait_for_requests(limit)
    view = client.request(fetch(limit + 1))
    # Then that one is refused, naming the limit
    assert isinstance(view.error, TooManyRequestsError)
    assert f"client has {limit} requests in flight, the limit is {limit}" in str(view.error)
    # And produces with acks=0 (no reply) and other clients' requests still go through
    client.send(protocol.encode_produce(limit + 2, "t", 0, 0), b"batch")
    other.send(fetch(1))
    shard.wait_for_requests(limit + 2)
    # When one reply comes back, the client may send again
    shard.release(1)
    assert client.recv()[0].request_id == 1
    client.send(fetch(limit + 3))
    assert shard.wait_for_requests(limit + 3)[-1].request_id == limit + 3


def test_requests_in_flight_at_a_shard_whose_connection_drops_are_answered_unavailable_at_once(
        router_rig):
    # Given a shard holding a client's produce and fetch unanswered, and another shard
    rig = router_rig(topics={"t": 2}, owners={"t": ("shard-0", "shard-1")})
    shard = rig.shards["shard-0"]
    shard.holding = True
    client = rig.client()
    client.send(protocol.encode_produce(1, "t", 0, 1), b"batch")
    client.send(fetch(2))
    shard.wait_for_requests(2)
    # When the shard's process dies (its connection drops)
    shard.close()
    # Then both are answered unavailable (retriable) at once, in order, naming the shard
    # and that the request may have been applied, long before a client's request timeout
    views = [client.recv(timeout_s=fakes.WAIT_S)[0] for _ in range(2)]
    assert [v.request_id for v in views] == [1, 2]
    for view in views:
        assert isinstance(view.error, UnavailableError)
        assert "shard-0 lost its connection" in str(view.error)
        assert "may or may not have been applied; retry" in str(view.error)
    # And the client's count is free again, and the other shard still serves it
    assert client.request(protocol.encode_produce(3, "t", 1, 1), b"batch").error is None


def test_a_request_id_the_client_has_in_flight_is_refused_naming_it(router_rig):
    # Given a client's produce 5 held at its shard
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    rig.shards["shard-0"].holding = True
    client = rig.client()
    client.send(protocol.encode_produce(5, "t", 0, 1), b"batch")
    rig.shards["shard-0"].wait_for_requests(1)
    # When it sends another request with id 5 / Then that one is refused as malformed
    view = client.request(fetch(5))
    assert isinstance(view.error, MalformedRequestError)
    assert "request 5 is in flight already (at shard-0)" in str(view.error)
    assert len(rig.shards["shard-0"].requests()) == 1


def test_a_shard_whose_queue_is_full_makes_the_router_answer_too_many_requests(
        router_rig, monkeypatch):
    # Given a shard that reads nothing, behind sockets that queue 2 messages
    monkeypatch.setattr(limits, "SOCKET_MESSAGES_HWM", 2)
    rig = router_rig(shards={"shard-0": {"reading": False, "receive_hwm": 1}}, topics={"t": 1})
    client = rig.client()
    batch = bytes(1024 * 1024)
    # When a client keeps producing to it without waiting (acks=0: no replies otherwise)
    for request_id in range(1, 201):
        client.send(protocol.encode_produce(request_id, "t", 0, 0), batch)
        if client.has_reply(0.01):
            break
    # Then, once the queues and the kernel's buffers are full, a produce is refused
    view, _ = client.recv()
    assert isinstance(view.error, TooManyRequestsError)
    assert "shard-0 has 2 requests queued; retry later" in str(view.error)


def test_a_shard_whose_connection_drops_is_unavailable_until_it_comes_back(router_rig):
    # Given a router connected to shard-0, which answers
    rig = router_rig(shards={"shard-0": {}}, topics={"t": 1})
    client = rig.client()
    assert client.request(list_offsets(1)).offsets.shard == "shard-0"
    # When shard-0 goes away
    port = rig.shards["shard-0"].port
    rig.shards["shard-0"].close()
    # Then its partition's requests are answered unavailable, naming the shard (one sent
    # before the router saw the connection drop is answered as lost in flight)
    view = wait_for_reply(client, lambda attempt: list_offsets(1000 + attempt),
                          lambda v: v.error is not None and "lost its connection" not in str(v.error))
    assert isinstance(view.error, UnavailableError)
    assert "t: its shard shard-0 is unavailable" in str(view.error)
    # And when a shard is back at its address, they are forwarded again
    rig.shards["shard-0"] = FakeShard("shard-0", port=port,
                                      handler=lambda request: answer(request, "shard-0 again"))
    view = wait_for_reply(client, lambda attempt: list_offsets(2000 + attempt),
                          lambda v: v.error is None and v.request_id >= 2000)
    assert view.offsets.shard == "shard-0 again"


def test_group_requests_and_fetches_at_a_shard_whose_connection_drops_are_answered_at_once(
        router_rig):
    # Given a group whose slot shard-0 leads, and a heartbeat and a commit of its member
    # waiting at shard-0, which holds them unanswered
    owners = {"t": ("shard-1",), topics.OFFSETS_TOPIC: ("shard-0",)}
    rig = router_rig(topics={"t": 1, topics.OFFSETS_TOPIC: 1}, owners=owners)
    rig.shards["shard-0"].holding = rig.shards["shard-1"].holding = True
    client = rig.client()
    client.send(protocol.encode_group_heartbeat(1, "g", "m", 3, ["t"], set(), 10_000, ""))
    client.send(protocol.encode_commit_offsets(2, "commitOffsets", "g", "m", 3, {("t", 0): 7}))
    # And a consumer's fetch waiting there too, and a produce at shard-1
    client.send(fetch(3, topic=topics.OFFSETS_TOPIC))
    client.send(protocol.encode_produce(4, "t", 0, 1), b"batch")
    rig.shards["shard-0"].wait_for_requests(3)
    rig.shards["shard-1"].wait_for_requests(1)
    # When shard-0's process dies (its socket closes) and the slot gets a new leader
    rig.shards["shard-0"].close()
    rig.controller.owners[topics.OFFSETS_TOPIC] = ("shard-1",)
    # Then the three are answered unavailable, naming the shard, without waiting for
    # the client's request timeout; the produce at shard-1 is not
    replies = {}
    while len(replies) < 3:
        view, _ = client.recv()
        replies[view.request_id] = view
    assert sorted(replies) == [1, 2, 3]
    for view in replies.values():
        assert isinstance(view.error, UnavailableError)
        assert "shard-0 lost its connection" in view.error.message
    rig.shards["shard-1"].holding = False
    rig.shards["shard-1"].release(1)
    assert client.recv()[0].request_id == 4
    # And the retry reaches the new leader
    view = wait_for_reply(client, lambda attempt: protocol.encode_commit_offsets(
        100 + attempt, "commitOffsets", "g", "m", 3, {("t", 0): 7}),
        lambda v: v.error is None and v.request_id >= 100)
    assert [r.request_id for r in rig.shards["shard-1"].requests()] == [4, view.request_id]


def test_a_shard_at_a_new_address_is_found_by_the_routing_refresh_with_no_requests_in_flight(
        router_rig):
    # Given a client with the most requests in flight at shard-0, which never answers
    rig = router_rig(shards={"shard-0": {}}, topics={"t": 1})
    rig.shards["shard-0"].holding = True
    client = rig.client()
    for request_id in range(1, limits.CLIENT_REQUESTS_IN_FLIGHT_MAX + 1):
        client.send(protocol.encode_produce(request_id, "t", 0, 1), b"batch")
    rig.shards["shard-0"].wait_for_requests(limits.CLIENT_REQUESTS_IN_FLIGHT_MAX)
    # When shard-0 restarts at a new address, which the controller reports
    rig.shards["shard-0"].close()
    moved = rig.shards["shard-0"] = FakeShard(
        "shard-0", handler=lambda request: answer(request, "shard-0 moved"))
    rig.controller.shard_addresses["shard-0"] = moved.address
    # Then after a refresh the partition's requests reach it, and the requests lost
    # with the old address no longer count against the client
    view = wait_for_reply(client, lambda attempt: list_offsets(1000 + attempt),
                          lambda v: v.error is None and v.request_id >= 1000)
    assert view.offsets.shard == "shard-0 moved"


def test_admin_requests_are_answered_through_the_bridge(router_rig):
    rig = router_rig(topics={"t": 1, "u": 2})
    client = rig.client()
    # When a client creates a topic
    view = client.request(protocol.encode_create_topic(1, "fresh", 3, {"retention.ms": "1000"}))
    # Then the controller's answer comes back
    assert [(t.name, t.partitions, t.config) for t in view.topics] == [
        ("fresh", 3, {"retention.ms": "1000"})]
    # And the router knew the new topic before the reply: a produce goes straight out
    rig.controller.hold_routing()
    client.send(protocol.encode_produce(2, "fresh", 2, 1), b"batch")
    assert rig.shards["shard-0"].wait_for_requests(1)[0].request_id == 2
    assert client.recv()[0].request_id == 2
    rig.controller.allow_routing()
    # And the other admin requests are answered as the controller says
    assert [t.name for t in client.request(protocol.encode_list_topics(3)).topics] == [
        "fresh", "t", "u"]
    assert [t.name for t in client.request(protocol.encode_metadata(4, ["u", "t"])).topics] == [
        "u", "t"]
    assert client.request(protocol.encode_list_groups(5)).groups == ["audit"]
    assert client.request(protocol.encode_status_request(6)).status.nodes == [
        ("node-1", "127.0.0.1", True)]
    assert client.request(protocol.encode_shards_change(7, "addShards", 1)).moves == [
        ("t", 0, "shard-0", "shard-2", 7)]


@pytest.mark.parametrize("error, header", [
    (TopicExistsError("topic 't' already exists"),
     lambda rid: protocol.encode_create_topic(rid, "t", 1, {})),
    (UnavailableError("the broker's controller is not running; retry later"),
     lambda rid: protocol.encode_list_topics(rid)),
    (UnknownTopicError("unknown topic 'nope'"),
     lambda rid: protocol.encode_metadata(rid, ["t", "nope"])),
])
def test_a_controller_error_is_relayed_to_the_client_with_its_code_and_message(
        router_rig, error, header):
    rig = router_rig(topics={"t": 1})
    if not isinstance(error, (TopicExistsError, UnknownTopicError)):
        rig.controller.fail_with = error   # the others come from the metadata itself
    view = rig.client().request(header(1))
    assert (view.request_id, type(view.error), str(view.error)) == (1, type(error), str(error))


def test_fetch_replies_over_a_clients_unsent_budget_are_refused_until_it_reads(router_rig):
    # Given a shard answering each fetch with 4 MiB, holding them for now
    payload = bytes(FETCH_BYTES)
    rig = router_rig(shards={"shard-0": {"handler": lambda request: (
        [protocol.encode_fetch_reply(request.request_id, 0, 0), payload]
        if type(request) is protocol.FetchRequest else answer(request, "shard-0"))}},
        topics={"t": 1})
    shard = rig.shards["shard-0"]
    shard.holding = True
    slow, other = rig.client(receive_hwm=1), rig.client()
    fetches = limits.CLIENT_REPLY_BYTES_UNSENT_MAX // FETCH_BYTES + 8
    # When a client that does not read has that many fetches answered at once
    for request_id in range(1, fetches + 1):
        slow.send(fetch(request_id))
    shard.wait_for_requests(fetches)
    other.send(list_offsets(1))
    shard.wait_for_requests(fetches + 1)
    shard.release(fetches + 1)
    # (the other client's answer comes after them all from the shard: the router has
    # relayed or refused every one of them when it arrives)
    assert other.recv()[0].offsets.shard == "shard-0"
    # Then the replies beyond its budget were refused with tooManyRequests
    replies = [slow.recv() for _ in range(fetches)]
    assert sorted(view.request_id for view, _ in replies) == list(range(1, fetches + 1))
    sent = [view for view, payload in replies if view.error is None and len(payload) == FETCH_BYTES]
    refused = [view for view, _ in replies if isinstance(view.error, TooManyRequestsError)]
    assert len(sent) + len(refused) == fetches
    assert limits.CLIENT_REPLY_BYTES_UNSENT_MAX // FETCH_BYTES <= len(sent) < fetches
    assert all(f"the limit is {limits.CLIENT_REPLY_BYTES_UNSENT_MAX} bytes per client"
               in str(view.error) for view in refused)
    # And once it has read them, its next fetch is answered with the data
    shard.holding = False
    slow.send(fetch(fetches + 1))
    view, data = slow.recv()
    assert (view.request_id, view.error, len(data)) == (fetches + 1, None, FETCH_BYTES)


# --- Budgets one client could use up (issue 11: findings 4, 5 and 8), CurveZMQ on --------

def replies(client, count: int) -> list[tuple[protocol.ReplyView, bytes | None]]:
    """The next ``count`` replies (each within the fakes' bound)."""
    return [client.recv() for _ in range(count)]


def test_a_request_with_frames_its_kind_does_not_carry_is_answered_malformed_with_its_own_id(
        router_rig):
    # Given a router that knows topic t, CurveZMQ on
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)}, curve=True)
    client = rig.client()
    big = bytes(4 * 1024 * 1024)
    # When clients send a fetch with 8 extra 4 MiB frames, a produce without its batch and
    # one with two, a listOffsets, a createTopic and a group request with a frame each
    cases = [(1, [fetch(1), *[big] * 8], "a fetch request carries 0 payload frame(s) after "
                                         f"its header, not 8 ({8 * len(big)} bytes)"),
             (2, [protocol.encode_produce(2, "t", 0, 1)], "carries 1 payload frame(s) after "
                                                          "its header, not 0 (0 bytes)"),
             (3, [protocol.encode_produce(3, "t", 0, 0), b"batch", b"more"], "not 2 (9 bytes)"),
             (4, [list_offsets(4), b"x"], "a listOffsets request carries 0"),
             (5, [protocol.encode_create_topic(5, "u", 1, {}), big], "a createTopic request"),
             (6, [protocol.encode_group_request(6, "fetchOffsets", "g"), b"x"], "not 1")]
    for request_id, frames, message in cases:
        client.socket.send_multipart(frames)
        view, _ = client.recv()
        # Then each is answered malformed, with its own id, saying what it carried
        assert (view.request_id, type(view.error)) == (request_id, MalformedRequestError)
        assert message in str(view.error)
    # And no shard saw any of them, and the next good request is served
    assert client.request(fetch(7)).error is None
    assert [r.request_id for r in rig.shards["shard-0"].requests()] == [7]
    assert rig.shards["shard-1"].requests() == []


def rss_bytes() -> int:
    """This process's resident memory (the router under test runs in it), from /proc,
    once the C allocator has given back the memory freed (what is held is measured)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def replies_until(client, count: int, deadline_s: float) -> list[protocol.ReplyView]:
    """Up to ``count`` replies, those that come before ``deadline_s`` (time.monotonic())."""
    views = []
    while len(views) < count and client.has_reply(max(0.0, deadline_s - time.monotonic())):
        views.append(client.recv()[0])
    return views


def test_hostile_requests_for_unknown_topics_cannot_make_the_router_hold_their_bytes(
        router_rig, monkeypatch):
    # Given a router that has not resolved topics "new-*", and a controller that does not
    # answer for now (its look-ups wait, and what they hold stays held), CurveZMQ on
    monkeypatch.setattr(fakes, "WAIT_S", 300.0)
    monkeypatch.setattr(limits, "ROUTER_REQUEST_HELD_S_MAX", 300.0)
    rig = router_rig(topics={"t": 1}, curve=True)
    rig.controller.hold_routing()
    fetchers, producers = [rig.client() for _ in range(3)], [rig.client() for _ in range(2)]
    frame, batch = bytes(16 * 1024 * 1024), bytes(limits.BATCH_BYTES_MAX)
    rss_before = rss_bytes()
    try:
        # When three clients each send a fetch carrying eight extra 16 MiB frames, and two
        # clients each produce ten maximal batches, to those topics (704 MiB in all)
        for n, client in enumerate(fetchers):
            client.socket.send_multipart([fetch(1, f"new-{n}"), *[frame] * 8], copy=False)
        for n, client in enumerate(producers):
            for request_id in range(1, 11):
                client.socket.send_multipart(
                    [protocol.encode_produce(request_id, f"new-p{n}", 0, 1), batch], copy=False)
        # (bounded by a generous deadline: CurveZMQ on a loaded machine is slow)
        deadline_s = time.monotonic() + 120
        fetched = [replies_until(client, 1, deadline_s) for client in fetchers]
        produced = [replies_until(client, 9, deadline_s) for client in producers]
        # Then the router holds less than its budget for held requests (it holds one
        # batch per producer, 32 MiB), not what was sent
        grown_bytes = rss_bytes() - rss_before
        assert grown_bytes < limits.ROUTER_REQUEST_BYTES_HELD_MAX, grown_bytes
        # And each fetch is answered malformed at once, with its own id
        assert [[(v.request_id, type(v.error)) for v in views] for views in fetched] == [
            [(1, MalformedRequestError)]] * 3
        # And each producer has one batch held (its share is 32 MiB), the others refused
        assert [[v.request_id for v in views] for views in produced] == [list(range(2, 11))] * 2
        assert all(isinstance(v.error, TooManyRequestsError) for views in produced for v in views)
    finally:
        rig.controller.allow_routing()


def test_requests_held_for_their_topic_count_toward_the_clients_requests_in_flight(router_rig):
    # Given a router that does not know topic "new", and a controller slow to answer
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)}, curve=True)
    rig.controller.hold_routing()
    client = rig.client()
    limit = limits.CLIENT_REQUESTS_IN_FLIGHT_MAX
    # When a client sends more requests for "new" than it may have in flight (listOffsets:
    # fetches are also bounded by the bytes they ask for)
    for request_id in range(1, limit + 45):
        client.send(list_offsets(request_id, "new"))
    # Then those past the limit are answered at once, each with its own id, naming it
    refused = replies(client, 44)
    assert [view.request_id for view, _ in refused] == list(range(limit + 1, limit + 45))
    assert all(isinstance(view.error, TooManyRequestsError) and
               f"client has {limit} requests in flight, the limit is {limit}" in str(view.error)
               for view, _ in refused)
    # And a fetch for a known topic is refused too while they are held
    assert isinstance(client.request(fetch(1000)).error, TooManyRequestsError)
    # And when the controller answers, the held ones go out, in order
    rig.controller.wait_for_routing_call()
    rig.controller.add_topic("new", 1, ("shard-0",))
    rig.controller.allow_routing()
    assert [r.request_id for r in rig.shards["shard-0"].wait_for_requests(limit)] == list(
        range(1, limit + 1))
    assert sorted(view.request_id for view, _ in replies(client, limit)) == list(
        range(1, limit + 1))


def test_a_client_over_its_request_bytes_in_flight_is_refused_until_a_reply_comes_back(router_rig):
    # Given a shard that holds every request unanswered
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    client, other = rig.client(), rig.client()
    limit = limits.CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX
    # When a client sends one maximal produce more than fit its bytes in flight
    # (far fewer than its requests in flight), and reads no reply
    fit, batch, view = send_one_maximal_produce_too_many(client, acks=1)
    # Then the last one is refused at once, retriable, naming the bytes and the limit
    assert view.request_id == fit + 1 and isinstance(view.error, TooManyRequestsError)
    assert "bytes of requests in flight; with this one" in str(view.error)
    assert f"over its limit of {limit} bytes" in str(view.error)
    assert [r.request_id for r in shard.wait_for_requests(fit)] == list(range(1, fit + 1))
    # And another client's maximal produce still goes through
    other.send(protocol.encode_produce(1, "t", 0, 1), batch)
    shard.wait_for_requests(fit + 1)
    # When one reply comes back, the client may send one more again
    shard.release(1)
    assert client.recv()[0].request_id == 1
    client.send(protocol.encode_produce(fit + 2, "t", 0, 1), batch)
    assert shard.wait_for_requests(fit + 2)[-1].request_id == fit + 2
    assert not client.has_reply(0.2)
    shard.release(fit + 1)                     # the rest, the other client's among them
    assert sorted(view.request_id for view, _ in replies(client, fit)) == [
        *range(2, fit + 1), fit + 2]


def test_every_clients_request_bytes_in_flight_together_are_bounded_per_router(router_rig,
                                                                               monkeypatch):
    # Given a router budget of three maximal batches (with their headers), and a shard
    # that holds every request unanswered
    rig, shard, batch, limit = holding_shard_under_a_router_budget_of_three_batches(
        router_rig, monkeypatch)
    first, second = rig.client(), rig.client()
    # When two clients, each well within its own share, send two maximal produces each
    for client in (first, second):
        for request_id in (1, 2):
            client.send(protocol.encode_produce(request_id, "t", 0, 1), batch)
    # Then the fourth is refused at once, retriable, naming the router's bytes and limit
    view, _ = second.recv()
    assert view.request_id == 2 and isinstance(view.error, TooManyRequestsError)
    assert "the router has" in str(view.error)
    assert f"over its limit of {limit} bytes" in str(view.error)
    assert len(shard.wait_for_requests(3)) == 3
    # And once one reply comes back, the second client's produce goes
    shard.release(1)
    assert first.recv()[0].request_id == 1
    second.send(protocol.encode_produce(3, "t", 0, 1), batch)
    assert shard.wait_for_requests(4)[-1].request_id == 3
    shard.release(3)
    assert sorted(view.request_id for view, _ in replies(second, 2)) == [1, 3]


def test_the_routers_memory_bytes_show_its_clients_requests_in_flight_until_answered(router_rig):
    # Given a shard that holds every request unanswered
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)})
    shard = rig.shards["shard-0"]
    shard.holding = True
    client, batch = rig.client(), bytes(1_000_000)
    # When a client sends two produces of a 1 MB batch
    for request_id in (1, 2):
        client.send(protocol.encode_produce(request_id, "t", 0, 1), batch)
    shard.wait_for_requests(2)
    # Then the router shows their bytes (with their headers) against its budget
    held_bytes, limit_bytes = rig.router.memory_bytes()["requests_in_flight"]
    assert 2 * len(batch) < held_bytes < 2 * len(batch) + 2 * limits.HEADER_BYTES_MAX
    assert limit_bytes == limits.ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX
    # And once both are answered, none
    shard.release(2)
    replies(client, 2)
    wait_until(lambda: rig.router.memory_bytes()["requests_in_flight"][0] == 0, timeout_s=10)


def test_the_bytes_of_held_requests_are_bounded_per_client_and_per_router(router_rig, monkeypatch):
    # Given a router budget of three 15 MiB batches, and a controller slow to answer
    batch_bytes = 15 * 1024 * 1024
    monkeypatch.setattr(limits, "ROUTER_REQUEST_BYTES_HELD_MAX", 3 * batch_bytes + 4096)
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)}, curve=True)
    rig.controller.hold_routing()
    greedy, other, batch = rig.client(), rig.client(), bytes(batch_bytes)
    # When a client produces five 15 MiB batches to topic "new", unknown yet
    for request_id in range(1, 6):
        greedy.send(protocol.encode_produce(request_id, "new", 0, 1), batch)
    # Then two are held (its share is 32 MiB) and three refused at once, with their ids
    refused = replies(greedy, 3)
    assert [view.request_id for view, _ in refused] == [3, 4, 5]
    assert all(isinstance(view.error, TooManyRequestsError) and
               f"would pass its limit of {limits.CLIENT_REQUEST_BYTES_HELD_MAX} bytes"
               in str(view.error) for view, _ in refused)
    # And another client's batch fits the router's budget once, not twice
    other.send(protocol.encode_produce(1, "new", 0, 1), batch)
    other.send(protocol.encode_produce(2, "new", 0, 1), batch)
    view, _ = other.recv()
    assert view.request_id == 2 and "the router holds" in str(view.error)
    # And when the topic resolves, the three held batches reach the shard whole
    rig.controller.wait_for_routing_call()
    rig.controller.add_topic("new", 1, ("shard-0",))
    rig.controller.allow_routing()
    rig.shards["shard-0"].wait_for_requests(3)
    assert sorted(size for _, _, size in rig.shards["shard-0"].received) == [batch_bytes] * 3


def test_a_topic_whose_look_up_failed_is_decided_by_the_next_routing_refresh(router_rig):
    # Given a controller that fails the look-up of topic "new", which exists
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)}, curve=True)
    rig.controller.add_topic("new", 1, ("shard-1",))
    rig.controller.fail_routing(1)
    client = rig.client()
    # When a client produces to it
    client.send(protocol.encode_produce(1, "new", 0, 1), b"batch")
    # Then the produce is not answered unknownTopic: the next refresh knows the topic,
    # and the held produce goes out
    view, _ = client.recv()
    assert (view.request_id, view.error) == (1, None)
    assert [r.request_id for r in rig.shards["shard-1"].requests()] == [1]


def test_requests_held_while_the_controller_does_not_answer_are_answered_unavailable(
        router_rig, monkeypatch):
    # Given a controller that answers no routing call, and a short bound on holding
    monkeypatch.setattr(limits, "ROUTER_REQUEST_HELD_S_MAX", 0.5)
    rig = router_rig(topics={"t": 1}, curve=True)
    rig.controller.fail_routing(10_000)
    client = rig.client()
    # When a client sends requests for a topic the router does not know
    client.send(fetch(1, "new"))
    client.send(protocol.encode_produce(2, "new", 0, 1), b"batch")
    # Then each is answered unavailable (retriable), with its own id, saying why
    answered = replies(client, 2)
    assert [view.request_id for view, _ in answered] == [1, 2]
    assert all(isinstance(view.error, UnavailableError) and
               "the controller has not answered its look-up within 0.5 s" in str(view.error)
               for view, _ in answered)
    rig.controller.fail_routing(0)


@pytest.fixture
def real_shard(tmp_path):
    """A real ShardServer with topic t's partition 0."""
    from plinth.shards.partition_log import LogConfig
    from plinth.shards.shard_server import ShardServer

    server = ShardServer("shard-0", tmp_path / "shard-0", "127.0.0.1")
    server.start()
    server.call(server.open_partition, "t", 0, LogConfig())
    yield server
    server.stop(5)


def test_error_replies_to_acks_zero_produces_never_make_room_for_more_requests(
        router_rig, real_shard, monkeypatch):
    # Given a real shard behind the router, CurveZMQ on (and fetch bytes unbounded: the
    # count of requests is what this test is about)
    monkeypatch.setattr(limits, "CLIENT_FETCH_BYTES_IN_FLIGHT_MAX", 2**40)
    rig = router_rig(addresses={"shard-0": real_shard.address}, topics={"t": 1}, curve=True)
    client = rig.client()
    limit = limits.CLIENT_REQUESTS_IN_FLIGHT_MAX
    pairs = limit + 100
    # When a client alternates bogus acks=0 produces (each answered with an error) and
    # fetches that wait 60 s at the log end
    for n in range(pairs):
        client.send(protocol.encode_produce(2 * n, "t", 0, 0), b"not a batch")
        client.send(protocol.encode_fetch(2 * n + 1, "t", 0, 0, 1024, 60_000))
    # Then the produces' errors come back, and the fetches past its limit are refused:
    # it has no more than its limit parked at the shard
    answered = replies(client, pairs + pairs - limit)
    errors = [view for view, _ in answered if view.request_id % 2 == 0]
    refused = [view for view, _ in answered if view.request_id % 2 == 1]
    assert len(errors) == pairs and all(view.error is not None for view in errors)
    assert len(refused) == pairs - limit and all(
        isinstance(view.error, TooManyRequestsError) for view in refused)
    assert not client.has_reply(0.5)


def replies_of_all(clients, count: int, deadline_s: float) -> int:
    """How many replies ``clients`` got together, waiting until ``count`` or ``deadline_s``."""
    poller = zmq.Poller()
    for client in clients:
        poller.register(client.socket, zmq.POLLIN)
    got = 0
    while got < count and time.monotonic() < deadline_s:
        for sock, _ in poller.poll(max(0, int((deadline_s - time.monotonic()) * 1000))):
            sock.recv_multipart()
            got += 1
    return got


def test_clients_parking_more_fetches_than_a_shard_has_places_leave_room_for_a_long_poll(
        router_rig, tmp_path, monkeypatch):
    from plinth.format.record_batch import BatchBuilder
    from plinth.shards.partition_log import LogConfig
    from plinth.shards.shard_server import ShardServer

    # Given a real shard with 1,000 places for parked fetches behind the router, CurveZMQ on
    # (fetch bytes unbounded: the shard's places are what this test is about)
    monkeypatch.setattr(limits, "PARKED_FETCHES_MAX", 1000)
    monkeypatch.setattr(limits, "CLIENT_FETCH_BYTES_IN_FLIGHT_MAX", 2**40)
    server = ShardServer("shard-0", tmp_path / "shard-0", "127.0.0.1")
    server.start()
    try:
        for partition in (0, 1):
            server.call(server.open_partition, "t", partition, LogConfig())
        rig = router_rig(addresses={"shard-0": server.address}, topics={"t": 2}, curve=True)
        # When five connections of one tenant each park as many 60 s fetches as they may
        # (1,280 in all): those beyond the places are answered at once, empty
        flood, limit = [rig.client() for _ in range(5)], limits.CLIENT_REQUESTS_IN_FLIGHT_MAX
        for client in flood:
            for request_id in range(limit):
                client.send(protocol.encode_fetch(request_id, "t", 0, 0, 1024, 60_000))
        assert replies_of_all(flood, 5 * limit - 1000, time.monotonic() + 30) == 5 * limit - 1000
        # And another client long-polls partition 1 for 20 s
        consumer = rig.client()
        consumer.send(protocol.encode_fetch(1, "t", 1, 0, 1 << 20, 20_000))
        # Then its fetch parks (it is not answered at once)
        assert not consumer.has_reply(1.0), "the long poll was answered at once"
        # And a record appended to partition 1 answers it with that record
        builder = BatchBuilder()
        builder.append(None, b"for the consumer", time.time_ns() // 1_000_000, None)
        consumer.send(protocol.encode_produce(2, "t", 1, 1), builder.build())
        got = {view.request_id: (view, data) for view, data in replies(consumer, 2)}
        view, data = got[1]
        assert view.error is None and b"for the consumer" in (data or b"")
    finally:
        server.stop(5)


def test_a_client_whose_identity_starts_with_the_routers_mark_is_refused(router_rig):
    from plinth.router.requests_in_flight import UNCOUNTED_MARK

    # Given a client that chose an identity that looks like a marked one
    rig = router_rig(topics={"t": 1}, curve=True)
    client = rig.client(routing_id=UNCOUNTED_MARK + b"\x00\x01\x02\x03\x04")
    # When it fetches / Then it is refused, and no shard sees the fetch
    view = client.request(fetch(1))
    assert isinstance(view.error, MalformedRequestError) and "may not start with" in str(view.error)
    assert rig.shards["shard-0"].requests() == rig.shards["shard-1"].requests() == []


def large_fetch_handler(payload: bytes):
    return lambda request: ([protocol.encode_fetch_reply(request.request_id, 0, 0), payload]
                            if type(request) is protocol.FetchRequest else answer(request, "s"))


def test_clients_that_stop_reading_leave_room_for_a_client_that_reads(router_rig):
    # Given a shard answering each fetch with 4 MiB, CurveZMQ on
    rig = router_rig(shards={"shard-0": {"handler": large_fetch_handler(bytes(FETCH_BYTES))}},
                     topics={"t": 1}, curve=True)
    # When ten clients that do not read each send fetches worth 96 MiB, together
    # almost twice the router's whole budget for unsent replies
    stalled = [rig.client(receive_hwm=1) for _ in range(10)]
    per_client = 96 * 1024 * 1024 // FETCH_BYTES
    for client in stalled:
        for request_id in range(per_client):
            client.send(fetch(request_id))
    rig.shards["shard-0"].wait_for_requests(10 * per_client)
    reader = rig.client()
    # Then a client that reads gets every one of its fetches, with data
    for request_id in range(1, 21):
        reader.send(fetch(request_id))
        view, data = reader.recv()
        assert (view.request_id, view.error, len(data or b"")) == (request_id, None, FETCH_BYTES)
    assert len(rig.shards["shard-0"].requests()) == 10 * per_client + 20


def test_a_client_whose_replies_make_no_progress_is_disconnected_and_its_share_freed(
        router_rig, monkeypatch):
    # Given a router whose budget is two clients' shares, disconnecting clients whose
    # replies make no progress for 3 s, and a shard answering each fetch with 4 MiB
    monkeypatch.setattr(limits, "ROUTER_REPLY_BYTES_UNSENT_MAX",
                        2 * limits.CLIENT_REPLY_BYTES_UNSENT_MAX)
    monkeypatch.setattr(limits, "CLIENT_REPLIES_STALLED_MS_MAX", 3_000)
    rig = router_rig(shards={"shard-0": {"handler": large_fetch_handler(bytes(FETCH_BYTES))}},
                     topics={"t": 1}, curve=True)
    # And two clients that do not read, holding the whole budget (beyond their shares,
    # what the kernel's buffers took)
    stalled = [rig.client(receive_hwm=1) for _ in range(2)]
    per_client = limits.CLIENT_REPLY_BYTES_UNSENT_MAX // FETCH_BYTES + 8
    for client in stalled:
        for request_id in range(per_client):
            client.send(fetch(request_id))
    rig.shards["shard-0"].wait_for_requests(2 * per_client)
    reader = rig.client()
    view = reader.request(fetch(1))
    assert isinstance(view.error, TooManyRequestsError) and "the router holds" in str(view.error)
    # When they hold it past the timeout / Then they are disconnected, and a client that
    # reads gets data again (retrying after a backoff, as a consumer does)
    deadline_s = time.monotonic() + 30
    for request_id in itertools.count(2):
        reader.send(fetch(request_id))
        view, data = reader.recv()
        if view.error is None:
            break
        assert isinstance(view.error, TooManyRequestsError) and time.monotonic() < deadline_s
        time.sleep(limits.CLIENT_RETRY_BACKOFF_MS / 1000)
    assert len(data) == FETCH_BYTES


def test_a_clients_fetches_may_ask_the_shards_for_its_fetch_bytes_and_no_more(router_rig):
    # Given a shard that holds every request unanswered, CurveZMQ on
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-0",)}, curve=True)
    shard = rig.shards["shard-0"]
    shard.holding = True
    client, other = rig.client(), rig.client()
    fitting = limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // limits.FETCH_BYTES_MAX
    # When a client sends maximal fetches, two more than its fetch bytes hold
    for request_id in range(1, fitting + 3):
        client.send(protocol.encode_fetch(request_id, "t", 0, 0, limits.FETCH_BYTES_MAX, 0))
    # Then the two past the limit are answered at once, naming it, and never reach the shard
    refused = replies(client, 2)
    assert [view.request_id for view, _ in refused] == [fitting + 1, fitting + 2]
    assert all(isinstance(view.error, TooManyRequestsError) and
               str(limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX) in str(view.error) for view, _ in refused)
    # And another client's fetch still goes through
    other.send(fetch(1))
    assert len(shard.wait_for_requests(fitting + 1)) == fitting + 1
    # And once the shard answers one, the client may fetch again
    shard.release(1)
    assert client.recv()[0].request_id == 1
    client.send(protocol.encode_fetch(99, "t", 0, 0, limits.FETCH_BYTES_MAX, 0))
    assert shard.wait_for_requests(fitting + 2)[-1].request_id == 99


def test_a_shard_that_no_longer_leads_makes_the_router_refresh_and_the_retry_reach_the_leader(
        router_rig, monkeypatch):
    # Given a router whose table says shard-0 leads t-0, while the controller already
    # knows shard-1 does (a leader change), and no timed refresh for the test's length
    monkeypatch.setattr(limits, "ROUTING_REFRESH_INTERVAL_S", 3600.0)
    not_leader = lambda request: [protocol.encode_error(request.request_id, NotLeaderError(
        f"shard-0 does not lead {request.topic}-{request.partition}"))]
    rig = router_rig(shards={"shard-0": {"handler": not_leader}, "shard-1": {}},
                     topics={"t": 1}, owners={"t": ("shard-0",)})
    client = rig.client()
    calls_before = rig.controller.routing_calls
    rig.controller.owners["t"] = ("shard-1",)
    # When a client produces to t-0 / Then the old leader's notLeader reaches it
    first = client.request(protocol.encode_produce(1, "t", 0, 1), b"batch")
    assert isinstance(first.error, NotLeaderError) and "shard-0 does not lead t-0" in str(first.error)
    # And the router fetched a new table at once, so the client's next requests reach shard-1
    view = wait_for_reply(client, lambda attempt: list_offsets(100 + attempt),
                          lambda v: v.error is None)
    assert view.offsets.shard == "shard-1" and rig.controller.routing_calls > calls_before
    retried = client.request(protocol.encode_produce(2, "t", 0, 1), b"batch")
    assert (retried.kind, retried.error) == ("produce", None)
    assert [r.kind for r in rig.shards["shard-1"].requests()][-1] == "produce"


def test_a_shard_that_deleted_the_topic_makes_the_router_refresh_and_answer_unknown_topic_itself(
        router_rig, monkeypatch):
    # Given a router whose table still has topic t on shard-0, which deleted it (it answers
    # unknownTopic, shards/deleted_partitions.py), a controller that no longer has t, and
    # no timed refresh for the test's length
    monkeypatch.setattr(limits, "ROUTING_REFRESH_INTERVAL_S", 3600.0)
    deleted = lambda request: [protocol.encode_error(request.request_id, UnknownTopicError(
        f"topic {request.topic!r} was deleted (at 2026-12-07T19:30:00Z)"))]
    rig = router_rig(shards={"shard-0": {"handler": deleted}}, topics={"t": 1},
                     owners={"t": ("shard-0",)})
    client = rig.client()
    calls_before = rig.controller.routing_calls
    del rig.controller.topics["t"], rig.controller.owners["t"]
    # When a client produces to t-0 / Then the shard's answer reaches it
    first = client.request(protocol.encode_produce(1, "t", 0, 1), b"batch")
    assert isinstance(first.error, UnknownTopicError) and "was deleted" in str(first.error)
    # And the router fetched a new table at once (no timed refresh would have): it
    # answers t's requests itself from then on, sending none to shard-0
    wait_for_reply(client, lambda attempt: list_offsets(100 + attempt),
                   lambda v: "unknown topic 't'" in str(v.error))
    assert rig.controller.routing_calls > calls_before
    sent_before = len(rig.shards["shard-0"].requests())
    again = client.request(protocol.encode_produce(2, "t", 0, 1), b"batch")
    assert isinstance(again.error, UnknownTopicError) and "unknown topic 't'" in str(again.error)
    assert len(rig.shards["shard-0"].requests()) == sent_before


def test_create_topic_reaches_the_controller_with_its_replication_factor(router_rig):
    # Given a router / When a client creates topics with a factor and without one
    rig = router_rig(topics={"t": 1})
    client = rig.client()
    with_factor = client.request(protocol.encode_create_topic(1, "three", 2, {}, replication_factor=3))
    default = client.request(protocol.encode_create_topic(2, "plain", 2, {}))
    # Then the controller got each factor (0: its default)
    assert (with_factor.error, default.error) == (None, None)
    assert rig.controller.replication_factors == {"three": 3, "plain": 0}


def test_a_partition_without_a_leader_is_answered_unavailable_naming_it(router_rig):
    # Given a replicated partition the controller has no leader for (offline)
    rig = router_rig(topics={"t": 2}, owners={"t": ("shard-0", "")})
    client = rig.client()
    # When a client produces to it / Then it is unavailable (retriable), saying why
    view = client.request(protocol.encode_produce(1, "t", 1, 1), b"batch")
    assert isinstance(view.error, UnavailableError)
    assert "t-1 has no leader (offline" in str(view.error)


def test_a_shard_that_is_down_makes_the_router_refresh_and_the_retry_reach_the_new_leader(
        router_rig, monkeypatch):
    # Given a router whose table says shard-0 leads t-0, shard-0 down, and a controller
    # that already made shard-1 the leader; no timed refresh for the test's length
    monkeypatch.setattr(limits, "ROUTING_REFRESH_INTERVAL_S", 3600.0)
    rig = router_rig(shards={"shard-0": {}, "shard-1": {}}, topics={"t": 1},
                     owners={"t": ("shard-0",)})
    client = rig.client()
    rig.shards["shard-0"].close()
    view = wait_for_reply(client, lambda attempt: list_offsets(attempt),
                          lambda v: isinstance(v.error, UnavailableError))
    rig.controller.owners["t"] = ("shard-1",)
    # When the client retries / Then the router has a new table, and shard-1 answers
    view = wait_for_reply(client, lambda attempt: list_offsets(1000 + attempt),
                          lambda v: v.error is None)
    assert view.offsets.shard == "shard-1"


def test_a_group_request_at_a_shard_that_no_longer_leads_its_slot_is_answered_unavailable(
        router_rig):
    # Given two slots led by shard-0, which holds a request of a group in each (it is
    # stopped: its connection stays up, it answers nothing)
    owners = {"t": ("shard-1",), topics.OFFSETS_TOPIC: ("shard-0", "shard-0")}
    rig = router_rig(topics={"t": 1, topics.OFFSETS_TOPIC: 2}, owners=owners)
    by_slot = {topics.offsets_slot(g, 2): g for g in (f"g{n}" for n in range(40))}
    rig.shards["shard-0"].holding = True
    client = rig.client()
    client.send(protocol.encode_group_request(1, "fetchOffsets", by_slot[0]))
    client.send(protocol.encode_group_request(2, "fetchOffsets", by_slot[1]))
    rig.shards["shard-0"].wait_for_requests(2)
    # When the controller makes shard-1 the leader of slot 0 (the router's timed
    # refresh brings the table)
    rig.controller.owners[topics.OFFSETS_TOPIC] = ("shard-1", "shard-0")
    # Then the request of slot 0's group is answered unavailable, naming the slot
    view, _ = client.recv()
    assert view.request_id == 1 and isinstance(view.error, UnavailableError)
    assert f"{topics.OFFSETS_TOPIC}-0 is no longer led by shard-0" in view.error.message
    # And the one whose slot shard-0 still leads waits for shard-0's own answer
    rig.shards["shard-0"].release(2)
    answers = {}
    while 2 not in answers:
        view, _ = client.recv()
        answers[view.request_id] = view
    assert (answers[2].kind, answers[2].error) == ("committed", None)
    # And the retry of slot 0's request reaches its new leader
    view = client.request(protocol.encode_group_request(3, "fetchOffsets", by_slot[0]))
    assert view.error is None and [r.request_id for r in rig.shards["shard-1"].requests()] == [3]


def test_list_offsets_by_time_of_a_partition_spanning_shards_asks_the_controller_at_that_time(
        router_rig):
    # Given a partition whose history spans two shards
    rig = router_rig(topics={"t": 1}, owners={"t": ("shard-1",)},
                     ranges={"t": {0: ((0, "shard-0"), (100, "shard-1"))}})
    # When a client lists its offsets at a time
    view = rig.client().request(protocol.encode_list_offsets(1, "t", 0, 1_700_000_000_000))
    # Then the controller is asked at that time
    assert view.error is None
    assert rig.controller.time_lookups == [1_700_000_000_000]


def test_the_error_replies_the_router_makes_are_counted_by_code_and_the_shards_are_not(
        router_rig):
    # Given a router whose shard-0 answers every fetch offsetOutOfRange itself
    def shard_refusing_fetches(request):
        if isinstance(request, protocol.FetchRequest):
            return [protocol.encode_error(request.request_id, OffsetOutOfRangeError("past end"))]
        return fakes.answer(request, "shard-0")
    rig = router_rig(shards={"shard-0": {"handler": shard_refusing_fetches}},
                     topics={"t": 1})
    client = rig.client()
    # When clients get errors the router makes: a partition out of range, a batch over
    # the limit, an unknown topic (twice), and the controller's answer to a create
    assert isinstance(client.request(fetch(1, partition=5)).error, PartitionOutOfRangeError)
    assert isinstance(client.request(protocol.encode_produce(2, "t", 0, 1),
                                     bytes(limits.BATCH_BYTES_MAX + 1)).error,
                      RecordTooLargeError)
    for rid in (3, 4):
        assert isinstance(client.request(protocol.encode_produce(rid, "nope", 0, 1),
                                         b"batch").error, UnknownTopicError)
    assert isinstance(client.request(protocol.encode_create_topic(5, "t", 1, {})).error,
                      TopicExistsError)
    # And a shard's own error, relayed, and answers that are no error
    assert isinstance(client.request(fetch(6)).error, OffsetOutOfRangeError)
    assert client.request(protocol.encode_produce(7, "t", 0, 1), b"batch").error is None
    assert client.request(protocol.encode_list_topics(8)).error is None
    # Then the router counted its own errors by code (the shard counts its own)
    assert rig.router.errors() == {"partitionOutOfRange": 1, "recordTooLarge": 1,
                                   "unknownTopic": 2, "topicExists": 1}
