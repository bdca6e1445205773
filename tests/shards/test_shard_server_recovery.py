"""ShardServer between a restart and the end of its recovery (shard_server.py,
"Restarts"): real sockets and a real disk, no Ray. A DEALER plays the router; the
test plays the actor, reopening the partitions and saying when it is done."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import zmq

from plinth import protocol, protocol_classic
from plinth.errors import UnavailableError
from plinth.shards.classic_group import KafkaError
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer
from tests.shards.test_shard_server import batch_of, roundtrip

COUNTS = {"t": 2}
COMMITTED = {("t", 0): 5, ("t", 1): 7}


def commit(sock, offsets=COMMITTED):
    return roundtrip(sock, protocol.encode_commit_offsets(1, "commitOffsets", "g", "", 0,
                                                          offsets))[0]


def heartbeat(sock):
    return roundtrip(sock, protocol.encode_group_heartbeat(2, "g", "", 0, ["t"], set(),
                                                           10_000, ""))[0]


def fetch_offsets(sock):
    return roundtrip(sock, protocol.encode_group_request(3, "fetchOffsets", "g"))[0]


def describe(sock):
    return roundtrip(sock, protocol.encode_group_request(4, "describeGroup", "g"))[0]


def classic_join(sock):
    return roundtrip(sock, protocol_classic.encode_request(protocol_classic.ClassicJoinRequest(
        5, "k", "", "", "consumer", (("range", b"subscription"),), 10_000, 30_000,
        "client-1", "/127.0.0.1")))[0]


@pytest.fixture
def shard_dir(tmp_path):
    """A shard's directory whose group g committed COMMITTED, as before a crash."""
    directory = tmp_path / "shard"
    srv = ShardServer("shard-test", directory, "127.0.0.1")
    srv.start()
    try:
        for partition in range(COUNTS["t"]):
            srv.call(srv.open_partition, "t", partition, LogConfig())
        srv.call(srv.set_partition_counts, COUNTS)
        with dealer(srv.address) as sock:
            assert commit(sock).error is None
    finally:
        srv.stop(5)
    return directory


@contextmanager
def dealer(address: str):
    """A DEALER playing the router, connected to ``address``."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def recovering(shard_dir):
    """The shard restarted on ``shard_dir`` with t-0 reopened and t-1 not yet, and a
    DEALER connected to it."""
    srv = ShardServer("shard-test", shard_dir, "127.0.0.1")
    srv.start(recovering=True)
    try:
        srv.call(srv.open_partition, "t", 0, LogConfig(), 0, False, None, None, None, True)
        with dealer(srv.address) as sock:
            yield srv, sock
    finally:
        srv.stop(5)


def test_every_group_request_before_recovery_ends_is_unavailable_naming_the_shard_and_its_recovery(
        recovering):
    srv, sock = recovering
    # Given a restarted shard that has reopened one of its two partitions
    # When each kind of group request arrives
    for reply in (heartbeat(sock), commit(sock), fetch_offsets(sock), describe(sock)):
        # Then each is answered unavailable (retriable), naming the shard and why,
        # not "unknown topic" and not as if the group had no offsets
        assert isinstance(reply.error, UnavailableError), reply
        assert "shard-test is recovering after a restart: it has reopened 1 of its " \
               "partitions so far" in str(reply.error)


def test_a_kafka_classic_join_before_recovery_ends_is_answered_coordinator_load_in_progress(
        recovering):
    srv, sock = recovering
    # When a Kafka client joins a classic group on the restarted shard still recovering
    reply = classic_join(sock)
    # Then it gets Kafka's loading answer, which its client retries, and no member id
    assert reply.error is None
    assert reply.classic.error_code == KafkaError.COORDINATOR_LOAD_IN_PROGRESS
    assert reply.classic.member_id == ""


def test_a_produce_to_a_partition_not_reopened_yet_is_unavailable_saying_the_shard_recovers(
        recovering):
    srv, sock = recovering
    # When a produce reaches the partition still to be reopened
    reply = roundtrip(sock, protocol.encode_produce(6, "t", 1, 1), batch_of([b"x"]))[0]
    # Then it is retriable, as before, and says why
    assert isinstance(reply.error, UnavailableError)
    assert "shard-test is recovering" in str(reply.error)
    # And the partition reopened already takes it
    assert roundtrip(sock, protocol.encode_produce(7, "t", 0, 1), batch_of([b"x"]))[0].error \
        is None


def test_once_recovered_the_groups_are_served_with_their_committed_offsets_and_topic_check(
        recovering):
    srv, sock = recovering
    # Given the rest of the recovery: the last partition, the counts, the end
    srv.call(srv.open_partition, "t", 1, LogConfig(), 0, False, None, None, None, True)
    srv.call(srv.set_partition_counts, COUNTS)
    srv.call(srv.recovered)
    # Then the committed offsets are there, a commit of the topic is taken, and a
    # member joins
    assert fetch_offsets(sock).committed == COMMITTED
    assert commit(sock, {("t", 1): 9}).error is None
    assert fetch_offsets(sock).committed == {("t", 0): 5, ("t", 1): 9}
    joined = heartbeat(sock)
    assert joined.error is None and joined.heartbeat.member_id
    assert [m.member_id for m in describe(sock).group.members] == [joined.heartbeat.member_id]
    assert classic_join(sock).classic.error_code == KafkaError.MEMBER_ID_REQUIRED


def test_a_server_started_without_recovering_serves_groups_at_once(shard_dir):
    # A server no actor recovers (the tests', a new shard's) is never held
    srv = ShardServer("shard-test", shard_dir, "127.0.0.1")
    srv.start()
    try:
        with dealer(srv.address) as sock:
            assert fetch_offsets(sock).committed == COMMITTED
    finally:
        srv.stop(5)
