"""ShardServer's fetch path with real sockets: parked places are shared between clients.

A DEALER plays a router: it sends [client id][Request][payload]? for several
clients and gets [client id][Reply][payload]? back, so the shard sees each
client as the router's envelope names it.
"""

from __future__ import annotations

import time

import pytest
import zmq

from plinth import limits, protocol
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import BatchBuilder, decode_records
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer

FLOOD, CONSUMER = b"flood-client", b"consumer"
WAIT_S = 30.0   # the bound on every wait here


@pytest.fixture
def shard_and_router(tmp_path):
    server = ShardServer("shard-test", tmp_path / "shard", "127.0.0.1")
    server.start()
    for partition in (0, 1):
        server.call(server.open_partition, "t", partition, LogConfig())
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)   # the test's own queue: it sends thousands at once
    sock.connect(server.address)
    yield server, sock
    sock.close()
    server.stop(5)


def long_poll(request_id: int, wait_ms: int, partition: int = 0) -> bytes:
    return protocol.encode_fetch(request_id, "t", partition, 0, 1 << 20, wait_ms)


def replies_until(sock, done, what: str) -> list[tuple[bytes, protocol.ReplyView, list]]:
    """(client, reply, payload frames) of every reply until ``done(replies)`` holds."""
    replies = []
    deadline_s = time.monotonic() + WAIT_S
    while not done(replies):
        remaining_ms = int((deadline_s - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not sock.poll(remaining_ms):
            raise AssertionError(f"{what}: {len(replies)} replies within {WAIT_S} s")
        client, header, *payload = sock.recv_multipart()
        replies.append((client, protocol.decode_reply(header), payload))
    return replies


def test_one_client_parking_thousands_of_fetches_leaves_room_for_another_clients_long_poll(
        shard_and_router):
    server, sock = shard_and_router
    parked_max = limits.PARKED_FETCHES_MAX
    # Given a client that parks fetches waiting 60 s until every place is taken: the
    # ones beyond are answered at once, empty
    extra = 50
    for request_id in range(parked_max + extra):
        sock.send_multipart([FLOOD, long_poll(request_id, 60_000)], copy=False)
    at_once = replies_until(sock, lambda r: len(r) == extra, "fetches beyond the parked places")
    assert {(client, payload[0]) for client, _, payload in at_once} == {(FLOOD, b"")}
    assert sorted(reply.request_id for _, reply, _ in at_once) == list(
        range(parked_max, parked_max + extra))
    # When another client's consumer long-polls partition 1 for 20 s
    sock.send_multipart([CONSUMER, long_poll(1, 20_000, partition=1)])
    # Then its fetch parks: what it gets first is the flood's oldest fetch, answered to
    # make room, and nothing for the consumer
    (client, reply, payload), = replies_until(sock, lambda r: len(r) == 1, "room made")
    assert (client, reply.request_id, payload) == (FLOOD, 0, [b""])
    assert not sock.poll(1_000), "the consumer's long poll was answered at once"
    # And a record appended to partition 1 answers it with that record
    builder = BatchBuilder()
    builder.append(None, b"for the consumer", time.time_ns() // 1_000_000, None)
    sock.send_multipart([CONSUMER, protocol.encode_produce(2, "t", 1, 1), builder.build()])
    replies = replies_until(
        sock, lambda r: {(c, v.request_id) for c, v, _ in r} >= {(CONSUMER, 1), (CONSUMER, 2)},
        "the consumer's fetch and produce")
    fetched = next(payload[0] for client, view, payload in replies
                   if (client, view.request_id, view.kind) == (CONSUMER, 1, "fetch"))
    values = [record.value for header, batch in iter_entries(fetched)
              for record in decode_records("t", 1, header.base_offset, batch, 0)]
    assert values == [b"for the consumer"]
