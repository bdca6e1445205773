"""Hostile input: random bytes, truncated and bit-flipped Cap'n Proto messages,
wrong frame counts and types, huge declared lengths and oversized frames sent
to a shard and to the router. Each gets an error reply or is dropped, and the
next good request is served. The output counts what was tried."""

from __future__ import annotations

import random
import struct

import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from plinth import limits, protocol
from plinth.format.record_batch import BatchBuilder
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer
from tests.support import unique_topic

CLIENT = b"fuzz-client"
TRIED = {"shard": 0, "router": 0}


def good_batch() -> bytes:
    builder = BatchBuilder()
    builder.append(b"k", b"v", 1, [("h", b"x")])
    return builder.build()


def mutations(rng: random.Random, message: bytes) -> list[bytes]:
    """Truncations, bit flips and a huge declared segment size of one good message."""
    out = [message[:rng.randrange(len(message))] for _ in range(3)]
    for _ in range(3):
        flipped = bytearray(message)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        out.append(bytes(flipped))
    huge = bytearray(message)
    huge[4:8] = struct.pack("<I", 0x7FFF_FFFF)   # segment size in words: 16 GiB declared
    out.append(bytes(huge))
    return out


def ask(sock: zmq.Socket, frames: list[bytes], timeout_ms: int = 5_000):
    """Send; return the reply frames, or None if the message was dropped."""
    sock.send_multipart(frames)
    if not sock.poll(timeout_ms):
        return None
    return sock.recv_multipart()


class ShardTarget:
    def __init__(self, tmp_path):
        self.server = ShardServer("shard-fuzz", tmp_path / "s", "127.0.0.1")
        self.server.start()
        self.server.call(self.server.open_partition, "t", 0, LogConfig())
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.server.address)

    def still_serves(self) -> bool:
        frames = ask(self.sock, [CLIENT, protocol.encode_produce(1, "t", 0, 1), good_batch()])
        return frames is not None and protocol.decode_reply(frames[1]).error is None

    def close(self):
        self.sock.close()
        self.server.stop(5)


def test_a_shard_answers_or_drops_every_hostile_message_and_keeps_serving(tmp_path):
    target = ShardTarget(tmp_path)
    rng = random.Random(17)
    produce_header = protocol.encode_produce(1, "t", 0, 1)
    fetch_header = protocol.encode_fetch(2, "t", 0, 0, 1000, 0)
    cases = [[CLIENT, h] for h in mutations(rng, fetch_header)]
    cases += [[CLIENT, h, good_batch()] for h in mutations(rng, produce_header)]
    cases += [[CLIENT, produce_header, b] for b in mutations(rng, good_batch())]
    cases += [[CLIENT, produce_header, good_batch(), b"extra"], [CLIENT, fetch_header, b"x", b"y"],
              [CLIENT, protocol.encode_produce(3, "t", 7, 1), good_batch()],
              [CLIENT, protocol.encode_fetch(4, "t", 0, -5, 1000, 0)],
              [CLIENT, protocol.encode_fetch(5, "t", 0, 0, 2**32 - 1, 2**32 - 1)]]
    try:
        for frames in cases:
            reply = ask(target.sock, frames)
            if reply is not None and len(reply) > 1:
                protocol.decode_reply(reply[1])   # a well-formed reply
            TRIED["shard"] += 1
        assert target.still_serves()
    finally:
        target.close()
    print(f"shard: {len(cases)} hostile messages, still serving")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=300), min_size=0, max_size=5))
def test_random_frames_never_stop_a_shard(tmp_path_factory, frames):
    target = getattr(test_random_frames_never_stop_a_shard, "target", None)
    if target is None:
        target = ShardTarget(tmp_path_factory.mktemp("fuzz"))
        test_random_frames_never_stop_a_shard.target = target
    reply = ask(target.sock, [CLIENT, *frames], timeout_ms=2_000) if frames else None
    if reply is not None and len(reply) > 1:
        assert protocol.decode_reply(reply[1]).error is not None
    TRIED["shard"] += 1
    assert target.still_serves()


def test_the_router_answers_or_drops_hostile_messages_and_keeps_serving(shared_broker):
    from plinth import Admin, Producer

    topic = unique_topic("fuzz")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 1)
    rng = random.Random(23)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(shared_broker.url)
    headers = [protocol.encode_produce(1, topic, 0, 1), protocol.encode_fetch(2, topic, 0, 0, 100, 0),
               protocol.encode_create_topic(3, "x", 1, {}), protocol.encode_group_heartbeat(
                   4, "g", "", 0, [topic], set(), 3000, "")]
    cases = [[h] for header in headers for h in mutations(rng, header)]
    cases += [[bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))] for _ in range(50)]
    cases += [[headers[0], b"not a batch"], [headers[0]], [headers[1], b"a", b"b"],
              [headers[0], b"\0" * (limits.BATCH_BYTES_MAX + 1)]]
    answered = dropped = 0
    try:
        for frames in cases:
            reply = ask(sock, frames)
            if reply is None:
                dropped += 1
            else:
                protocol.decode_reply(reply[0])
                answered += 1
            TRIED["router"] += 1
    finally:
        sock.close()
    # A frame over the socket's size limit makes ZeroMQ drop the connection, not the router
    big = zmq.Context.instance().socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(shared_broker.url)
    big.send_multipart([headers[0], b"\0" * (limits.FRAME_BYTES_MAX + 1)])
    big.close()
    with Producer(broker=shared_broker.url) as producer:
        assert producer.send(topic, b"still fine").get(30).offset >= 0
    assert answered + dropped == len(cases) and answered > len(cases) // 2
    print(f"router: {len(cases) + 1} hostile messages, {answered} answered with errors, "
          f"{dropped} dropped, still serving")


def teardown_module(module):
    target = getattr(test_random_frames_never_stop_a_shard, "target", None)
    if target is not None:
        target.close()
    print(f"hostile messages tried: {TRIED}")
