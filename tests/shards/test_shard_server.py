"""ShardServer: the shard's data plane, with real sockets and a real disk, no Ray.

A DEALER plays the router: it sends [client id][Request][payload]? and gets
[client id][Reply][payload]? back.
"""

from __future__ import annotations

import errno
import os
import random
import time
from contextlib import contextmanager

import pytest
import zmq

from plinth import limits, protocol
from plinth.format.record_batch import BatchBuilder, decode_records
from plinth.format.log_entry import iter_entries
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer
from tests.support import wait_until

# Record timestamps: now, so that the default 7-day retention keeps them.
NOW_MS = time.time_ns() // 1_000_000

CLIENT = b"client-1"


@pytest.fixture
def server(tmp_path):
    srv = ShardServer("shard-test", tmp_path / "shard", "127.0.0.1")
    srv.start()
    srv.call(srv.open_partition, "t", 0, LogConfig())
    yield srv
    srv.stop(5)


@pytest.fixture
def router(server):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.address)
    yield sock
    sock.close()


@contextmanager
def running_shard(directory, initial_offset: int = 0, producers=None, **options):
    """A started ShardServer on ``directory`` with partition t-0 open (continuing at
    ``initial_offset`` with the ``producers`` snapshot), and a DEALER playing the
    router; both closed on exit."""
    srv = ShardServer("shard-test", directory, "127.0.0.1", **options)
    srv.start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        srv.call(srv.open_partition, "t", 0, LogConfig(), initial_offset, False, producers)
        sock.connect(srv.address)
        yield srv, sock
    finally:
        sock.close()
        srv.stop(5)


def batch_of(values: list[bytes], key: bytes | None = None) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(key, value, NOW_MS, None)
    return builder.build()


def roundtrip(sock, header: bytes, payload: bytes | None = None, timeout_ms: int = 5000):
    sock.send_multipart([CLIENT, header] + ([payload] if payload is not None else []))
    assert sock.poll(timeout_ms), "no reply from the shard"
    frames = sock.recv_multipart()
    assert frames[0] == CLIENT
    return protocol.decode_reply(frames[1]), (frames[2] if len(frames) > 2 else None)


def produce(sock, values, request_id=1, partition=0, topic="t"):
    return roundtrip(sock, protocol.encode_produce(request_id, topic, partition, 1), batch_of(values))[0]


def fetch(sock, offset, request_id=2, wait_ms=0, topic="t"):
    return roundtrip(sock, protocol.encode_fetch(request_id, topic, 0, offset, 1 << 20, wait_ms))


def values_in(payload: bytes, offset_min: int = 0) -> list[bytes]:
    out = []
    for header, batch in iter_entries(payload):
        out += [r.value for r in decode_records("t", 0, header.base_offset, batch, offset_min)]
    return out


def test_a_produce_is_acknowledged_with_consecutive_offsets_and_can_be_fetched(router):
    # Given two batches produced in turn
    first = produce(router, [b"a", b"b", b"c"], request_id=10)
    second = produce(router, [b"d"], request_id=11)
    # Then they get consecutive base offsets, echoing their request ids
    assert (first.request_id, first.error, first.base_offset) == (10, None, 0)
    assert (second.request_id, second.base_offset) == (11, 3)
    # And a fetch from the middle of the first batch returns the rest in order
    reply, payload = fetch(router, 1)
    assert reply.error is None and reply.high_watermark == 4
    assert values_in(payload, offset_min=1) == [b"b", b"c", b"d"]


def test_a_fetch_at_the_log_end_is_parked_until_an_append_lands(router):
    # Given a fetch at the end of an empty log that may wait 20 s
    router.send_multipart([CLIENT, protocol.encode_fetch(5, "t", 0, 0, 1 << 20, 20_000)])
    # When a listOffsets sent after it is answered, the fetch is still parked
    reply, _ = roundtrip(router, protocol.encode_list_offsets(6, "t", 0))
    assert reply.request_id == 6
    started = time.monotonic()
    # And a produce arrives
    router.send_multipart([CLIENT, protocol.encode_produce(7, "t", 0, 1), batch_of([b"wake"])])
    # Then the parked fetch is answered with the new record, long before its wait ends
    got = {}
    while len(got) < 2:
        assert router.poll(10_000)
        frames = router.recv_multipart()
        view = protocol.decode_reply(frames[1])
        got[view.request_id] = (view, frames[2] if len(frames) > 2 else None)
    assert time.monotonic() - started < 10
    assert values_in(got[5][1]) == [b"wake"]


def test_a_parked_fetch_gets_an_empty_reply_when_its_wait_ends(router):
    reply, payload = fetch(router, 0, wait_ms=50)
    assert reply.error is None and payload == b""


def test_a_parked_fetchs_wait_ends_on_time_on_an_idle_shard(tmp_path, monkeypatch):
    # Given a shard whose loop would otherwise sleep a minute when idle
    monkeypatch.setattr(limits, "SHARD_IDLE_POLL_MS", 60_000)
    with running_shard(tmp_path / "s") as (_, sock):
        # When a fetch at the log end may wait 100 ms
        started = time.monotonic()
        reply, payload = fetch(sock, 0, wait_ms=100)
        # Then it is answered, empty, once the 100 ms are over (not a minute later)
        assert reply.error is None and payload == b""
        assert time.monotonic() - started >= 0.1


def test_an_offset_past_the_end_is_out_of_range_and_names_the_valid_range(router):
    produce(router, [b"x"])
    reply, _ = fetch(router, 5)
    assert type(reply.error).__name__ == "OffsetOutOfRangeError"
    assert "0 to 1" in str(reply.error)


def test_a_partition_not_on_this_shard_is_a_retriable_error_naming_it(router):
    # (the router's map was stale; routers answer unknownTopic for topics that do not exist)
    reply = produce(router, [b"x"], topic="nope")
    assert type(reply.error).__name__ == "UnavailableError"
    assert "nope-0 is not on shard-test" in str(reply.error)


def test_hostile_messages_get_error_replies_and_the_shard_keeps_serving(router):
    rng = random.Random(7)
    good = protocol.encode_produce(1, "t", 0, 1)
    hostile = [
        [CLIENT, b""],
        [CLIENT, b"\x00" * 7],
        [CLIENT, bytes(rng.randrange(256) for _ in range(64))],
        [CLIENT, good],                                    # produce without its batch
        [CLIENT, good, b"not a batch"],
        [CLIENT, good, batch_of([b"x"]), b"extra frame"],
        [CLIENT, good[: len(good) // 2], batch_of([b"x"])],
        [CLIENT, protocol.encode_produce(1, "t", 0, 5), batch_of([b"x"])],   # acks=5
        [CLIENT, protocol.encode_list_topics(1)],           # not a shard request
    ]
    for frames in hostile:
        router.send_multipart(frames)
        assert router.poll(5000), f"no reply to {frames!r}"
        reply = protocol.decode_reply(router.recv_multipart()[1])
        assert reply.error is not None, frames
    # A message too short to carry a header is dropped, not answered
    router.send_multipart([CLIENT])
    # And the next good request is served
    assert produce(router, [b"still fine"]).error is None


def test_every_acknowledged_record_survives_a_restart_of_the_server(tmp_path):
    # Given a server that acknowledged 50 batches
    with running_shard(tmp_path / "s") as (_, sock):
        for i in range(50):
            assert produce(sock, [b"v%d" % i], request_id=i).base_offset == i
    # When it is started again on the same directory
    with running_shard(tmp_path / "s") as (_, sock):
        # Then every record is there, in order
        reply, payload = fetch(sock, 0)
        assert reply.high_watermark == 50
        assert values_in(payload) == [b"v%d" % i for i in range(50)]


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_acknowledges_and_serves_what_it_stored(tmp_path, policy):
    # Given a shard with this fsync policy
    with running_shard(tmp_path / "s", fsync_policy=policy, fsync_interval_ms=10) as (_, sock):
        # When 20 batches are produced
        offsets = [produce(sock, [b"%d" % i], request_id=i).base_offset for i in range(20)]
        # Then each is acknowledged in turn and all are readable
        assert offsets == list(range(20))
        reply, payload = fetch(sock, 0)
        assert values_in(payload) == [b"%d" % i for i in range(20)]


def test_a_produce_with_acks_zero_gets_no_reply_but_is_stored(router):
    router.send_multipart([CLIENT, protocol.encode_produce(1, "t", 0, 0), batch_of([b"quiet"])])
    # The next request's reply is the first one back: the acks=0 produce sent none
    reply, payload = fetch(router, 0, request_id=2, wait_ms=5_000)
    assert reply.request_id == 2
    assert values_in(payload) == [b"quiet"]


def test_a_shard_refuses_a_data_dir_locked_by_another_live_shard(server, monkeypatch):
    from plinth.errors import StorageError

    # Given a running shard / When another one starts on its data dir
    monkeypatch.setattr(limits, "DATA_DIR_LOCK_WAIT_S_MAX", 0.2)
    twin = ShardServer("shard-twin", server.data_dir, "127.0.0.1")
    # Then it fails after waiting, saying why
    with pytest.raises(StorageError, match="locked by another shard process after waiting 0.2 s"):
        twin.start()


def idempotent_batch(values, producer_id, base_sequence) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, NOW_MS, None)
    return builder.build(producer_id=producer_id, base_sequence=base_sequence)


def produce_raw(sock, batch, request_id=1):
    return roundtrip(sock, protocol.encode_produce(request_id, "t", 0, 1), batch)[0]


def test_an_exact_retry_of_an_idempotent_batch_gets_its_original_offsets_and_is_not_stored_twice(router):
    first = produce_raw(router, idempotent_batch([b"a", b"b"], 77, 0))
    second = produce_raw(router, idempotent_batch([b"c"], 77, 2))
    # When both are retried (as after a lost reply)
    retry_first = produce_raw(router, idempotent_batch([b"a", b"b"], 77, 0))
    retry_second = produce_raw(router, idempotent_batch([b"c"], 77, 2))
    # Then the retries get the original offsets and the log holds each record once
    assert (first.base_offset, second.base_offset) == (0, 2)
    assert (retry_first.base_offset, retry_second.base_offset) == (0, 2)
    _, payload = fetch(router, 0)
    assert values_in(payload) == [b"a", b"b", b"c"]


def test_a_gap_in_an_idempotent_producers_sequence_is_refused_with_the_expected_number(router):
    produce_raw(router, idempotent_batch([b"a"], 5, 0))
    gap = produce_raw(router, idempotent_batch([b"c"], 5, 3))
    assert type(gap.error).__name__ == "OutOfOrderSequenceError"
    assert "sent sequence 3, expected 1" in str(gap.error)
    assert produce_raw(router, idempotent_batch([b"b"], 5, 1)).base_offset == 1


def test_a_restarted_shard_still_recognises_a_retry_of_an_acknowledged_batch(tmp_path):
    with running_shard(tmp_path / "s") as (_, sock):
        assert produce_raw(sock, idempotent_batch([b"x", b"y"], 9, 0)).base_offset == 0
    with running_shard(tmp_path / "s") as (_, sock):
        assert produce_raw(sock, idempotent_batch([b"x", b"y"], 9, 0)).base_offset == 0
        assert fetch(sock, 0)[0].high_watermark == 2


def test_a_sealed_partition_refuses_writes_serves_its_history_and_a_new_log_continues_its_offsets(server, router, tmp_path):
    # Given a partition with three records
    assert produce(router, [b"a", b"b", b"c"]).base_offset == 0
    # When it is sealed (its writes move to another shard)
    assert server.call(server.seal_partition, "t", 0) == (3, [])
    # Then produces are refused as unavailable (retriable), history is still served,
    # and a fetch past the end is answered empty at once rather than parked
    refused = produce(router, [b"d"], request_id=2)
    assert type(refused.error).__name__ == "UnavailableError" and "moved away" in str(refused.error)
    _, payload = fetch(router, 0, wait_ms=10_000)
    assert values_in(payload) == [b"a", b"b", b"c"]
    reply, payload = fetch(router, 3, request_id=3, wait_ms=10_000)
    assert reply.error is None and payload == b""
    # And a new shard's log for the partition starts at the sealed end
    with running_shard(tmp_path / "new", initial_offset=3) as (_, sock):
        assert produce(sock, [b"d"], request_id=4).base_offset == 3


def test_a_retry_of_a_batch_written_just_before_a_move_gets_its_offsets_from_the_new_owner(tmp_path):
    # Given an idempotent producer's batch acknowledged by the old owner, just before a move
    with running_shard(tmp_path / "old") as (old, sock):
        assert produce_raw(sock, idempotent_batch([b"a", b"b"], 5, 0)).base_offset == 0
        end_offset, producers = old.call(old.seal_partition, "t", 0)
    assert end_offset == 2 and [entry[:2] for entry in producers] == [[5, [[0, 2, 0]]]]
    # When the new owner, given the old owner's producer snapshot, gets a retry of it
    for _restart in range(2):   # (and again after the new owner restarts)
        with running_shard(tmp_path / "new", end_offset, producers) as (_, sock):
            retry = produce_raw(sock, idempotent_batch([b"a", b"b"], 5, 0))
            # Then it answers with the original offsets and stores nothing
            assert retry.error is None and retry.base_offset == 0
            assert fetch(sock, 2)[0].high_watermark == 2
    # And the producer's next batch continues its sequence, while a gap is refused
    with running_shard(tmp_path / "new", end_offset, producers) as (_, sock):
        assert produce_raw(sock, idempotent_batch([b"c"], 5, 2), request_id=2).base_offset == 2
        gap = produce_raw(sock, idempotent_batch([b"z"], 5, 9), request_id=3)
        assert type(gap.error).__name__ == "OutOfOrderSequenceError"


def test_a_partition_whose_writes_come_back_continues_at_the_new_offset_after_a_gap(server, router, tmp_path):
    # Given a partition sealed here at offset 3 (its writes moved to another shard)
    assert produce(router, [b"a", b"b", b"c"]).base_offset == 0
    server.call(server.seal_partition, "t", 0)
    # When its writes come back at offset 7 (offsets 3..6 stayed on the other shard)
    server.call(server.open_partition, "t", 0, LogConfig(), 7, False, [])
    # Then new records take offsets from 7, and both ranges are served
    assert produce(router, [b"h"], request_id=2).base_offset == 7
    assert values_in(fetch(router, 0)[1]) == [b"a", b"b", b"c"]
    assert values_in(fetch(router, 7, request_id=3)[1]) == [b"h"]
    # And a restarted shard finds the same log, gap included
    server.stop(5)
    with running_shard(tmp_path / "shard", 7) as (_, sock):
        assert fetch(sock, 7)[0].high_watermark == 8
        assert produce(sock, [b"i"], request_id=4).base_offset == 8
        assert values_in(fetch(sock, 0, request_id=5)[1]) == [b"a", b"b", b"c"]


def test_a_retry_of_a_batch_written_just_before_the_log_rolled_is_recognised_after_a_restart(tmp_path):
    small_segments = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN)
    srv = ShardServer("shard-test", tmp_path / "s", "127.0.0.1")
    srv.start()
    srv.call(srv.open_partition, "t", 0, small_segments)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.address)
    # Given producer 5's batch, then another producer's batches until the log rolls
    assert produce_raw(sock, idempotent_batch([b"a", b"b"], 5, 0)).base_offset == 0
    value = b"x" * (limits.SEGMENT_BYTES_MIN // 4)
    for sequence in range(6):
        assert produce_raw(sock, idempotent_batch([value], 6, sequence), request_id=2 + sequence).error is None
    log_files = sorted((tmp_path / "s" / "t-0").glob("*.log"))
    assert len(log_files) > 1 and log_files[-1].name != f"{0:020d}.log"
    # When the shard restarts and producer 5 retries its batch (its ack was lost)
    sock.close()
    srv.stop(5)
    with running_shard(tmp_path / "s") as (_, sock):
        retry = produce_raw(sock, idempotent_batch([b"a", b"b"], 5, 0), request_id=20)
        # Then it gets the original offsets and nothing is stored twice
        assert retry.error is None and retry.base_offset == 0
        high_watermark = fetch(sock, 0)[0].high_watermark
        assert produce_raw(sock, idempotent_batch([b"c"], 5, 2), request_id=21).base_offset == high_watermark


def test_a_failed_fsync_fails_only_its_own_partitions_produce(server, router):
    # Given partition t-1 whose fsync fails and t-0 whose fsync works
    server.call(server.open_partition, "t", 1, LogConfig())
    broken = server._partitions[("t", 1)].log

    def failing_flush():
        raise OSError(5, "Input/output error")
    broken.flush = failing_flush
    # When both are produced to
    try:
        bad = produce(router, [b"lost"], request_id=21, partition=1)
        good = produce(router, [b"kept"], request_id=22, partition=0)
    finally:
        del broken.flush
    # Then only t-1's produce fails, naming the partition, and only t-0's record is readable
    assert type(bad.error).__name__ == "StorageError" and "fsync of t-1 failed" in str(bad.error)
    assert good.error is None and good.base_offset == 0
    reply, payload = fetch(router, 0)
    assert reply.high_watermark == 1 and values_in(payload) == [b"kept"]


def test_a_disk_that_fails_an_fsync_fails_that_partitions_produce_and_the_shard_keeps_serving(
        server, router, monkeypatch):
    # Given partition t-1, whose disk fails every fsync of its log (EIO)
    server.call(server.open_partition, "t", 1, LogConfig())
    broken_fd = server._partitions[("t", 1)].log.segments[-1]._fd
    real_fsync = os.fsync

    def fsync(fd):
        if fd == broken_fd:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    # When it is produced to / Then the produce fails with a StorageError naming it
    bad = produce(router, [b"lost"], request_id=31, partition=1)
    assert type(bad.error).__name__ == "StorageError" and "fsync of t-1 failed" in str(bad.error)
    # And the shard keeps serving the other partition
    assert produce(router, [b"kept"], request_id=32).base_offset == 0
    assert values_in(fetch(router, 0)[1]) == [b"kept"]


def park_fetch(router, request_id: int, offset: int = 0) -> None:
    """Send a fetch at the log end that may wait 20 s, and make sure it is parked: a
    listOffsets sent after it is answered first."""
    router.send_multipart([CLIENT, protocol.encode_fetch(request_id, "t", 0, offset, 1 << 20,
                                                         20_000)])
    reply, _ = roundtrip(router, protocol.encode_list_offsets(request_id + 1, "t", 0))
    assert reply.request_id == request_id + 1


def test_a_parked_fetch_is_answered_empty_when_its_partition_is_sealed(server, router):
    # Given a fetch parked at the end of t-0
    produce(router, [b"a"])
    park_fetch(router, 40, offset=1)
    # When the partition is sealed (its writes move to another shard)
    started = time.monotonic()
    assert server.call(server.seal_partition, "t", 0) == (1, [])
    # Then the fetch is answered at once, empty, so that its consumer asks the new owner
    assert router.poll(10_000), "the parked fetch was not answered"
    frames = router.recv_multipart()
    assert time.monotonic() - started < 10
    reply = protocol.decode_reply(frames[1])
    assert (reply.request_id, reply.error, frames[2]) == (40, None, b"")


def test_a_parked_fetch_gets_an_unknown_topic_error_when_its_partition_is_deleted(server, router):
    # Given a fetch parked at the end of t-0 / When the partition is deleted
    park_fetch(router, 50)
    assert server.call(server.delete_partition, "t", 0) is True
    # Then the fetch is answered with unknownTopic
    assert router.poll(10_000), "the parked fetch was not answered"
    reply = protocol.decode_reply(router.recv_multipart()[1])
    assert reply.request_id == 50 and type(reply.error).__name__ == "UnknownTopicError"


def test_a_fetch_beyond_the_parked_bound_is_answered_at_once(tmp_path, monkeypatch):
    # Given a shard where only one fetch may be parked, and one is
    monkeypatch.setattr(limits, "PARKED_FETCHES_MAX", 1)
    with running_shard(tmp_path / "s") as (_, sock):
        park_fetch(sock, 60)
        # When another fetch at the log end may wait 20 s / Then it is answered at once, empty
        started = time.monotonic()
        reply, payload = roundtrip(sock, protocol.encode_fetch(62, "t", 0, 0, 1 << 20, 20_000))
        assert (reply.request_id, payload) == (62, b"") and time.monotonic() - started < 10
        # And the parked one is still answered by the next append
        sock.send_multipart([CLIENT, protocol.encode_produce(63, "t", 0, 1), batch_of([b"wake"])])
        replies = {}
        while len(replies) < 2:
            assert sock.poll(10_000), f"only {sorted(replies)} answered"
            frames = sock.recv_multipart()
            replies[protocol.decode_reply(frames[1]).request_id] = frames[2:]
        assert values_in(replies[60][0]) == [b"wake"]


# --- The cluster's keys (issue 11, finding 1) --------------------------------------------


@contextmanager
def dealer(address: str, keys=None, server_key: bytes | None = None):
    """A DEALER to ``address``, a CurveZMQ client with ``keys`` if given (as a router
    holding them would be; ``server_key`` overrides the server's public key), else
    plain (as anyone who reads ``plinth status`` is)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.apply_client(sock)
    if server_key is not None:
        sock.curve_serverkey = server_key
    sock.connect(address)
    try:
        yield sock
    finally:
        sock.close()


def test_a_shard_with_the_cluster_keys_answers_a_member_and_never_a_keyless_or_foreign_client(tmp_path):
    from plinth.cluster_keys import ClusterKeys

    # Given a shard started with the cluster's keys, holding one acknowledged record
    keys = ClusterKeys.generate()
    with running_shard(tmp_path / "s", cluster_keys=keys) as (srv, _):
        with dealer(srv.address, keys) as member:
            assert produce(member, [b"secret"]).base_offset == 0
        # When a client without keys, and one with a key pair of its own (a CurveZMQ
        # client that knows the shard's public key), send a fetch and a produce
        foreign = ClusterKeys(*zmq.curve_keypair())
        with dealer(srv.address) as keyless, \
                dealer(srv.address, foreign, server_key=keys.public_key) as foreign_client:
            for sock in (keyless, foreign_client):
                sock.send_multipart([CLIENT, protocol.encode_fetch(7, "t", 0, 0, 1 << 20, 0)])
                sock.send_multipart([CLIENT, protocol.encode_produce(8, "t", 0, 1),
                                     batch_of([b"forged"])])
            # Then neither gets any reply within 3 s
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert not keyless.poll(100) and not foreign_client.poll(100)
        # And nothing was stored: a member still reads only its own record
        with dealer(srv.address, keys) as member:
            reply, payload = fetch(member, 0)
            assert reply.high_watermark == 1 and values_in(payload) == [b"secret"]


def test_a_shard_without_the_cluster_keys_refuses_to_listen_beyond_loopback(tmp_path):
    # Given no keys, When a shard would bind a network address, Then it refuses
    with pytest.raises(AssertionError, match="loopback"):
        ShardServer("shard-test", tmp_path / "s", "10.1.2.3")


def test_a_shard_on_the_ipc_hop_listens_in_its_0700_directory_and_serves_a_plain_member(tmp_path):
    import dataclasses
    import stat

    from plinth.cluster_keys import ClusterKeys, make_ipc_dir

    # Given the cluster's keys with the ipc hop (--internal-hop ipc)
    keys = dataclasses.replace(ClusterKeys.generate(), ipc_dir=make_ipc_dir(tmp_path))
    assert stat.S_IMODE(os.stat(keys.ipc_dir).st_mode) == 0o700
    # When a shard starts with them
    with running_shard(tmp_path / "s", cluster_keys=keys) as (srv, _):
        # Then it listens in that directory, and a plain DEALER there is served
        assert srv.address == f"ipc://{keys.ipc_dir}/shard-test"
        with dealer(srv.address) as member:
            assert produce(member, [b"a"]).base_offset == 0


# --- The loop's drain of one socket ----------------------------------------------------


@pytest.fixture
def inproc_pair():
    """A ROUTER and a DEALER over inproc://, where a send is queued at the ROUTER
    before it returns (no I/O thread), so a test knows what waits."""
    context = zmq.Context()
    router_sock = context.socket(zmq.ROUTER)
    router_sock.bind("inproc://drain")
    dealer = context.socket(zmq.DEALER)
    dealer.connect("inproc://drain")
    yield router_sock, dealer
    dealer.close(linger=0)
    router_sock.close(linger=0)
    context.term()


def drained_bodies(sock) -> list[bytes]:
    handled = []
    ShardServer._drain(sock, lambda frames: handled.append(frames[1].bytes))
    return handled


def test_a_drain_hands_over_every_waiting_message_in_order_up_to_the_group_commit_bound(
        inproc_pair, monkeypatch):
    router_sock, dealer = inproc_pair
    monkeypatch.setattr(limits, "GROUP_COMMIT_REQUESTS_MAX", 3)
    # Given nothing, then one message, then a burst of five waiting
    assert drained_bodies(router_sock) == []
    dealer.send(b"one")
    assert drained_bodies(router_sock) == [b"one"]
    for i in range(5):
        dealer.send(b"burst-%d" % i)
    # When the loop drains twice
    first, second = drained_bodies(router_sock), drained_bodies(router_sock)
    # Then each round takes at most the bound, in order, and leaves nothing behind
    assert first == [b"burst-0", b"burst-1", b"burst-2"]
    assert second == [b"burst-3", b"burst-4"]
    assert drained_bodies(router_sock) == []


def test_list_offsets_at_a_time_answers_the_first_record_stamped_at_or_after_it(router):
    # Given two batches stamped NOW_MS + 0..2 and NOW_MS + 10..11
    builder = BatchBuilder()
    for i in range(3):
        builder.append(None, b"a", NOW_MS + i, None)
    roundtrip(router, protocol.encode_produce(1, "t", 0, 1), builder.build())
    builder = BatchBuilder()
    for i in (10, 11):
        builder.append(None, b"b", NOW_MS + i, None)
    roundtrip(router, protocol.encode_produce(2, "t", 0, 1), builder.build())
    # When listOffsets asks for times inside each batch, past them all, and for none
    answers = [roundtrip(router, protocol.encode_list_offsets(3, "t", 0, timestamp_ms))[0].offsets
               for timestamp_ms in (NOW_MS + 1, NOW_MS + 5, NOW_MS + 12, protocol.NO_TIME_LOOKUP)]
    # Then each finds its record and its timestamp, exactly; the offsets come as ever
    assert [(a.found_offset, a.found_timestamp_ms) for a in answers] == [
        (1, NOW_MS + 1), (3, NOW_MS + 10), (-1, -1), (-1, -1)]
    assert {(a.start_offset, a.end_offset, a.high_watermark) for a in answers} == {(0, 5, 5)}


def test_a_retention_sweep_checks_each_partition_once_a_slice_per_loop_pass(
        tmp_path, monkeypatch):
    # Given a shard with 5 partitions, sweeping 2 at a time, its first sweep (at its
    # start) over and the next an hour away
    monkeypatch.setattr(limits, "RETENTION_SWEEP_SLICE_PARTITIONS", 2)
    monkeypatch.setattr(limits, "RETENTION_CHECK_INTERVAL_S", 3600.0)
    checked: list[str] = []
    enforce = Partition.enforce_retention

    def recorded(part, *args, **kwargs):
        checked.append(part.name)
        return enforce(part, *args, **kwargs)
    monkeypatch.setattr(Partition, "enforce_retention", recorded)
    with running_shard(tmp_path / "shard") as (srv, _):
        for partition in range(1, 5):
            srv.call(srv.open_partition, "t", partition, LogConfig())
        srv.call(lambda: None)   # a loop pass after the opens: the first sweep is over
        checked.clear()
        due_s = time.monotonic() + 3600.0

        def timers_once(now_s: float) -> int:   # on the loop thread: no pass between
            before = len(checked)
            srv._run_timers(now_s)
            return len(checked) - before
        # When the next sweep is due, one pass checks one slice
        assert srv.call(timers_once, due_s) == 2
        # Then the loop's own passes check the rest, each partition once
        wait_until(lambda: len(checked) == 5, timeout_s=10)
        assert sorted(checked) == [f"t-{p}" for p in range(5)]
        # And no sweep starts again before its interval has passed
        assert srv.call(timers_once, due_s + 1.0) == 0
        assert srv.call(timers_once, due_s + 3600.0) == 2
