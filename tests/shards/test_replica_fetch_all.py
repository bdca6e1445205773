"""One follower fetch for all of a leader's partitions (replicaFetchAll): the follower
side (replica_fetcher.py) against a fake leader speaking the wire protocol, and the
leader side (replica_server.py) in real ShardServers, real sockets on 127.0.0.1 and a
real disk, in one process, no Ray.

The fake leader is a ROUTER socket the follower's DEALER reaches at the address
set_peers gives for "lead": [DEALER id][client id][Request] in, [DEALER id]
[client id][Reply][entries] out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import zmq

from plinth import limits, protocol
from plinth.errors import (FencedLeaderEpochError, MalformedRequestError, NotLeaderError)
from plinth.format.record_batch import summarize_batch
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_calls import Leadership
from plinth.shards.shard_server import ShardServer
from tests.shards.test_shard_server_replication import (CLIENT, WAIT_S, batch_of, cluster,  # noqa: F401
                                                        produce, reply_of)
from tests.support import LostWriteback, fill_file_system

LEADERSHIP = Leadership(replicas=("lead", "s1"), leader="lead", leader_epoch=3,
                        in_sync=("lead", "s1"), partition_epoch=1, controller_epoch=1)
PARTITIONS = (0, 1, 2)


class FakeLeader:
    """A leader shard's ROUTER socket: takes the follower's fetches, answers as told."""

    def __init__(self):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def next_fetch(self, timeout_s: float = WAIT_S) -> tuple[list, protocol.ReplicaFetchAllRequest]:
        """The next request (which must be a fetch of all), with its envelope."""
        if not self.sock.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no fetch from the follower within {timeout_s} s")
        frames = self.sock.recv_multipart()
        request = protocol.decode_request(frames[2])
        assert isinstance(request, protocol.ReplicaFetchAllRequest), request
        return frames[:2], request

    def answer(self, envelope: list, request: protocol.ReplicaFetchAllRequest,
               entries: dict[int, bytes], errors: dict[int, Exception] = {}) -> None:
        """Each partition's answer: ``errors[p]``, else its ``entries[p]`` (none if
        absent) at offset fetch_offset in epoch 3, the log ending after them."""
        results, payload = [], b""
        for wanted in request.partitions:
            if wanted.partition in errors:
                results.append(protocol.ReplicaFetchPartitionResult(errors[wanted.partition], None))
                continue
            data = entries.get(wanted.partition, b"")
            end_offset = wanted.fetch_offset + (3 if data else 0)
            results.append(protocol.ReplicaFetchPartitionResult(None, protocol.ReplicaFetchResult(
                end_offset, 0, end_offset,
                epoch_starts=(protocol.EpochStart(3, wanted.fetch_offset),) if data else ()),
                len(data)))
            payload += data
        self.sock.send_multipart([*envelope, protocol.encode_replica_fetch_all_reply(
            request.request_id, results), payload])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def follower(tmp_path, monkeypatch):
    """Shard s1 following partitions t-0, t-1, t-2 on the fake leader "lead", with one
    fetch in flight at a time (a test may allow more once they are open)."""
    monkeypatch.setattr(limits, "REPLICA_FETCHES_IN_FLIGHT_MAX", 1)
    leader = FakeLeader()
    srv = ShardServer("s1", tmp_path / "s1", "127.0.0.1")
    srv.start()
    srv.call(srv.set_peers, {"lead": leader.address, "s1": srv.address}, 1)
    for partition in PARTITIONS:
        srv.call(srv.open_partition, "t", partition, LogConfig(), 0, False, None, LEADERSHIP, 1,
                 False)
    yield srv, leader
    srv.stop(5)
    leader.close()


def entry_of(values: list[bytes], base_offset: int, directory: Path) -> bytes:
    """One log entry at ``base_offset`` in leader epoch 3, as a leader stores it: written
    through the real append path to a partition in ``directory``."""
    part = Partition.open(directory / f"leader-{base_offset}-{len(values)}", "t", 0,
                          LogConfig(), initial_offset=base_offset)
    try:
        batch = batch_of(values)
        part.append(batch, summarize_batch(batch), leader_epoch=3)
        part.log.flush()
        return bytes(part.log.read(base_offset, 1 << 20, part.log.end_offset))
    finally:
        part.log.close()


def first_fetch_of_all(leader: FakeLeader) -> tuple[list, protocol.ReplicaFetchAllRequest]:
    """The first fetch carrying every followed partition: the partitions open one by one,
    and those opened while a fetch is in flight go in the next (the earlier ones are
    answered with nothing new)."""
    for _ in range(len(PARTITIONS)):
        envelope, request = leader.next_fetch()
        if len(request.partitions) == len(PARTITIONS):
            return envelope, request
        leader.answer(envelope, request, {})
    raise AssertionError(f"no fetch carried all of partitions {PARTITIONS}")


def log_end(srv: ShardServer, partition: int) -> int:
    return srv.call(srv.stats_snapshot)["replication"][("t", partition)]["log_end_offset"]


# --- The follower side ---------------------------------------------------------------

def test_a_follower_fetches_every_partition_it_follows_on_a_leader_in_one_request(follower,
                                                                                  tmp_path):
    # Given s1 following t-0, t-1 and t-2 on one leader
    srv, leader = follower
    # When the leader gets the follower's fetches once all three are open
    envelope, request = first_fetch_of_all(leader)
    # Then one request carries all three, each from offset 0 in leader epoch 3
    assert (request.replica_id, request.wait_ms_max) == ("s1", limits.REPLICA_FETCH_WAIT_MS)
    assert sorted((p.topic, p.partition, p.fetch_offset, p.leader_epoch, p.last_fetched_epoch)
                  for p in request.partitions) == [("t", n, 0, 3, -1) for n in PARTITIONS]
    # And when the answer brings entries for t-1 only
    leader.answer(envelope, request, {1: entry_of([b"a", b"b", b"c"], 0, tmp_path)})
    # Then s1 stores them, and its next fetch again carries all three, t-1 from offset 3
    _, again = leader.next_fetch()
    assert sorted((p.partition, p.fetch_offset, p.last_fetched_epoch)
                  for p in again.partitions) == [(0, 0, -1), (1, 3, 3), (2, 0, -1)]
    assert log_end(srv, 1) == 3 and log_end(srv, 0) == 0


def test_a_partition_the_leader_refuses_backs_off_alone_while_the_others_keep_fetching(
        follower, monkeypatch, tmp_path):
    # Given a follower whose backoff after a refusal is long
    monkeypatch.setattr(limits, "REPLICA_FETCH_BACKOFF_MS_MIN", 5_000)
    srv, leader = follower
    envelope, request = first_fetch_of_all(leader)
    # When the leader refuses t-0 (fenced) and sends entries for t-2
    leader.answer(envelope, request, {2: entry_of([b"x"] * 3, 0, tmp_path)},
                  errors={0: FencedLeaderEpochError("t-0: fenced, for the test")})
    # Then the next fetch carries t-1 and t-2 only, t-2 from its new end
    _, again = leader.next_fetch()
    assert sorted((p.partition, p.fetch_offset) for p in again.partitions) == [(1, 0), (2, 3)]
    assert srv.call(srv.stats_snapshot)["replication"][("t", 0)]["fetch_failures"] == 1


def test_a_follower_of_more_partitions_than_one_fetch_carries_asks_for_each_in_turn(
        follower, monkeypatch):
    # Given a bound of two partitions per fetch, and three followed
    monkeypatch.setattr(limits, "REPLICA_FETCH_PARTITIONS_MAX", 2)
    srv, leader = follower
    asked = []
    # When the leader answers fetches with nothing new (the partitions open one by one)
    for _ in range(2 + len(PARTITIONS)):
        envelope, request = leader.next_fetch()
        asked.append(sorted(p.partition for p in request.partitions))
        leader.answer(envelope, request, {})
    # Then none carries more than two, and once all are open each is asked in turn
    assert all(len(partitions) <= 2 for partitions in asked), asked
    assert set(asked[-2]) | set(asked[-1]) == set(PARTITIONS), asked


def test_a_partition_ready_while_a_fetch_waits_at_the_leader_goes_in_a_second_fetch(
        follower, monkeypatch, tmp_path):
    # Given a follower allowed two fetches in flight to its leader, whose fetch of all
    # three is answered: t-1 refused (it backs off), t-0 and t-2 nothing new
    srv, leader = follower
    envelope, request = first_fetch_of_all(leader)
    monkeypatch.setattr(limits, "REPLICA_FETCHES_IN_FLIGHT_MAX", 2)
    leader.answer(envelope, request, {}, errors={1: NotLeaderError("t-1: not yet, for the test")})
    # When the fetch of t-0 and t-2 waits at the leader (as at its log end)
    _, waiting = leader.next_fetch()
    assert sorted(p.partition for p in waiting.partitions) == [0, 2]
    # Then t-1 goes in a second fetch after its backoff, and once the entries it brought
    # are durable, in a third at once: neither waits for the fetch held at the leader
    # (given up only after REPLICA_FETCH_WAIT_MS + REPLICA_FETCH_TIMEOUT_MS)
    soon_s = (limits.REPLICA_FETCH_WAIT_MS + limits.REPLICA_FETCH_TIMEOUT_MS) / 1000 / 2
    envelope, second = leader.next_fetch(soon_s)
    assert [(p.partition, p.fetch_offset) for p in second.partitions] == [(1, 0)]
    leader.answer(envelope, second, {1: entry_of([b"a", b"b", b"c"], 0, tmp_path)})
    _, third = leader.next_fetch(soon_s)
    assert [(p.partition, p.fetch_offset) for p in third.partitions] == [(1, 3)]


def test_an_answer_that_does_not_match_its_fetch_is_dropped_and_fetched_again(follower):
    # Given a follower's fetch of three partitions
    srv, leader = follower
    envelope, request = first_fetch_of_all(leader)
    # When the answer says its partitions hold more entry bytes than it carries
    results = [protocol.ReplicaFetchPartitionResult(None, protocol.ReplicaFetchResult(3, 0, 3), 5)
               for _ in request.partitions]
    leader.sock.send_multipart([*envelope, protocol.encode_replica_fetch_all_reply(
        request.request_id, results), b"abc"])
    # Then nothing is stored, and every partition is asked again from offset 0 after a backoff
    _, again = leader.next_fetch()
    assert sorted((p.partition, p.fetch_offset) for p in again.partitions) == \
        [(n, 0) for n in PARTITIONS]
    assert [log_end(srv, n) for n in PARTITIONS] == [0, 0, 0]


@pytest.fixture
def follower_on_small_disk(tmp_path, monkeypatch):
    """Shard s1 following t-0 on the fake leader, its data dir a real 8 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    # (a check interval longer than the test: the answer must not be an estimate)
    monkeypatch.setattr(limits, "DISK_FREE_CHECK_INTERVAL_MS", 600_000)
    disk = tmp_path / "s1"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    leader = FakeLeader()
    srv = ShardServer("s1", disk, "127.0.0.1", produce_free_bytes_min=0)
    try:
        srv.start()
        srv.call(srv.set_peers, {"lead": leader.address, "s1": srv.address}, 1)
        srv.call(srv.open_partition, "t", 0, LogConfig(), 0, False, None, LEADERSHIP, 1, False)
        yield srv, leader, disk
    finally:
        srv.stop(5)
        leader.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_follower_whose_disk_has_no_room_for_a_fetch_says_so_before_any_append_fails(
        follower_on_small_disk):
    # Given a follower at its leader's log end on a disk with room (T-fd3's N3: a
    # leader moved off a full disk followed at once, from the log end)
    srv, leader, disk = follower_on_small_disk
    envelope, request = leader.next_fetch()
    assert [p.append_failed for p in request.partitions] == [False]
    # When another process fills the disk, and the leader answers with nothing new
    fill_file_system(disk)
    leader.answer(envelope, request, {})
    # Then the next fetch asks to be kept out of the in-sync set, no append having failed
    envelope, request = leader.next_fetch()
    assert [p.append_failed for p in request.partitions] == [True]
    # And once the file is deleted, the next fetch no longer does, though no entry came
    (disk / "filler").unlink()
    leader.answer(envelope, request, {})
    _, request = leader.next_fetch()
    assert [p.append_failed for p in request.partitions] == [False]


def test_a_follower_whose_fsync_fails_cuts_what_it_fetched_and_fetches_it_again(
        follower, monkeypatch, tmp_path):
    # Given a follower whose disk loses the writeback of its next fsync of a log
    # (shards/shard_server.py, _cut_after_failed_fsync)
    srv, leader = follower
    entries = entry_of([b"a", b"b", b"c"], 0, tmp_path)
    envelope, request = first_fetch_of_all(leader)
    fsync = LostWriteback(monkeypatch)
    fsync.armed = True
    # When the leader sends it entries for t-1, whose fsync then fails
    leader.answer(envelope, request, {1: entries})
    # Then it cuts them and asks for them again from offset 0, not from 3 (a log whose
    # copy at 0..2 the disk lost); and once they are stored, from 3
    envelope, again = next_fetch_of(leader, 1)
    assert [(p.partition, p.fetch_offset) for p in again.partitions if p.partition == 1] == [(1, 0)]
    leader.answer(envelope, again, {1: entries})
    _, last = next_fetch_of(leader, 1)
    assert [(p.partition, p.fetch_offset) for p in last.partitions if p.partition == 1] == [(1, 3)]


def next_fetch_of(leader: FakeLeader,
                  partition: int) -> tuple[list, protocol.ReplicaFetchAllRequest]:
    """The next fetch carrying ``partition``; those before it are answered with nothing
    new (the others' fetches go on while it waits for its entries to be durable)."""
    for _ in range(len(PARTITIONS) * 4):
        envelope, request = leader.next_fetch()
        if any(p.partition == partition for p in request.partitions):
            return envelope, request
        leader.answer(envelope, request, {})
    raise AssertionError(f"no fetch carried partition {partition}")


# --- The leader side -------------------------------------------------------------------

def fetch_all(sock, partitions: list[tuple[int, int, int]], *, wait_ms: int = 0,
              bytes_max: int = 1 << 20, replica_id: str = "s2") -> int:
    """Send a fetch of (partition, leader epoch, fetch offset) for ``replica_id``."""
    request_id = 5000 + len(partitions) * 7 + wait_ms
    sock.send_multipart([CLIENT, protocol.encode_replica_fetch_all(
        request_id, replica_id, 1, wait_ms, bytes_max,
        [protocol.ReplicaFetchPartition("t", p, epoch, offset, 1 if offset else -1, 1 << 20)
         for p, epoch, offset in partitions])])
    return request_id


def answer_of(sock, timeout_ms: int = int(WAIT_S * 1000)) -> tuple[protocol.ReplyView, bytes]:
    assert sock.poll(timeout_ms), f"no answer in {timeout_ms} ms"
    frames = sock.recv_multipart()
    return protocol.decode_reply(frames[1]), frames[2] if len(frames) > 2 else b""


def open_second_partition(c) -> None:
    """t-1 on every shard of the cluster, with t-0's leadership (s0 leads)."""
    for srv in c.servers.values():
        srv.call(srv.open_partition, "t", 1, c.log_config, 0, False, None,
                 c.controller.leadership, c.min_insync, False)


def test_a_fetch_of_all_answers_each_partition_as_a_fetch_of_its_own(cluster):
    # Given leader s0 of t-0 (offsets 0..2) and t-1 (empty), in leader epoch 1
    c = cluster(lag_time_max_ms=60_000)   # no in-sync change during the test
    open_second_partition(c)
    assert produce(c.router("s0"), [b"a", b"b", b"c"]).error is None
    sock = c.router("s0")
    # When s2 fetches t-0 from 0, t-1 in the old epoch 0, and t-9, which s0 does not lead
    fetch_all(sock, [(0, 1, 0), (1, 0, 0), (9, 1, 0)], wait_ms=5_000)
    reply, payload = answer_of(sock, 2_000)
    # Then it is answered at once: t-0 with its stored entries, t-1 fenced, t-9 not led
    first, fenced, not_led = reply.replica_fetch_all
    assert first.error is None and payload == c.log_bytes("s0")
    assert (first.entries_bytes, first.result.log_end_offset) == (len(payload), 3)
    assert first.result.epoch_starts == (protocol.EpochStart(1, 0),)
    assert isinstance(fenced.error, FencedLeaderEpochError) and fenced.entries_bytes == 0
    assert isinstance(not_led.error, NotLeaderError)
    # And a fetch of only a refused partition is not held either: its answer is due now
    # (from "s9", whose fetch no append here could wake)
    fetch_all(sock, [(9, 1, 0)], wait_ms=30_000, replica_id="s9")
    reply, _ = answer_of(sock, 2_000)
    assert isinstance(reply.replica_fetch_all[0].error, NotLeaderError)


def test_a_fetch_of_all_at_the_log_ends_is_held_until_one_partition_has_entries(cluster):
    # Given leader s0 of t-0 and t-1, both empty
    c = cluster(lag_time_max_ms=60_000)   # no in-sync change during the test
    open_second_partition(c)
    sock = c.router("s0")
    # When s2 fetches both at their ends with a long wait
    fetch_all(sock, [(0, 1, 0), (1, 1, 0)], wait_ms=30_000)
    # Then no answer comes while nothing is appended
    assert not sock.poll(300)
    # And when t-1 gets a record, the fetch is answered with it, t-0 with nothing
    router = c.router("s0")
    router.send_multipart([CLIENT, protocol.encode_produce(77, "t", 1, 1), batch_of([b"z"])])
    assert reply_of(router).error is None
    reply, payload = answer_of(sock)
    t0, t1 = reply.replica_fetch_all
    assert (t0.error, t0.entries_bytes, t0.result.log_end_offset) == (None, 0, 0)
    assert (t1.error, t1.result.log_end_offset) == (None, 1)
    assert t1.entries_bytes == len(payload) > 0


def test_an_answer_of_all_keeps_within_its_bytes_but_always_sends_one_entry(cluster):
    # Given leader s0 with entries in both t-0 and t-1
    c = cluster(lag_time_max_ms=60_000)   # no in-sync change during the test
    open_second_partition(c)
    router = c.router("s0")
    assert produce(router, [b"a" * 100]).error is None
    router.send_multipart([CLIENT, protocol.encode_produce(78, "t", 1, 1), batch_of([b"b" * 100])])
    assert reply_of(router).error is None
    sock = c.router("s0")
    fetch_all(sock, [(0, 1, 0), (1, 1, 0)])
    reply, payload = answer_of(sock)
    entry_bytes = [r.entries_bytes for r in reply.replica_fetch_all]
    assert sum(entry_bytes) == len(payload) and min(entry_bytes) > 1
    # When s2 fetches both with room for 1 byte of entries, and for the first entry and 1 byte
    for bytes_max in (1, entry_bytes[0] + 1):
        fetch_all(sock, [(0, 1, 0), (1, 1, 0)], bytes_max=bytes_max)
        reply, payload = answer_of(sock)
        # Then the first gets its one whole entry, the second none (its next fetch gets it)
        t0, t1 = reply.replica_fetch_all
        assert t0.entries_bytes == len(payload) == entry_bytes[0]
        assert (t1.error, t1.entries_bytes, t1.result.log_end_offset) == (None, 0, 1)


def test_a_fetch_of_more_partitions_than_allowed_is_refused_whole(cluster, monkeypatch):
    # Given a leader that takes at most 2 partitions per fetch
    c = cluster(lag_time_max_ms=60_000)   # no in-sync change during the test
    monkeypatch.setattr(limits, "REPLICA_FETCH_PARTITIONS_MAX", 2)
    sock = c.router("s0")
    # When a fetch names 3
    fetch_all(sock, [(0, 1, 0), (1, 1, 0), (2, 1, 0)])
    reply, _ = answer_of(sock)
    # Then it is refused, naming the count and the limit
    assert isinstance(reply.error, MalformedRequestError)
    assert "3 partitions" in reply.error.message and "REPLICA_FETCH_PARTITIONS_MAX" in \
        reply.error.message


def test_followers_of_two_partitions_keep_both_in_sync_with_one_fetch_per_leader(cluster):
    # Given a cluster whose leader s0 leads t-0 and t-1
    c = cluster(lag_time_max_ms=60_000)   # no in-sync change during the test
    open_second_partition(c)
    router = c.router("s0")
    # When acks="all" produces go to both
    assert produce(router, [b"a", b"b"]).error is None
    router.send_multipart([CLIENT, protocol.encode_produce(79, "t", 1, -1),
                           batch_of([b"c", b"d", b"e"])])
    assert reply_of(router).error is None
    # Then both followers hold both partitions and may serve them
    c.wait_converged(("s0", "s1", "s2"), 2)
    for shard_id in ("s1", "s2"):
        srv = c.servers[shard_id]
        c.wait_for(lambda: srv.call(srv.stats_snapshot)["replication"][("t", 1)]
                   ["high_watermark"] == 3, f"{shard_id} holds t-1 up to 3")


# --- The epochs sent with the entries ------------------------------------------------------

def test_a_follower_without_epochs_is_given_the_epoch_of_its_first_entry_starting_there():
    from plinth.shards.leader_epochs import NO_EPOCH, EpochEntry, LeaderEpochs
    from plinth.shards.replica_server import _epoch_starts
    from tests.client.scripted_broker import entry

    # Given a leader with epoch 0 from 4036 and epoch 1 from 6000, serving the entries
    # 13288..13290 and 13291 (epoch 2 starts there)
    epochs = LeaderEpochs([EpochEntry(0, 4036), EpochEntry(1, 6000), EpochEntry(2, 13291)])
    data = entry(13288, [b"a", b"b", b"c"]) + entry(13291, [b"d"])
    # When a follower that restarted empty at 13288 (no epoch) fetches them
    # Then it is told epoch 1 starts at 13288 for it, and epoch 2 where it starts
    assert _epoch_starts(epochs, 13288, data, NO_EPOCH) == (
        protocol.EpochStart(1, 13288), protocol.EpochStart(2, 13291))
    # And a follower that has epoch 1 is told only of epoch 2, as before
    assert _epoch_starts(epochs, 13288, data, 1) == (protocol.EpochStart(2, 13291),)
