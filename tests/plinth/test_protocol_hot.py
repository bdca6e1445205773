"""protocol_hot.py: the hand-packed messages are pycapnp's bytes, and its decoders
never read a message differently from pycapnp."""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings, strategies as st

from plinth import protocol, protocol_hot
from plinth.schemas import protocol as schema

UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1)
INT64 = st.integers(-2**63, 2**63 - 1)
TOPICS = st.text(min_size=1, max_size=70)


def capnp_produce(request_id, topic, partition, acks, batch_format=0) -> bytes:
    msg = schema.Request.new_message(requestId=request_id)
    body = msg.init("produce")
    body.topic, body.partition, body.acks = topic, partition, acks
    body.batchFormat = batch_format
    return msg.to_bytes()


def capnp_fetch(request_id, topic, partition, offset, bytes_max, wait_ms_max) -> bytes:
    msg = schema.Request.new_message(requestId=request_id)
    body = msg.init("fetch")
    body.topic, body.partition, body.offset = topic, partition, offset
    body.maxBytes, body.maxWaitMs = bytes_max, wait_ms_max
    return msg.to_bytes()


def capnp_produce_reply(request_id, base_offset) -> bytes:
    msg = schema.Reply.new_message(requestId=request_id)
    msg.init("produce").baseOffset = base_offset
    return msg.to_bytes()


def capnp_fetch_reply(request_id, high_watermark, log_start_offset) -> bytes:
    msg = schema.Reply.new_message(requestId=request_id)
    body = msg.init("fetch")
    body.highWatermark, body.logStartOffset = high_watermark, log_start_offset
    return msg.to_bytes()


def slow_request(frame):
    """The pycapnp decoding, bypassing the hand-packed path."""
    with schema.Request.from_bytes(bytes(frame)) as req:
        return protocol._request(req)


def slow_reply(frame):
    with schema.Reply.from_bytes(bytes(frame)) as rep:
        return protocol._reply_view(rep)


@settings(max_examples=300, deadline=None)
@given(UINT64, TOPICS, UINT32, st.sampled_from([-1, 0, 1]), st.integers(0, 255))
def test_a_hand_packed_produce_request_is_byte_for_byte_what_pycapnp_writes(
        request_id, topic, partition, acks, batch_format):
    frame = protocol_hot.encode_produce(request_id, topic, partition, acks, batch_format)
    assert frame == capnp_produce(request_id, topic, partition, acks, batch_format)
    assert protocol.decode_request(frame) == slow_request(frame)
    assert protocol_hot.decode_request(frame) is not None
    assert protocol.decode_request(frame).batch_format == batch_format


@settings(max_examples=300, deadline=None)
@given(UINT64, TOPICS, UINT32, INT64, UINT32, UINT32)
def test_a_hand_packed_fetch_request_is_byte_for_byte_what_pycapnp_writes(
        request_id, topic, partition, offset, bytes_max, wait_ms_max):
    frame = protocol_hot.encode_fetch(request_id, topic, partition, offset, bytes_max, wait_ms_max)
    assert frame == capnp_fetch(request_id, topic, partition, offset, bytes_max, wait_ms_max)
    assert protocol.decode_request(memoryview(frame)) == slow_request(frame)
    assert protocol_hot.decode_request(frame) is not None


@settings(max_examples=200, deadline=None)
@given(UINT64, INT64, INT64)
def test_hand_packed_produce_and_fetch_replies_are_what_pycapnp_writes(request_id, first, second):
    produce = protocol_hot.encode_produce_reply(request_id, first)
    assert produce == capnp_produce_reply(request_id, first)
    assert protocol.decode_reply(produce) == slow_reply(produce)
    fetch = protocol_hot.encode_fetch_reply(request_id, first, second)
    assert fetch == capnp_fetch_reply(request_id, first, second)
    assert protocol.decode_reply(fetch) == slow_reply(fetch)
    assert protocol_hot.decode_reply(produce) and protocol_hot.decode_reply(fetch)


def test_a_valid_request_in_another_layout_is_left_to_pycapnp_and_read_right():
    canonical = capnp_produce(5, "orders", 2, 1)
    # The same message with a spare word before the topic: the text pointer's
    # offset is 1 instead of 0 and the segment one word longer.
    table = struct.pack("<II", 0, len(canonical) // 8)   # one more word than before
    text_pointer = struct.pack("<II", 1 << 2 | 1, struct.unpack_from("<I", canonical, 52)[0])
    spaced = table + canonical[8:48] + text_pointer + bytes(8) + canonical[56:]
    assert protocol_hot.decode_request(spaced) is None
    view = protocol.decode_request(spaced)
    assert (view.kind, view.topic, view.partition, view.request_id) == ("produce", "orders", 2, 5)


def test_a_produce_carrying_a_timeout_is_left_to_pycapnp_and_read_right():
    # timeoutMs shares the data word with the union's tag: the hand decoder, which
    # reads those bytes as zero, must not take a request with them set.
    message = schema.Request.new_message(requestId=6, timeoutMs=900)
    body = message.init("produce")
    body.topic, body.partition = "orders", 3
    frame = message.to_bytes()
    assert protocol_hot.decode_request(frame) is None
    view = protocol.decode_request(frame)
    assert (view.kind, view.topic, view.partition, view.request_id) == ("produce", "orders", 3, 6)


def test_an_error_reply_is_left_to_pycapnp():
    frame = protocol.encode_error(9, protocol.error_for_code("unknownTopic", "unknown topic 'x'"))
    assert protocol_hot.decode_reply(frame) is None
    assert protocol.decode_reply(frame).error.message == "unknown topic 'x'"


def test_whatever_the_hand_decoders_accept_out_of_mangled_messages_pycapnp_reads_the_same():
    rng = random.Random(20261126)
    seeds = [capnp_produce(1, "t", 0, 1), capnp_produce(2**63, "ünïcode-topic", 9, -1),
             capnp_fetch(3, "orders", 4, 12345, 1 << 20, 500), capnp_fetch(4, "x" * 15, 1, -1, 0, 0)]
    replies = [capnp_produce_reply(5, 77), capnp_fetch_reply(6, 100, 3)]
    accepted = 0
    for _ in range(6000):
        is_reply = rng.random() < 0.3
        frame = bytearray(rng.choice(replies if is_reply else seeds))
        for _ in range(rng.randint(1, 3)):
            mutate(rng, frame)
        hot = protocol_hot.decode_reply(frame) if is_reply else protocol_hot.decode_request(frame)
        if hot is None:
            continue
        accepted += 1
        if is_reply:
            assert protocol.decode_reply(frame) == slow_reply(frame), frame.hex()
        else:
            assert protocol.decode_request(frame) == slow_request(frame), frame.hex()
    assert accepted > 500   # the mutations that keep the shape (ids, numbers) were checked


def mutate(rng: random.Random, frame: bytearray) -> None:
    choice = rng.random()
    if choice < 0.6 and frame:
        frame[rng.randrange(len(frame))] = rng.randrange(256)
    elif choice < 0.8 and frame:
        del frame[rng.randrange(len(frame)):]
    else:
        frame.extend(rng.randbytes(rng.choice([1, 8, 16])))
