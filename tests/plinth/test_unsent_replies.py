"""plinth/unsent_replies.py with real sockets: a ROUTER sends tracked replies to a
DEALER that stops reading, then reads."""

from __future__ import annotations

import pytest
import zmq

from plinth import limits
from plinth.unsent_replies import UnsentReplies
from tests.support import wait_until

REPLY_BYTES = 4 * 1024 * 1024


@pytest.fixture
def pair():
    """(router socket, the client's identity, the client's DEALER that does not read)."""
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.RCVHWM, 1)
    client.setsockopt(zmq.RCVBUF, 64 * 1024)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(f"tcp://127.0.0.1:{port}")
    client.send(b"hello")
    identity, _ = router.recv_multipart()
    yield router, identity, client
    client.close()
    router.close()


def send_tracked(router, identity, unsent: UnsentReplies, payload) -> None:
    tracker = router.send_multipart([identity, b"header", payload], zmq.NOBLOCK, copy=False, track=True)
    unsent.add(identity, tracker, len(payload))


def test_replies_to_a_client_that_does_not_read_count_until_its_budget_refuses_more(pair):
    router, identity, _client = pair
    unsent, payload = UnsentReplies("the router", limits.ROUTER_REPLY_BYTES_UNSENT_MAX), memoryview(bytearray(REPLY_BYTES))
    share_replies = limits.CLIENT_REPLY_BYTES_UNSENT_MAX // REPLY_BYTES
    # The client's receive queue and kernel buffer take a reply or two before it
    # stops draining; those are written, so they stop counting.
    absorbed_max = 4
    sent = 0
    while unsent.over_budget(identity, REPLY_BYTES) is None:
        send_tracked(router, identity, unsent, payload)
        sent += 1
        assert sent <= share_replies + absorbed_max, "never refused"
        # The share is never passed
        assert unsent.bytes_for(identity) <= limits.CLIENT_REPLY_BYTES_UNSENT_MAX
    refusal = unsent.over_budget(identity, REPLY_BYTES)
    assert f"the limit is {limits.CLIENT_REPLY_BYTES_UNSENT_MAX} bytes per client" in refusal
    # And the reply that would pass it is refused
    assert unsent.bytes_for(identity) + REPLY_BYTES > limits.CLIENT_REPLY_BYTES_UNSENT_MAX
    assert unsent.bytes_for(identity) == unsent.total_bytes
    assert sent >= share_replies
    # A different client is not refused for this one's backlog
    assert unsent.over_budget(b"another client", REPLY_BYTES) is None


def test_clients_that_do_not_read_cannot_pass_the_routers_budget_together(monkeypatch):
    # Given a router budget of two replies, and a client with one reply ZeroMQ still holds
    # (a tracked frame libzmq has not released: a socket reply may be written any moment,
    # which would make the count race the assertions)
    unsent = UnsentReplies("the router", 2 * REPLY_BYTES)
    held = zmq.Frame(bytearray(REPLY_BYTES), track=True)
    unsent.add(b"a client", held.tracker, REPLY_BYTES)
    # Then another client may have one more, and a third reply from anyone is refused
    assert unsent.over_budget(b"another client", REPLY_BYTES) is None
    assert unsent.over_budget(b"another client", REPLY_BYTES + 1) == (
        f"the router holds {REPLY_BYTES} bytes of fetch replies its clients have not read, "
        f"and this one has {REPLY_BYTES + 1}; the limit is {2 * REPLY_BYTES} bytes")
    assert not held.tracker.done


def test_replies_stop_counting_once_the_client_reads_them(pair):
    router, identity, client = pair
    unsent, payload = UnsentReplies("the router", limits.ROUTER_REPLY_BYTES_UNSENT_MAX), memoryview(bytearray(REPLY_BYTES))
    for _ in range(8):
        send_tracked(router, identity, unsent, payload)
    assert unsent.bytes_for(identity) > 0
    for _ in range(8):
        assert client.poll(5_000)
        client.recv_multipart()
    # libzmq frees a sent message on its I/O thread; the router notices on its next call
    wait_until(lambda: router.poll(0) is not None and unsent.bytes_for(identity) == 0, timeout_s=10)
    unsent.sweep()
    assert unsent.total_bytes == 0


def test_replies_dropped_with_a_disconnected_client_stop_counting(pair):
    router, identity, client = pair
    unsent, payload = UnsentReplies("the router", limits.ROUTER_REPLY_BYTES_UNSENT_MAX), memoryview(bytearray(REPLY_BYTES))
    for _ in range(8):
        send_tracked(router, identity, unsent, payload)
    client.close()
    wait_until(lambda: router.poll(0) is not None and (unsent.sweep() or unsent.total_bytes == 0),
               timeout_s=10)
