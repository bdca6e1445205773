"""Hostile Kafka frames sent to a real listener over TCP: random bytes, random
frames behind a valid size, truncated and bit-flipped valid requests of every
API and version. Each connection is answered or closed, never hangs the
listener, and the listener keeps serving a well-behaved client. The output
counts what was tried."""

from __future__ import annotations

import random
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from plinth.router.kafka import codec
from plinth.router.kafka.listener import KafkaListener
from plinth.router.kafka.messages import HEARTBEAT, PRODUCE
from tests.router.kafka.kafka_python_bridge import EVERY_API_VERSION, flexible, random_body
from tests.router.kafka.test_listener import TinyHandler, connect, still_serves

TRIED = {"frames": 0, "answered": 0, "closed": 0}


class AnyAnswerHandler(TinyHandler):
    """The tiny handler, answering every other API with an empty body (its defaults),
    and Heartbeats with no error (their random generation does not fit an error code)."""

    async def __call__(self, connection, header, body):
        if header.api_key == HEARTBEAT.key:
            return {}
        try:
            return await super().__call__(connection, header, body)
        except AssertionError:
            return {}


@pytest.fixture(scope="module")
def listener():
    served = KafkaListener("127.0.0.1", 0, AnyAnswerHandler())
    served.start()
    yield served
    served.stop()
    print(f"hostile input: {TRIED['frames']} frames, {TRIED['answered']} answered, "
          f"{TRIED['closed']} connections closed")


def send_and_settle(address, data: bytes) -> bool:
    """Sends ``data`` on a fresh connection, half-closes, and reads until the
    listener closes: every answer is whole and the connection ends within WAIT_S."""
    with connect(address) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)     # end of stream: the listener answers, then closes
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    TRIED["frames"] += 1
    TRIED["answered" if received else "closed"] += 1
    answered = bool(received)
    while received:                        # only whole frames come back
        size = struct.unpack(">i", received[:4])[0]
        assert 0 <= size <= len(received) - 4
        received = received[4 + size:]
    return answered


def valid_frame(api, version, seed) -> bytes:
    body = random_body(random.Random(seed), api.request, version, flexible(api, version))
    return b"".join(bytes(b) for b in codec.encode_request(
        codec.RequestHeader(api.key, version, seed, "hostile"), body))


def test_mutated_requests_of_every_api_are_answered_or_closed(listener):
    rng = random.Random(29)
    for api, version in EVERY_API_VERSION:
        frame = valid_frame(api, version, rng.randrange(1000))
        cut = frame[:rng.randrange(4, len(frame))]
        flipped = bytearray(frame)
        flipped[rng.randrange(4, len(frame))] ^= 1 << rng.randrange(8)
        body_bytes = len(frame) - 4
        lying = struct.pack(">i", body_bytes + rng.randrange(1, 100)) + frame[4:]
        assert send_and_settle(listener.address, frame) or api is PRODUCE   # acks=0: no answer
        for data in (cut, bytes(flipped), lying, frame + frame):
            send_and_settle(listener.address, data)
    assert still_serves(listener.address)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_never_stop_the_listener(listener, data):
    send_and_settle(listener.address, data)
    assert still_serves(listener.address)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(api_version=st.sampled_from(EVERY_API_VERSION), body=st.binary(max_size=300))
def test_random_bodies_behind_a_valid_header_never_stop_the_listener(listener, api_version, body):
    api, version = api_version
    request = struct.pack(">hhih", api.key, version, 1, 1) + b"c" + \
        (b"\x00" if flexible(api, version) else b"") + body
    send_and_settle(listener.address, struct.pack(">i", len(request)) + request)
    assert still_serves(listener.address)


def test_a_2gb_declared_frame_among_valid_ones_closes_only_that_connection(listener):
    good = valid_frame(*EVERY_API_VERSION[0], seed=1)
    send_and_settle(listener.address, good + struct.pack(">i", 0x7FFF_FFFF) + b"x" * 1000)
    assert still_serves(listener.address)
