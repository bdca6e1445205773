"""router/shard_connections.py: real DEALERs to real ROUTER sockets playing shards, and
their connection monitors driven by a real poller, as the router's loop drives them."""

from __future__ import annotations

import time

import pytest
import zmq

from plinth import protocol
from plinth.router.shard_connections import ShardConnections
from tests.router.fakes import WAIT_S, FakeShard


@pytest.fixture
def connections():
    poller = zmq.Poller()
    made = ShardConnections(zmq.Context.instance(), poller)
    yield made, poller
    made.close()


def run_loop_until(shards: ShardConnections, poller: zmq.Poller, condition) -> list[str]:
    """Poll and hand readable sockets to ``shards`` as the router loop does, until
    ``condition(replied)``; ``replied``: the shard ids a reply came from, in order."""
    replied: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while not condition(replied):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {WAIT_S} s")
        for sock, _ in poller.poll(50):
            shard_id = shards.on_readable(sock)
            if shard_id is not None:
                sock.recv_multipart()
                replied.append(shard_id)
    return replied


def round_trip(shards: ShardConnections, poller: zmq.Poller, shard_id: str) -> None:
    """Send ``shard_id`` a request and run the loop until its reply comes back."""
    shards.dealer_if_up(shard_id).send_multipart([b"client", protocol.encode_list_offsets(1, "t", 0)])
    run_loop_until(shards, poller, lambda replied: shard_id in replied)


def test_each_shard_gets_one_dealer_kept_while_its_address_stays(connections):
    shards, _ = connections
    assert shards.apply({"shard-0": "tcp://127.0.0.1:5", "shard-1": "tcp://127.0.0.1:6"}) == [
        "shard-0", "shard-1"]
    dealer = shards.dealer_if_up("shard-0")
    assert dealer is not None and dealer is not shards.dealer_if_up("shard-1")
    # A table that repeats the address, or leaves a shard out, keeps its dealer
    assert shards.apply({"shard-0": "tcp://127.0.0.1:5"}) == []
    assert shards.dealer_if_up("shard-0") is dealer and shards.is_up("shard-1")
    assert shards.dealer_if_up("shard-9") is None


def test_a_shard_at_a_new_address_gets_a_new_dealer_and_the_old_one_is_closed(connections):
    shards, poller = connections
    shards.apply({"shard-0": "tcp://127.0.0.1:5"})
    old = shards.dealer_if_up("shard-0")
    assert shards.apply({"shard-0": "tcp://127.0.0.1:7"}) == ["shard-0"]
    assert old.closed and shards.dealer_if_up("shard-0") is not old
    assert shards.on_readable(old) is None
    # The closed sockets left the poller (polled, a closed socket reads as fd 0, always
    # ready): only the new DEALER and its monitor are left
    assert old not in [sock for sock, _ in poller.sockets]
    assert len(poller.sockets) == 2 and poller.poll(0) == []


def test_replies_come_back_on_the_dealer_of_the_shard_that_sent_them(connections):
    shards, poller = connections
    fakes = [FakeShard("shard-0"), FakeShard("shard-1")]
    try:
        shards.apply({fake.shard_id: fake.address for fake in fakes})
        round_trip(shards, poller, "shard-1")
        round_trip(shards, poller, "shard-0")
    finally:
        for fake in fakes:
            fake.close()


def test_a_shard_whose_connection_drops_is_down_until_it_reconnects(connections):
    # Given a connection to shard-0 that has carried a request
    shards, poller = connections
    shard = FakeShard("shard-0")
    shards.apply({"shard-0": shard.address})
    round_trip(shards, poller, "shard-0")
    # When the shard's socket goes away
    shard.close()
    # Then the shard is down once its monitor says so
    run_loop_until(shards, poller, lambda _: not shards.is_up("shard-0"))
    assert shards.dealer_if_up("shard-0") is None
    # And up again when a shard listens at its address
    shard = FakeShard("shard-0", port=shard.port)
    try:
        run_loop_until(shards, poller, lambda _: shards.is_up("shard-0"))
        round_trip(shards, poller, "shard-0")
    finally:
        shard.close()


def test_a_dropped_connection_is_reported_lost_once_with_a_new_dealer_to_the_same_address(
        connections):
    # Given a connection to shard-0 that has carried a request
    shards, poller = connections
    shard = FakeShard("shard-0")
    shards.apply({"shard-0": shard.address})
    round_trip(shards, poller, "shard-0")
    old = shards.dealer_if_up("shard-0")
    assert shards.take_lost() == []
    # When the shard's socket goes away
    shard.close()
    run_loop_until(shards, poller, lambda _: not shards.is_up("shard-0"))
    # Then it is reported lost once, and the DEALER that may hold requests queued for
    # it is closed: none of them can reach a shard that comes back at the address
    assert shards.take_lost() == ["shard-0"] and shards.take_lost() == []
    assert old.closed
    assert len(poller.sockets) == 2   # the new DEALER and its monitor
    # And the new DEALER carries requests once a shard listens there again
    shard = FakeShard("shard-0", port=shard.port)
    try:
        run_loop_until(shards, poller, lambda _: shards.is_up("shard-0"))
        assert shards.dealer_if_up("shard-0") is not old
        round_trip(shards, poller, "shard-0")
        assert [r.request_id for r in shard.requests()] == [1]
    finally:
        shard.close()


def test_replacing_the_connections_of_shards_that_just_went_away_leaves_the_context_working():
    # Given a context of its own (if its I/O thread hangs, only this test's sockets do)
    context = zmq.Context()
    poller = zmq.Poller()
    shards = ShardConnections(context, poller)
    # When shards go away one after another, each replaced at once by a new address
    # while its disconnect is still being noticed
    for attempt in range(40):
        shard = FakeShard("shard-0")
        shards.apply({"shard-0": shard.address})
        round_trip(shards, poller, "shard-0")
        shard.close()
        shards.apply({"shard-0": f"tcp://127.0.0.1:{9 + attempt % 2}"})
    # Then the context still carries requests and replies
    shard = FakeShard("shard-1")
    try:
        shards.apply({"shard-1": shard.address})
        round_trip(shards, poller, "shard-1")
    finally:
        shard.close()
    shards.close()
    context.term()
