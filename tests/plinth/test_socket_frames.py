"""plinth/socket_frames.py: multipart messages in and out without blocking.

Real ZeroMQ sockets over TCP on 127.0.0.1: a DEALER talks to a ROUTER.
"""

from __future__ import annotations

import pytest
import zmq

from plinth.socket_frames import readable, recv_frames, send_frames

ARRIVAL_WAIT_MS = 5_000


@pytest.fixture
def pair():
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = context.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer, port
    router.close(linger=0)
    dealer.close(linger=0)
    context.term()


def arrived(sock: zmq.Socket) -> None:
    assert sock.poll(ARRIVAL_WAIT_MS), "no message arrived"


def test_recv_frames_returns_none_when_no_message_waits(pair):
    router, _, _ = pair
    assert recv_frames(router) is None


def test_recv_frames_returns_every_frame_of_one_message_and_no_more(pair):
    router, dealer, _ = pair
    # Given two messages of three and one frames waiting
    dealer.send_multipart([b"a", b"bb", b"ccc"])
    dealer.send_multipart([b"d"])
    arrived(router)
    # When they are received one at a time
    first = recv_frames(router)
    arrived(router)
    second = recv_frames(router)
    # Then each is whole, behind the ROUTER's identity frame, and nothing is left
    assert [f.bytes for f in first[1:]] == [b"a", b"bb", b"ccc"]
    assert [f.bytes for f in second[1:]] == [b"d"]
    assert first[0].bytes == second[0].bytes
    assert recv_frames(router) is None


def test_readable_says_whether_a_message_waits(pair):
    router, dealer, _ = pair
    assert not readable(router)
    dealer.send_multipart([b"x"])
    arrived(router)
    assert readable(router)
    recv_frames(router)
    assert not readable(router)


def test_send_frames_sends_frames_bytes_and_memoryviews_as_one_message(pair):
    router, dealer, _ = pair
    dealer.send(b"hello")
    arrived(router)
    identity, _ = recv_frames(router)
    # When the ROUTER answers with its peer's identity frame and two more
    send_frames(router, [identity, b"header", memoryview(b"payload")])
    arrived(dealer)
    # Then the DEALER gets one message of two frames
    assert dealer.recv_multipart() == [b"header", b"payload"]


def test_send_frames_refuses_a_frame_it_cannot_send_before_sending_any(pair):
    router, dealer, _ = pair
    # When a message has a frame that is not bytes-like at its end
    with pytest.raises(AssertionError, match="not str"):
        send_frames(dealer, [b"first", "a str"])
    # Then nothing of it went out: the next message arrives alone, not glued to "first"
    send_frames(dealer, [b"next"])
    arrived(router)
    assert [f.bytes for f in recv_frames(router)[1:]] == [b"next"]


def test_send_frames_raises_again_and_sends_nothing_when_the_socket_cannot_take_it():
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)   # no peer yet: a DEALER cannot queue anything
    router = context.socket(zmq.ROUTER)
    try:
        with pytest.raises(zmq.Again):
            send_frames(dealer, [b"lost", b"message"])
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        send_frames(dealer, [b"kept"])
        arrived(router)
        assert [f.bytes for f in recv_frames(router)[1:]] == [b"kept"]
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
        context.term()
