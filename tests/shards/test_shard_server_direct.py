"""ShardServer's direct socket: clients' produce and fetch without the router hop.

Real sockets, a real disk, no Ray. A DEALER plays a direct client: it sends
[Request][payload]? to the shard's direct address and gets [Reply][payload]?
back; another plays the router on the shard's internal socket.
"""

from __future__ import annotations

import time

import pytest
import zmq

from plinth import limits, protocol
from plinth.errors import MalformedRequestError, TooManyRequestsError
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer
from tests.shards.test_shard_server import CLIENT, batch_of, roundtrip
from tests.support import wait_until

REPLY_WAIT_MS = 5_000


@pytest.fixture
def server(tmp_path):
    srv = ShardServer("shard-test", tmp_path / "shard", "127.0.0.1", direct_clients=True)
    srv.start()
    srv.call(srv.open_partition, "t", 0, LogConfig())
    yield srv
    srv.stop(5)


def dealer_to(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


@pytest.fixture
def client(server):
    sock = dealer_to(server.direct_address)
    yield sock
    sock.close()


@pytest.fixture
def router(server):
    sock = dealer_to(server.address)
    yield sock
    sock.close()


def direct_roundtrip(sock, *frames: bytes):
    sock.send_multipart(list(frames))
    assert sock.poll(REPLY_WAIT_MS), "no reply on the direct socket"
    got = sock.recv_multipart()
    return protocol.decode_reply(got[0]), (got[1] if len(got) > 1 else None)


def test_a_shard_without_direct_clients_binds_no_direct_socket(tmp_path):
    srv = ShardServer("shard-test", tmp_path / "shard", "127.0.0.1")
    srv.start()
    try:
        assert srv.direct_address == ""
    finally:
        srv.stop(5)


def test_the_direct_socket_listens_on_loopback_tcp_beside_the_internal_socket(server):
    assert server.direct_address.startswith("tcp://127.0.0.1:")
    assert server.direct_address != server.address


def test_with_the_ipc_hop_the_direct_socket_is_a_unix_socket_in_the_0700_directory(tmp_path):
    import dataclasses
    import os
    import stat

    from plinth.cluster_keys import DIRECT_IPC_SUFFIX, ClusterKeys, make_ipc_dir

    # Given the cluster's keys with the ipc hop (the embedded `plinth serve`)
    (tmp_path / "shard").mkdir()
    keys = dataclasses.replace(ClusterKeys.generate(), ipc_dir=make_ipc_dir(tmp_path))
    srv = ShardServer("shard-test", tmp_path / "shard", "127.0.0.1", cluster_keys=keys,
                      direct_clients=True)
    srv.start()
    try:
        srv.call(srv.open_partition, "t", 0, LogConfig())
        # Then its direct socket sits beside its hop socket, in the owner-only directory
        assert srv.direct_address == f"ipc://{keys.ipc_dir}/shard-test{DIRECT_IPC_SUFFIX}"
        assert srv.address == f"ipc://{keys.ipc_dir}/shard-test"
        path = srv.direct_address.removeprefix("ipc://")
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(keys.ipc_dir).st_mode) == 0o700
        # And a direct client there is answered, produce and fetch
        sock = dealer_to(srv.direct_address)
        try:
            reply, _ = direct_roundtrip(sock, protocol.encode_produce(1, "t", 0, 1),
                                        batch_of([b"a"]))
            fetched, data = direct_roundtrip(sock, protocol.encode_fetch(2, "t", 0, 0, 1 << 20, 0))
        finally:
            sock.close()
        assert (reply.error, reply.base_offset) == (None, 0)
        assert (fetched.error, fetched.high_watermark) == (None, 1) and len(data) > 0
        assert srv.call(srv.stats_snapshot)["requests_by_socket"]["direct"] == 2
    finally:
        srv.stop(5)


def test_a_produce_and_a_fetch_on_the_direct_socket_are_answered_there(server, client, router):
    # When a direct client produces two records, then fetches them
    reply, _ = direct_roundtrip(client, protocol.encode_produce(7, "t", 0, 1),
                                batch_of([b"a", b"b"]))
    fetched, data = direct_roundtrip(client, protocol.encode_fetch(8, "t", 0, 0, 1 << 20, 0))
    # Then both come back on the direct socket with their own ids, and the records
    # are in the log the router's clients read
    assert (reply.request_id, reply.error, reply.base_offset) == (7, None, 0)
    assert (fetched.request_id, fetched.error, fetched.high_watermark) == (8, None, 2)
    assert len(data) > 0
    via_router, routed_data = roundtrip(router, protocol.encode_fetch(9, "t", 0, 0, 1 << 20, 0))
    assert via_router.high_watermark == 2 and routed_data == data
    # and nothing came back on the router's socket but its own reply
    assert not router.poll(100)


def test_the_stats_count_requests_by_the_socket_they_came_on(server, client, router):
    direct_roundtrip(client, protocol.encode_produce(1, "t", 0, 1), batch_of([b"a"]))
    direct_roundtrip(client, protocol.encode_fetch(2, "t", 0, 0, 1 << 20, 0))
    roundtrip(router, protocol.encode_fetch(3, "t", 0, 0, 1 << 20, 0))
    by_socket = server.call(server.stats_snapshot)["requests_by_socket"]
    assert by_socket == {"router": 1, "direct": 2}


def test_a_parked_direct_fetch_is_answered_on_the_direct_socket_when_records_arrive(
        server, client, router):
    # Given a direct fetch parked at the log end
    client.send_multipart([protocol.encode_fetch(5, "t", 0, 0, 1 << 20, 5_000)])
    assert not client.poll(200)
    # When a record arrives through the router
    roundtrip(router, protocol.encode_produce(6, "t", 0, 1), batch_of([b"x"]))
    # Then the direct client gets it
    assert client.poll(REPLY_WAIT_MS)
    reply = protocol.decode_reply(client.recv_multipart()[0])
    assert (reply.request_id, reply.high_watermark) == (5, 1)


@pytest.mark.parametrize("header", [
    protocol.encode_list_offsets(3, "t", 0),
    protocol.encode_group_request(3, "describeGroup", "g"),
    protocol.encode_metadata(3, ["t"]),
])
def test_every_kind_but_produce_and_fetch_is_refused_on_the_direct_socket(client, header):
    reply, _ = direct_roundtrip(client, header)
    assert reply.request_id == 3
    assert isinstance(reply.error, MalformedRequestError)
    assert "takes produce and fetch requests" in str(reply.error)


@pytest.mark.parametrize("frames,kind,count", [
    ([protocol.encode_produce(4, "t", 0, 1)], "produce", 0),
    ([protocol.encode_fetch(4, "t", 0, 0, 1 << 20, 0), b"extra"], "fetch", 1),
    ([protocol.encode_produce(4, "t", 0, 1), batch_of([b"a"]), b"extra"], "produce", 2),
])
def test_a_request_with_the_wrong_frame_count_is_answered_malformed_with_its_id(
        server, client, frames, kind, count):
    reply, _ = direct_roundtrip(client, *frames)
    assert reply.request_id == 4
    assert isinstance(reply.error, MalformedRequestError)
    assert f"a {kind} request carries" in str(reply.error) and f"not {count}" in str(reply.error)
    assert server.call(server.partition_info, "t", 0).end_offset == 0


def test_a_frame_over_the_limit_is_dropped_at_the_socket(server, client):
    # When a direct client sends a frame over FRAME_BYTES_MAX
    client.send_multipart([protocol.encode_produce(1, "t", 0, 1),
                           b"x" * (limits.FRAME_BYTES_MAX + 1)])
    # Then no reply comes, and the next connection is served
    assert not client.poll(500)
    again = dealer_to(server.direct_address)
    try:
        reply, _ = direct_roundtrip(again, protocol.encode_produce(2, "t", 0, 1), batch_of([b"a"]))
        assert reply.error is None
    finally:
        again.close()


def test_a_client_past_its_requests_in_flight_is_refused_until_replies_free_them(
        server, client):
    # Given CLIENT_REQUESTS_IN_FLIGHT_MAX fetches parked at the log end
    in_flight = limits.CLIENT_REQUESTS_IN_FLIGHT_MAX
    for request_id in range(1, in_flight + 1):
        client.send_multipart([protocol.encode_fetch(request_id, "t", 0, 0, 1 << 20, 30_000)])
    # When it sends one more
    reply, _ = direct_roundtrip(client, protocol.encode_fetch(999, "t", 0, 0, 1 << 20, 30_000))
    # Then that one is refused, naming the limit
    assert reply.request_id == 999 and isinstance(reply.error, TooManyRequestsError)
    assert str(in_flight) in str(reply.error)
    # and once a produce wakes the parked fetches, their replies free the places
    other = dealer_to(server.direct_address)
    try:
        direct_roundtrip(other, protocol.encode_produce(1, "t", 0, 1), batch_of([b"a"]))
    finally:
        other.close()
    answered = 0
    deadline_s = time.monotonic() + REPLY_WAIT_MS / 1000
    while answered < in_flight and time.monotonic() < deadline_s:
        if client.poll(100):
            client.recv_multipart()
            answered += 1
    assert answered == in_flight
    reply, _ = direct_roundtrip(client, protocol.encode_fetch(1000, "t", 0, 0, 1 << 20, 0))
    assert reply.error is None


def test_acks_0_produces_take_no_place_in_flight(server, client):
    # acks=0 gets no reply: were it counted, its places would never come back.
    for request_id in range(1, limits.CLIENT_REQUESTS_IN_FLIGHT_MAX + 10):
        client.send_multipart([protocol.encode_produce(request_id, "t", 0, 0), batch_of([b"a"])])
    reply, _ = direct_roundtrip(client, protocol.encode_fetch(5_000, "t", 0, 0, 1 << 20, 0))
    assert reply.error is None and reply.high_watermark > 0


def test_a_direct_request_for_a_partition_not_here_is_unavailable(client):
    from plinth.errors import UnavailableError

    reply, _ = direct_roundtrip(client, protocol.encode_produce(2, "t", 9, 1), batch_of([b"a"]))
    assert isinstance(reply.error, UnavailableError)


def test_router_and_direct_clients_with_the_same_identity_get_their_own_replies(
        server, router):
    # The router's envelope is [router id][client id]; a direct client's is its own
    # id alone: replies must go back on the socket each request came on.
    direct = zmq.Context.instance().socket(zmq.DEALER)
    direct.setsockopt(zmq.LINGER, 0)
    direct.setsockopt(zmq.ROUTING_ID, CLIENT)
    direct.connect(server.direct_address)
    try:
        router.send_multipart([CLIENT, protocol.encode_fetch(1, "t", 0, 0, 1 << 20, 300)])
        direct.send_multipart([protocol.encode_fetch(2, "t", 0, 0, 1 << 20, 300)])
        assert router.poll(REPLY_WAIT_MS) and direct.poll(REPLY_WAIT_MS)
        routed = router.recv_multipart()
        assert routed[0] == CLIENT and protocol.decode_reply(routed[1]).request_id == 1
        assert protocol.decode_reply(direct.recv_multipart()[0]).request_id == 2
    finally:
        direct.close()


def test_a_direct_fetch_of_a_partition_that_moved_away_is_unavailable_not_empty(server, client):
    # Given a partition sealed here (its writes moved to another shard)
    direct_roundtrip(client, protocol.encode_produce(1, "t", 0, 1), batch_of([b"a"]))
    server.call(server.seal_partition, "t", 0)
    # When a direct client fetches past its end (through the router it would get an
    # empty answer, and ask again through a router that knows the new owner)
    reply, _ = direct_roundtrip(client, protocol.encode_fetch(2, "t", 0, 1, 1 << 20, 0))
    # Then it is told unavailable, so that it drops its direct route
    from plinth.errors import UnavailableError

    assert isinstance(reply.error, UnavailableError) and "through the router" in str(reply.error)


def test_a_direct_client_that_does_not_read_its_fetch_replies_holds_at_most_its_share(
        server, router, monkeypatch):
    # Given a partition whose every fetch from offset 0 answers 2 MB, and a share of
    # 4 MiB of unsent replies per client
    monkeypatch.setattr(limits, "CLIENT_REPLY_BYTES_UNSENT_MAX", 4 << 20)
    for request_id in range(8):
        roundtrip(router, protocol.encode_produce(request_id, "t", 0, 1),
                  batch_of([b"v" * 250_000]))
    # And a direct client whose connection stops draining: a one-message receive
    # queue, a small kernel buffer, and no recv while it sends 40 fetches (80 MB)
    stalled = zmq.Context.instance().socket(zmq.DEALER)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 64 * 1024)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.connect(server.direct_address)
    fetches = 40
    try:
        for request_id in range(fetches):
            stalled.send(protocol.encode_fetch(100 + request_id, "t", 0, 0, 4 << 20, 0))
        # When the shard has answered them all
        wait_until(lambda: server.stats.requests_direct == fetches
                   and server.stats.errors["tooManyRequests"] > 0, REPLY_WAIT_MS / 1000,
                   explain=lambda: f"{server.stats.requests_direct} direct requests, "
                                   f"errors {dict(server.stats.errors)}")
        # Then when the client reads at last, every fetch was answered: data up to its
        # share (plus what the kernel's socket buffers took), the rest refused saying why
        data, refused = 0, []
        while len(refused) + data < fetches and stalled.poll(REPLY_WAIT_MS):
            reply = protocol.decode_reply(stalled.recv_multipart()[0])
            if reply.error is None:
                data += 1
            else:
                refused.append(str(reply.error))
    finally:
        stalled.close()
    assert data + len(refused) == fetches
    assert data <= 10, data   # 2 in the share, the rest in the kernel's buffers
    assert refused and all("not reading them" in why and "per client" in why for why in refused)
