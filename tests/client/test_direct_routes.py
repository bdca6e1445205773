"""Which partition goes to which leader's direct socket, and asking again (client/direct_routes.py).

Real ZeroMQ sockets (a DEALER connects to a port nobody listens on: ZeroMQ connects
in the background), scripted metadata replies, and explicit clock values.
"""

from __future__ import annotations

import pytest
import zmq

from plinth import limits, protocol
from plinth.client.direct_routes import DirectRoutes
from plinth.errors import NotLeaderError, UnknownTopicError

OLD_LEADER = "tcp://127.0.0.1:5701"
NEW_LEADER = "tcp://127.0.0.1:5702"
MIN_S = limits.CLIENT_METADATA_REFRESH_INTERVAL_MS_MIN / 1000
MAX_S = limits.CLIENT_METADATA_REFRESH_INTERVAL_MS_MAX / 1000


@pytest.fixture
def routes():
    context = zmq.Context()
    routes = DirectRoutes(context, zmq.Poller())
    yield routes
    routes.close()
    context.term()


def answer(routes, request_id, *addresses, error=None):
    """The router's metadata reply to ``request_id``: topic "t" with these addresses."""
    topics = [] if error else [protocol.TopicInfo("t", len(addresses),
                                                  direct_addresses=list(addresses))]
    assert routes.take_metadata(protocol.ReplyView(request_id, "metadata", error, topics=topics))


def lose_the_leader(routes, request_id=100):
    routes.sent(("t", 0), request_id, OLD_LEADER)
    routes.answered(protocol.ReplyView(request_id, "error", NotLeaderError("not the leader")),
                    OLD_LEADER)


def next_ask_s(routes, after_s):
    """The first time (in 10 ms steps, bounded) at which the routes want "t" asked again."""
    for step in range(1, int(10 * MAX_S / 0.01)):
        if routes.topics_to_ask("t", after_s + step * 0.01):
            return after_s + step * 0.01
    return None


def test_a_partition_goes_to_the_direct_socket_its_metadata_names(routes):
    assert routes.topics_to_ask("t", 0.0)
    routes.asking("t", 1, 0.0)
    answer(routes, 1, OLD_LEADER, "")
    assert routes.socket_for(("t", 0)).address == OLD_LEADER
    assert routes.socket_for(("t", 1)) is None   # no direct address: the router
    assert not routes.topics_to_ask("t", 1_000.0)


@pytest.mark.parametrize("address,direct", [
    ("ipc:///tmp/plinth-data/sockets/shard-0.direct", True),   # the embedded broker's
    ("inproc://shard-0", False),
    ("udp://127.0.0.1:5701", False),
])
def test_a_direct_address_is_used_only_over_tcp_or_ipc(routes, address, direct):
    routes.asking("t", 1, 0.0)
    answer(routes, 1, address)
    socket = routes.socket_for(("t", 0))
    assert (socket is not None and socket.address == address) == direct


def test_a_lost_route_is_asked_for_again_until_a_reply_names_the_new_leader(routes):
    # Given a route to the old leader, which then says it no longer leads
    routes.asking("t", 1, 0.0)
    answer(routes, 1, OLD_LEADER)
    lose_the_leader(routes)
    assert routes.socket_for(("t", 0)) is None
    # When every reply during the election names no leader
    now_s, waits_s = 10.0, []
    for request_id in range(2, 10):
        asked_s = next_ask_s(routes, now_s)
        assert asked_s is not None, f"ask {request_id}: the topic was not asked again"
        routes.asking("t", request_id, asked_s)
        answer(routes, request_id, "")
        waits_s.append(asked_s - now_s)
        now_s = asked_s
    # Then the topic is asked again each time: at once (the last ask was long ago),
    # then after a wait that doubles up to the max
    assert waits_s[0] == pytest.approx(0.01, abs=0.001)
    assert waits_s[1] == pytest.approx(2 * MIN_S, abs=0.011)
    assert waits_s[-1] == pytest.approx(MAX_S, abs=0.011)
    assert all(a <= b + 0.011 for a, b in zip(waits_s, waits_s[1:]))
    # And once a reply names the new leader, the partition goes there and the asking stops
    asked_s = next_ask_s(routes, now_s)
    routes.asking("t", 50, asked_s)
    answer(routes, 50, NEW_LEADER)
    assert routes.socket_for(("t", 0)).address == NEW_LEADER
    assert not routes.topics_to_ask("t", asked_s + 1_000.0)


def test_a_lost_route_is_asked_for_again_when_a_reply_never_comes_or_is_an_error(routes):
    routes.asking("t", 1, 0.0)
    answer(routes, 1, OLD_LEADER)
    lose_the_leader(routes)
    routes.asking("t", 2, 5.0)           # this reply never comes
    asked_s = next_ask_s(routes, 5.0)
    assert asked_s is not None
    routes.asking("t", 3, asked_s)
    answer(routes, 3, error=UnknownTopicError("no topic t"))
    assert next_ask_s(routes, asked_s) is not None


def test_a_direct_socket_that_deleted_the_topic_drops_the_route_and_the_router_is_asked(routes):
    # Given a route to t-0's shard, which then deleted the topic (it answers unknownTopic:
    # shards/deleted_partitions.py); a topic t created again may be on another shard
    routes.asking("t", 1, 0.0)
    answer(routes, 1, OLD_LEADER)
    routes.sent(("t", 0), 100, OLD_LEADER)
    routes.answered(protocol.ReplyView(100, "error", UnknownTopicError(
        "topic 't' was deleted (at 2026-12-07T19:30:00Z)")), OLD_LEADER)
    # Then t-0's requests go through the router, and t is asked for again
    assert routes.socket_for(("t", 0)) is None
    assert next_ask_s(routes, 10.0) is not None
    # And once the router names the new topic's shard, t-0 goes there
    routes.asking("t", 2, 10.0)
    answer(routes, 2, NEW_LEADER)
    assert routes.socket_for(("t", 0)).address == NEW_LEADER


def test_a_partition_that_never_had_a_direct_address_is_not_asked_for_again(routes):
    # A broker that offers no direct sockets (CurveZMQ): the router is the route, for good
    routes.asking("t", 1, 0.0)
    answer(routes, 1, "", "")
    assert routes.socket_for(("t", 0)) is None
    assert not routes.topics_to_ask("t", 1_000.0)


def test_a_success_through_the_router_for_a_lost_partition_ends_the_backoff(routes):
    # Given a lost route whose topic has been asked for many times in vain
    routes.asking("t", 1, 0.0)
    answer(routes, 1, OLD_LEADER)
    lose_the_leader(routes)
    now_s = 10.0
    for request_id in range(2, 10):
        now_s = next_ask_s(routes, now_s)
        routes.asking("t", request_id, now_s)
        answer(routes, request_id, "")
    assert not routes.topics_to_ask("t", now_s + MAX_S - 0.05)
    # When a produce for the partition succeeds through the router (the election is over)
    routes.sent(("t", 0), 200, "")
    routes.answered(protocol.ReplyView(200, "produce", None, base_offset=5), "")
    # Then the next ask waits only the minimum
    assert next_ask_s(routes, now_s) == pytest.approx(now_s + MIN_S, abs=0.011)


def test_a_dropped_connection_answers_its_requests_unavailable_and_asks_for_the_leader(routes):
    # Given a route to a real direct socket, connected, with a request in flight
    context = zmq.Context.instance()
    shard = context.socket(zmq.ROUTER)
    port = shard.bind_to_random_port("tcp://127.0.0.1")
    address = f"tcp://127.0.0.1:{port}"
    routes.asking("t", 1, 0.0)
    answer(routes, 1, address)
    direct = routes.socket_for(("t", 0))
    direct.dealer.send(b"request 7")
    assert shard.poll(5_000), "the direct socket never connected"
    shard.recv_multipart()
    routes.sent(("t", 0), 7, address)
    # When the shard's socket goes away
    shard.close(linger=0)
    replies = []
    for _ in range(50):   # bounded: the disconnect event arrives within the heartbeat timeout
        if not direct.monitor.poll(limits.DIRECT_HEARTBEAT_TIMEOUT_MS):
            break
        replies = routes.on_monitor(direct.monitor)
        if replies:
            break
    # Then its request in flight is answered unavailable, the partition goes through
    # the router, and its topic is asked for again
    assert [(r.request_id, type(r.error).__name__) for r in replies] == [(7, "UnavailableError")]
    assert routes.socket_for(("t", 0)) is None
    assert next_ask_s(routes, 10.0) is not None
