"""The versions Kafka 4's JSON definitions no longer list (Produce 0-2,
CreateTopics 0-1, DeleteTopics 0, DescribeConfigs 0) but the broker still
serves, against a second independent source: kafka-python's hand-written
pre-JSON schemas (kafka.protocol.old). They name fields differently, so the
check is positional and byte for byte: our encoding of a random body is
exactly theirs, for the request and the response of each version."""

from __future__ import annotations

import random

import pytest
from kafka.protocol.old import admin as old_admin, produce as old_produce

from plinth.router.kafka import codec
from plinth.router.kafka.messages import (
    CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, PRODUCE, parse_versions)
from tests.router.kafka.kafka_python_bridge import comparable, flexible, random_body, with_defaults

OLD_VERSIONS = [(PRODUCE, v, old_produce) for v in (0, 1, 2)] + \
    [(CREATE_TOPICS, v, old_admin) for v in (0, 1)] + \
    [(DELETE_TOPICS, 0, old_admin), (DESCRIBE_CONFIGS, 0, old_admin)]


def positional(body: dict, fields, version: int):
    """Our dict as the old schemas take it: values in field order, structs as tuples."""
    out = []
    for f in fields:
        low, high = _range(f.versions)
        if not low <= version <= high:
            continue
        value = body[f.name]
        if f.type == "[]" and value is not None:
            value = [tuple(positional(v, f.fields, version)) for v in value]
        out.append(value)
    return out


def _range(spec: str) -> tuple[int, int]:
    return parse_versions(spec)


def encoded_body(buffers, header_bytes: int) -> bytes:
    return b"".join(bytes(b) for b in buffers)[4 + header_bytes:]


@pytest.mark.parametrize("api, version, module", OLD_VERSIONS,
                         ids=[f"{a.name}-v{v}" for a, v, _ in OLD_VERSIONS])
def test_old_versions_encode_byte_for_byte_as_the_pre_json_schemas(api, version, module):
    old_request = getattr(module, f"{api.name}Request_v{version}")
    old_response = getattr(module, f"{api.name}Response_v{version}")
    assert not flexible(api, version)
    for seed in range(8):
        rng = random.Random(seed)
        request = random_body(rng, api.request, version, tagged=False)
        ours = encoded_body(codec.encode_request(codec.RequestHeader(api.key, version, 1, "c"),
                                                 request), 2 + 2 + 4 + 2 + 1)
        assert ours == old_request(*positional(request, api.request, version)).encode()
        decoded = codec.decode_request(codec_request_header(api, version) + ours)[1]
        assert comparable(decoded) == with_defaults(request, api.request, version, tagged=False)
        response = random_body(rng, api.response, version, tagged=False)
        ours = encoded_body(codec.encode_response(codec.RequestHeader(api.key, version, 1, "c"),
                                                  response), 4)
        assert ours == old_response(*positional(response, api.response, version)).encode()


def codec_request_header(api, version) -> bytes:
    return api.key.to_bytes(2, "big") + version.to_bytes(2, "big") + (1).to_bytes(4, "big") + \
        (1).to_bytes(2, "big") + b"c"
