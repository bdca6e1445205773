"""A router's requests to one shard over ZeroMQ, for the tests of the control plane.

The tests of the shard actor and of the controller put records and committed
offsets on real shards this way (the data plane), then check what the control
plane does with them. Each call opens a DEALER to the shard's address, sends
one request as a router would ([client id][Request][payload]?), waits for the
reply at most REPLY_WAIT_MS, and raises the BrokerError it carries.
"""

from __future__ import annotations

import time

import zmq

from plinth import protocol
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import BatchBuilder, decode_records

REPLY_WAIT_MS = 10_000
CLIENT = b"control-test"


def produce(address: str, topic: str, partition: int, values: list[bytes], acks: int = 1) -> int:
    """Append ``values`` as one batch; returns its base offset (acks=-1: once the
    in-sync replicas hold it)."""
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, time.time_ns() // 1_000_000, None)
    reply = _roundtrip(address, protocol.encode_produce(1, topic, partition, acks), builder.build())
    return reply.base_offset


def commit_offsets(address: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets for a group with no members (as ``plinth group reset`` does)."""
    _roundtrip(address, protocol.encode_commit_offsets(1, "commitOffsets", group, "", 0, offsets))


def join_group(address: str, group: str, topics: list[str], session_timeout_ms: int) -> str:
    """A new member of a Plinth group (its first heartbeat); returns its member id."""
    return _roundtrip(address, protocol.encode_group_heartbeat(
        1, group, "", 0, topics, set(), session_timeout_ms, "")).heartbeat.member_id


def committed_offsets(address: str, group: str) -> dict[tuple[str, int], int]:
    return _roundtrip(address, protocol.encode_group_request(1, "fetchOffsets", group)).committed


def list_offsets(address: str, topic: str, partition: int, *,
                 require_listed: bool = False) -> protocol.PartitionInfo:
    """A partition's offsets (listOffsets without a look-up by time)."""
    return _roundtrip(address, protocol.encode_list_offsets(
        1, topic, partition, protocol.NO_TIME_LOOKUP, require_listed)).offsets


def fetch_values(address: str, topic: str, partition: int, offset: int) -> list[bytes]:
    """The values a shard serves from ``offset`` on (one fetch, no wait)."""
    reply, payload = _roundtrip_frames(address, protocol.encode_fetch(
        1, topic, partition, offset, 1 << 20, 0))
    return [r.value for header, batch in iter_entries(payload)
            for r in decode_records(topic, partition, header.base_offset, batch, offset)]


def _roundtrip(address: str, header: bytes, payload: bytes | None = None) -> protocol.ReplyView:
    return _roundtrip_frames(address, header, payload)[0]


def _roundtrip_frames(address: str, header: bytes,
                      payload: bytes | None = None) -> tuple[protocol.ReplyView, bytes]:
    """The reply and its payload frame (empty if none)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send_multipart([CLIENT, header] + ([payload] if payload is not None else []))
        if not sock.poll(REPLY_WAIT_MS):
            raise AssertionError(f"no reply from the shard at {address} in {REPLY_WAIT_MS} ms")
        frames = sock.recv_multipart()
    finally:
        sock.close()
    reply = protocol.decode_reply(frames[1])
    if reply.error is not None:
        raise reply.error
    return reply, frames[2] if len(frames) > 2 else b""
