"""Hostile bytes given to the codec: every truncation of a valid request of every
API and version, bit flips, random bytes, huge declared lengths and counts. Each
either decodes or raises KafkaDecodeError (never IndexError, struct.error or
UnicodeDecodeError), in bounded time and without allocating what a length
declares. The output counts what was tried."""

from __future__ import annotations

import random
import struct
import time
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st

from plinth.errors import KafkaDecodeError, KafkaUnsupportedVersionError
from plinth.router.kafka import codec
from plinth.router.kafka.messages import METADATA, PRODUCE
from tests.router.kafka.kafka_python_bridge import EVERY_API_VERSION, api_id, flexible, random_body

DECODE_S_MAX = 0.5                 # one hostile frame; a valid one takes microseconds
ALLOCATED_BYTES_MAX = 1 << 20      # what decoding one small hostile frame may allocate


def valid_request(api, version, seed=0) -> bytes:
    body = random_body(random.Random(seed), api.request, version, flexible(api, version))
    frame = b"".join(bytes(b) for b in codec.encode_request(
        codec.RequestHeader(api.key, version, 77, "hostile"), body))
    return frame[4:]


def decodes_or_refuses(frame: bytes) -> bool:
    """True if the frame decoded, False if it raised KafkaDecodeError; anything else fails."""
    started = time.monotonic()
    try:
        codec.decode_request(frame)
        return True
    except KafkaDecodeError as e:
        assert str(e)     # the message renders (path, position, length)
        return False
    finally:
        assert time.monotonic() - started < DECODE_S_MAX


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_every_truncation_of_a_valid_request_raises_the_typed_error(api_version):
    api, version = api_version
    frame = valid_request(*api_version)
    for length in range(len(frame)):
        with pytest.raises(KafkaDecodeError):
            codec.decode_request(frame[:length])
    assert codec.decode_request(frame)[0].api_key == api.key


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_bit_flips_and_trailing_bytes_decode_or_raise_the_typed_error(api_version):
    frame = valid_request(*api_version, seed=1)
    rng = random.Random(hash(api_id(api_version)) & 0xFFFF)
    outcomes = {True: 0, False: 0}
    for _ in range(40):
        flipped = bytearray(frame)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        outcomes[decodes_or_refuses(bytes(flipped))] += 1
    assert decodes_or_refuses(frame + b"\x01\x00")     # bytes left over are ignored, as Kafka does
    print(f"{api_id(api_version)}: {outcomes[True]} flips decoded, {outcomes[False]} refused")


@settings(max_examples=500, deadline=None)
@given(api_version=st.sampled_from(EVERY_API_VERSION), tail=st.binary(max_size=200))
def test_random_bytes_after_a_valid_header_decode_or_raise_the_typed_error(api_version, tail):
    api, version = api_version
    header = struct.pack(">hhih", api.key, version, 1, 1) + b"c"
    if flexible(api, version):
        header += b"\x00"
    decodes_or_refuses(header + tail)


@settings(max_examples=300, deadline=None)
@given(frame=st.binary(max_size=300))
def test_random_frames_decode_or_raise_the_typed_error(frame):
    decodes_or_refuses(frame)


def huge_count_metadata_request(flexible_version: bool) -> bytes:
    """A Metadata request declaring 2**31 - 1 topics (compact: the varint of 2**32 - 1)."""
    if flexible_version:
        return struct.pack(">hhih", METADATA.key, 9, 1, 1) + b"c" + b"\x00" + b"\xff\xff\xff\xff\x0f"
    return struct.pack(">hhih", METADATA.key, 1, 1, 1) + b"c" + struct.pack(">i", 2**31 - 1)


@pytest.mark.parametrize("frame", [
    huge_count_metadata_request(False), huge_count_metadata_request(True),
    # Produce v3: a records length of 2 GiB - 1
    struct.pack(">hhih", PRODUCE.key, 3, 1, 1) + b"c" + struct.pack(">hhi", -1, 1, 1000)
    + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t" + struct.pack(">i", 1)
    + struct.pack(">ii", 0, 2**31 - 1) + b"x" * 16,
    # a client id of 32767 bytes declared, 1 present
    struct.pack(">hhih", METADATA.key, 1, 1, 0x7FFF) + b"c",
    # a varint that never ends, and a tagged field of 2**32 bytes
    struct.pack(">hhih", METADATA.key, 9, 1, 1) + b"c" + b"\xff" * 20,
    struct.pack(">hhih", METADATA.key, 9, 1, 1) + b"c" + b"\x01\x00\xff\xff\xff\xff\x0f",
], ids=["array-2G", "compact-array-2G", "records-2GB", "string-32K", "endless-varint",
        "tagged-4GB"])
def test_huge_declared_lengths_and_counts_are_refused_before_allocating(frame):
    tracemalloc.start()
    try:
        with pytest.raises(KafkaDecodeError) as raised:
            codec.decode_request(frame)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < ALLOCATED_BYTES_MAX
    assert f"of {len(frame)} bytes" in str(raised.value)


def test_the_error_names_the_message_the_field_path_the_position_and_the_length():
    # Given a Produce v9 request cut inside the second partition's records
    body = {"acks": -1, "timeout_ms": 5, "topic_data": [{"name": "t", "partition_data": [
        {"index": 0, "records": b"a" * 10}, {"index": 1, "records": b"b" * 10}]}]}
    frame = valid_request_of(PRODUCE, 9, body)
    with pytest.raises(KafkaDecodeError) as raised:
        codec.decode_request(frame[:-6])
    message = str(raised.value)
    assert message == (f"Produce v9 request: topic_data[0].partition_data[1].records: needs 10 "
                       f"bytes, 7 left at position {len(frame) - 13} of {len(frame) - 6} bytes")
    # and cut in the partition's tagged fields
    with pytest.raises(KafkaDecodeError, match=r"partition_data\[1\].<tagged fields>: needs 1"):
        codec.decode_request(frame[:-3])


def valid_request_of(api, version, body) -> bytes:
    return b"".join(bytes(b) for b in codec.encode_request(
        codec.RequestHeader(api.key, version, 1, "c"), body))[4:]


def test_an_unknown_api_key_or_version_carries_the_decoded_header():
    for key, version in ((999, 0), (PRODUCE.key, 10), (1, 3)):
        frame = struct.pack(">hhih", key, version, 42, 2) + b"id"
        with pytest.raises(KafkaUnsupportedVersionError) as raised:
            codec.decode_request(frame)
        assert raised.value.header == codec.RequestHeader(key, version, 42, "id")


def test_librdkafkas_all_topics_metadata_request_decodes_as_kafka_reads_it():
    # Given the bytes librdkafka 2.16 sends for Metadata v12 of all topics: its
    # array-count placeholder (4 zero bytes) was left unshrunk, then
    # allow_auto_topic_creation=1, include_topic_authorized_operations=0, no tags
    frame = bytes.fromhex("0003000c00000003000772646b61666b61" "00" "00000000" "010000")
    # When decoded
    header, body = codec.decode_request(frame)
    # Then it reads as Kafka reads it: null topics (all), the rest from the
    # placeholder's zeros, the 3 bytes meant for them ignored
    assert header == codec.RequestHeader(METADATA.key, 12, 3, "rdkafka")
    assert body["topics"] is None
    assert body["allow_auto_topic_creation"] is False
    assert body["include_topic_authorized_operations"] is False


def test_a_null_for_a_non_nullable_field_is_refused():
    # Metadata v0's topics array may not be null (v1+ says null = all topics)
    frame = struct.pack(">hhih", METADATA.key, 0, 1, 1) + b"c" + struct.pack(">i", -1)
    with pytest.raises(KafkaDecodeError, match="null for a non-nullable array"):
        codec.decode_request(frame)
    assert codec.decode_request(frame[:2] + b"\x00\x01" + frame[4:])[1]["topics"] is None


def test_a_string_that_is_not_utf8_is_refused():
    frame = struct.pack(">hhih", METADATA.key, 1, 1, 1) + b"c" + struct.pack(">ih", 1, 2) + b"\xff\xfe"
    with pytest.raises(KafkaDecodeError, match="topics\\[0\\].name: string is not UTF-8"):
        codec.decode_request(frame)
