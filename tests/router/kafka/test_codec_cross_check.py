"""The codec (router/kafka/codec.py) against an independent implementation,
kafka-python 3.0.12's protocol module, for every API and every version the
broker advertises: requests kafka-python encodes decode with ours to the same
values (and ours encode to the same bytes), and responses ours encode decode
with kafka-python's to the same values. Bodies are random and realistic: every
field of the version set, mostly to values other than its default."""

from __future__ import annotations

import random

import pytest

from plinth.errors import KafkaUnsupportedVersionError
from plinth.router.kafka import codec, error_codes
from plinth.router.kafka.messages import (
    API_VERSIONS as API_VERSIONS_API, FETCH, PRODUCE, parse_versions)
from tests.router.kafka.kafka_python_bridge import (
    EVERY_API_VERSION, api_id, comparable, flexible, from_kafka_python, in_version, kafka_python_class,
    kafka_python_name,
    random_body, to_kafka_python, with_defaults)

SEEDS = range(8)
CORRELATION_ID = 0x1234_5678
CLIENT_ID = "rdkafka-é"


def kafka_python_request(api, version, body, client_id=CLIENT_ID) -> bytes:
    request = to_kafka_python(kafka_python_class(api, "Request"), body, version)
    request.with_header(correlation_id=CORRELATION_ID, client_id=client_id)
    return bytes(request.encode(header=True))


def joined(buffers) -> bytes:
    return b"".join(bytes(b) for b in buffers)


def response_body(rng: random.Random, api, version) -> dict:
    body = random_body(rng, api.response, version, flexible(api, version))
    if api is API_VERSIONS_API:
        body["error_code"] = 0   # a non-zero one makes a client read version 0 (tested below)
    return body


def kafka_python_view(api, version, frame: bytes) -> dict:
    """kafka-python's decoding of our response, in our dict shape."""
    theirs = kafka_python_class(api, "Response").decode(frame[4:], version=version, header=True)
    assert theirs.header.correlation_id == CORRELATION_ID
    return from_kafka_python(theirs, api.response, version, flexible(api, version))


def fill_absent_tagged_structs(expected, seen):
    """kafka-python shows a tagged struct that was not sent (it equalled its
    default, so it was left out, as Kafka does) as None; ours as its default."""
    if isinstance(expected, dict) and isinstance(seen, dict):
        for key, value in expected.items():
            if seen.get(key, 0) is None and isinstance(value, dict):
                seen[key] = value
            else:
                fill_absent_tagged_structs(value, seen.get(key))
    elif isinstance(expected, list) and isinstance(seen, list):
        for e, s in zip(expected, seen):
            fill_absent_tagged_structs(e, s)
    return seen


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_requests_kafka_python_encodes_decode_with_ours_to_the_same_values(api_version):
    api, version = api_version
    for seed in SEEDS:
        # Given a realistic body encoded by kafka-python
        body = random_body(random.Random(seed), api.request, version, flexible(api, version))
        frame = kafka_python_request(api, version, body)
        # When our codec decodes it
        header, decoded = codec.decode_request(frame)
        # Then the header and every field match, absent fields at their defaults
        assert header == codec.RequestHeader(api.key, version, CORRELATION_ID, CLIENT_ID)
        assert comparable(decoded) == with_defaults(body, api.request, version,
                                                    flexible(api, version)), f"seed {seed}"


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_requests_ours_encodes_are_byte_for_byte_kafka_pythons(api_version):
    api, version = api_version
    for seed in SEEDS:
        body = random_body(random.Random(seed), api.request, version, flexible(api, version))
        ours = joined(codec.encode_request(
            codec.RequestHeader(api.key, version, CORRELATION_ID, CLIENT_ID), body))
        theirs = kafka_python_request(api, version, body)
        assert ours[4:] == theirs, f"seed {seed}"
        assert int.from_bytes(ours[:4], "big") == len(theirs)


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_responses_ours_encodes_decode_with_kafka_python_to_the_same_values(api_version):
    api, version = api_version
    header = codec.RequestHeader(api.key, version, CORRELATION_ID, "client")
    for seed in SEEDS:
        # Given a realistic response body encoded by our codec
        body = response_body(random.Random(seed), api, version)
        frame = joined(codec.encode_response(header, body))
        # When kafka-python decodes it
        seen = kafka_python_view(api, version, frame)
        # Then it reads every field of the version as we meant it
        expected = in_version(with_defaults(body, api.response, version, flexible(api, version)),
                              api.response, version, flexible(api, version))
        assert fill_absent_tagged_structs(expected, seen) == expected, f"seed {seed}"
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_responses_decode_back_with_ours_to_what_was_encoded(api_version):
    api, version = api_version
    header = codec.RequestHeader(api.key, version, CORRELATION_ID, "client")
    for seed in SEEDS:
        body = response_body(random.Random(seed), api, version)
        frame = joined(codec.encode_response(header, body))
        correlation_id, decoded = codec.decode_response(api.key, version, frame[4:])
        assert correlation_id == CORRELATION_ID
        assert comparable(decoded) == with_defaults(body, api.response, version,
                                                    flexible(api, version))


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_a_response_body_with_no_fields_encodes_every_field_as_its_default(api_version):
    api, version = api_version
    frame = joined(codec.encode_response(codec.RequestHeader(api.key, version, CORRELATION_ID, ""), {}))
    expected = in_version(with_defaults({}, api.response, version, flexible(api, version)),
                          api.response, version, flexible(api, version))
    assert kafka_python_view(api, version, frame) == expected


def test_an_unsupported_api_versions_answer_is_read_as_version_0_by_a_client():
    # Given a client asking ApiVersions in a version newer than ours (Kafka 4 has v4)
    frame = kafka_python_request(API_VERSIONS_API, 3, {"client_software_name": "x",
                                                       "client_software_version": "1"})
    frame = frame[:2] + (4).to_bytes(2, "big") + frame[4:]
    with pytest.raises(KafkaUnsupportedVersionError) as raised:
        codec.decode_request(frame)
    header = raised.value.header
    assert header == codec.RequestHeader(18, 4, CORRELATION_ID, CLIENT_ID)
    # When the listener answers in version 0 with UNSUPPORTED_VERSION and our ranges
    answer = joined(codec.encode_response(header._replace(api_version=0), {
        "error_code": error_codes.UNSUPPORTED_VERSION, "api_keys": codec.supported_api_keys()}))
    # Then kafka-python (which reads an error answer as v0 whatever it asked) sees them
    theirs = kafka_python_class(API_VERSIONS_API, "Response").decode(answer[4:], version=3,
                                                                       header=True)
    assert theirs.error_code == error_codes.UNSUPPORTED_VERSION
    assert {k.api_key: (k.min_version, k.max_version) for k in theirs.api_keys} == \
        codec.SUPPORTED_VERSIONS


def test_the_advertised_versions_are_those_of_the_brief():
    assert codec.SUPPORTED_VERSIONS == {
        18: (0, 3), 3: (0, 12), 0: (0, 9), 1: (4, 12), 2: (1, 10), 10: (0, 4), 11: (0, 7),
        14: (0, 5), 12: (0, 4), 13: (0, 4), 8: (2, 8), 9: (1, 8), 22: (0, 4), 19: (0, 7),
        20: (0, 6), 37: (0, 3), 32: (0, 4), 15: (0, 5), 16: (0, 5), 60: (0, 1), 17: (0, 1),
        36: (0, 2), 33: (0, 2), 44: (0, 1), 42: (0, 2), 21: (0, 2), 35: (0, 4), 75: (0, 0), 29: (0, 3),
        30: (0, 3), 31: (0, 3), 43: (0, 2), 74: (0, 1), 47: (0, 0)}
    assert codec.API_KEYS["Fetch"] == 1 and codec.API_KEYS["SaslAuthenticate"] == 36


def test_fetch_records_given_as_buffers_are_sent_uncopied():
    # Given two large record batches and a small one, as a shard's read returns them
    batches = [memoryview(bytes(range(256)) * 64), bytes(10), memoryview(b"\x07" * 9000)]
    body = {"responses": [{"topic": "t", "partitions": [{"partition_index": 0,
                                                          "records": batches}]}]}
    # When the Fetch v11 response is encoded
    buffers = codec.encode_response(codec.RequestHeader(FETCH.key, 11, 5, "c"), body)
    # Then the large batches are in the buffer list themselves, not copies
    assert any(b is batches[0] for b in buffers) and any(b is batches[2] for b in buffers)
    frame = joined(buffers)
    theirs = kafka_python_class(FETCH, "Response").decode(frame[4:], version=11, header=True)
    records = theirs.responses[0].partitions[0].records
    assert bytes(records if isinstance(records, (bytes, bytearray, memoryview))
                 else records.buffer()) == joined(batches)


def test_produce_records_decode_as_a_view_of_the_frame():
    body = {"acks": -1, "timeout_ms": 30_000, "topic_data": [
        {"name": "t", "partition_data": [{"index": 3, "records": b"\x01" * 100}]}]}
    frame = bytearray(kafka_python_request(PRODUCE, 9, body))
    _, decoded = codec.decode_request(frame)
    records = decoded["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(records, memoryview) and records.obj is frame
    assert bytes(records) == b"\x01" * 100


def test_a_response_field_name_the_message_does_not_have_is_a_programmer_error():
    header = codec.RequestHeader(PRODUCE.key, 9, 1, "c")
    with pytest.raises(AssertionError, match="throttle_time"):
        codec.encode_response(header, {"throttle_time": 5})


@pytest.mark.parametrize("api_version", EVERY_API_VERSION, ids=api_id)
def test_every_version_has_exactly_kafka_pythons_fields(api_version):
    api, version = api_version
    for kind, fields in (("Request", api.request), ("Response", api.response)):
        cls = kafka_python_class(api, kind)
        theirs = {name for name, f in cls.fields.items() if f.for_version_q(version)}
        ours = {kafka_python_name(cls, f.name) for f in fields if in_range(f.versions, version)}
        assert ours == theirs, f"{kind}: ours only {ours - theirs}, theirs only {theirs - ours}"


def in_range(spec: str, version: int) -> bool:
    low, high = parse_versions(spec)
    return low <= version <= high
