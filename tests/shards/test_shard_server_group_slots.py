"""Replicated consumer groups in ShardServer (shards/group_requests.py's slots): three real
ShardServers on 127.0.0.1 with real disks, one slot (partition 0 of the internal topic
__consumer_offsets) replicated on all three, no Ray.

The test plays the controller, as tests/shards/test_shard_server_replication.py does: it
sends the peers' addresses and the slot's leadership records, and answers in-sync changes
with a compare-and-set. A DEALER plays the router: [client id][Request][client key] out,
[client id][Reply] back.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack

import pytest
import zmq

from plinth import protocol, topics
from plinth.errors import (NotEnoughReplicasError, NotLeaderError,
                           UnavailableError, UnknownMemberIdError)
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.shard_calls import PartitionId
from plinth.shards.shard_server import ShardServer
from tests.shards.test_shard_server_replication import Cluster

CLIENT = b"client-1"
SLOT = PartitionId(topics.OFFSETS_TOPIC, 0)
SLOT_DIR = f"{topics.OFFSETS_TOPIC}-0"
COUNTS = {topics.OFFSETS_TOPIC: 1, "t": 2}
LOG_CONFIG = LogConfig(retention_ms=-1, retention_bytes=-1)
WAIT_S = 10.0
GROUP = "g"


class Slots(Cluster):
    """Shards s0 (the slot's first leader), s1 and s2 on the slot (the replication
    tests' three shards, on partition 0 of the internal topic), which know the
    partition counts unless told otherwise."""

    PARTITION = SLOT

    def __init__(self, tmp_path, stack: ExitStack, lag_time_max_ms: int):
        super().__init__(tmp_path, stack, lag_time_max_ms=lag_time_max_ms, log_config=LOG_CONFIG)

    def start(self, shard_id: str, restarted: bool = False, counts: bool = True) -> ShardServer:
        srv = super().start(shard_id, restarted=restarted)
        if counts:
            srv.call(srv.set_partition_counts, COUNTS)
        return srv

    def elect(self, leader: str, in_sync: tuple[str, ...]) -> None:
        """A new leader epoch led by ``leader``, pushed to every running replica."""
        self.push_leadership(self.controller.elect(leader, in_sync), tuple(self.servers))


@pytest.fixture
def slots(tmp_path):
    with ExitStack() as stack:
        made = []

        def make(lag_time_max_ms: int = 60_000) -> Slots:
            made.append(Slots(tmp_path, stack, lag_time_max_ms))
            return made[0]
        yield make
        for s in made:
            for shard_id in list(s.servers):
                s.stop(shard_id)


_request_ids = iter(range(1, 1 << 30))


def send(sock, header: bytes) -> None:
    sock.send_multipart([CLIENT, header, b""])   # the router's client key frame: none


def reply_of(sock, timeout_ms: int = int(WAIT_S * 1000)) -> protocol.ReplyView:
    assert sock.poll(timeout_ms), f"no reply in {timeout_ms} ms"
    return protocol.decode_reply(sock.recv_multipart()[1])


def join(sock, member_id: str = "", epoch: int = 0) -> protocol.ReplyView:
    send(sock, protocol.encode_group_heartbeat(next(_request_ids), GROUP, member_id, epoch,
                                               ["t"], set(), 3000, ""))
    return reply_of(sock)


def send_commit(sock, member_id: str, epoch: int, offsets: dict) -> None:
    send(sock, protocol.encode_commit_offsets(next(_request_ids), "commitOffsets", GROUP,
                                              member_id, epoch, offsets))


def committed(sock) -> protocol.ReplyView:
    send(sock, protocol.encode_group_request(next(_request_ids), "fetchOffsets", GROUP))
    return reply_of(sock)


def member_of(sock) -> tuple[str, int]:
    heartbeat = join(sock).heartbeat
    return heartbeat.member_id, heartbeat.member_epoch


def test_a_commit_acknowledged_by_the_slot_leader_is_answered_by_the_next_leader(slots):
    # Given a group member at s0, the leader of the group's slot
    s = slots()
    router = s.router("s0")
    member_id, epoch = member_of(router)
    # When it commits, twice
    send_commit(router, member_id, epoch, {("t", 0): 5, ("t", 1): 7})
    assert reply_of(router).error is None
    send_commit(router, member_id, epoch, {("t", 0): 9})
    assert reply_of(router).error is None
    # And s0 is lost and s1 elected in a new leader epoch
    s.stop("s0")
    s.elect("s1", ("s1", "s2"))
    # Then s1 answers the group's committed offsets: both commits
    at_s1 = s.router("s1")
    assert committed(at_s1).committed == {("t", 0): 9, ("t", 1): 7}
    # And the member is not known there: it rejoins (membership is soft state)
    send(at_s1, protocol.encode_group_heartbeat(next(_request_ids), GROUP, member_id, epoch,
                                                ["t"], set(), 3000, ""))
    assert isinstance(reply_of(at_s1).error, UnknownMemberIdError)
    assert join(at_s1).heartbeat.assignment == {("t", 0), ("t", 1)}


def test_the_slot_leader_lists_the_group_with_its_state_and_the_next_leader_from_its_offsets(
        slots):
    # Given a group member at s0, the leader of the group's slot, which committed
    s = slots()
    router = s.router("s0")
    member_id, epoch = member_of(router)
    send_commit(router, member_id, epoch, {("t", 0): 5})
    assert reply_of(router).error is None
    # Then s0 lists the group Stable, and its followers do not list it
    listings = {shard_id: srv.call(srv.group_listings) for shard_id, srv in s.servers.items()}
    assert listings == {"s0": [protocol.GroupListing(GROUP, "Stable")], "s1": [], "s2": []}
    # When s0 is lost and s1 elected / Then s1 lists it Empty: its offsets, no member
    s.stop("s0")
    s.elect("s1", ("s1", "s2"))
    s1 = s.servers["s1"]
    assert s1.call(s1.group_listings) == [protocol.GroupListing(GROUP, "Empty")]


def test_a_commit_is_answered_only_once_the_in_sync_followers_hold_it(slots):
    # Given a slot whose followers are stopped but still in sync (a long lag time)
    s = slots()
    router = s.router("s0")
    member_id, epoch = member_of(router)
    s.stop("s1")
    s.stop("s2")
    # When the member commits
    send_commit(router, member_id, epoch, {("t", 0): 3})
    # Then no answer comes while no follower holds the commit, nor to a read of the offsets
    assert not router.poll(1000)
    assert s.replication("s0")["high_watermark"] < s.replication("s0")["log_end_offset"]
    # And once both followers are back and fetch it, the commit is acknowledged
    s.start("s1")
    s.start("s2")
    assert reply_of(router).error is None
    assert committed(router).committed == {("t", 0): 3}
    # And the shard's group latency counts the held commit as what it waited, over a
    # second, beside the join's and the read's answered at once
    leader = s.servers["s0"]
    stats = leader.call(leader.stats_snapshot)
    counts, bounds = stats["latency_counts"]["group"], stats["latency_buckets_s"]
    assert sum(counts) >= 3
    assert sum(c for c, bound in zip(counts, bounds) if bound >= 1.0) >= 1


def test_deleted_offsets_are_answered_once_followers_hold_it_and_stay_deleted_at_the_next_leader(
        slots):
    # Given a group that committed offsets of both partitions at s0, then left
    s = slots()
    router = s.router("s0")
    member_id, epoch = member_of(router)
    send_commit(router, member_id, epoch, {("t", 0): 5, ("t", 1): 7})
    assert reply_of(router).error is None
    send(router, protocol.encode_group_heartbeat(next(_request_ids), GROUP, member_id, -1,
                                                 ["t"], set(), 3000, ""))
    assert reply_of(router).error is None
    # When its offset of t-0 is deleted while the followers are stopped (still in sync)
    s.stop("s1")
    s.stop("s2")
    send(router, protocol.encode_delete_offsets(next(_request_ids), GROUP, {("t", 0)}))
    # Then no answer comes until they hold the deletion, as a commit's
    assert not router.poll(1000)
    s.start("s1")
    s.start("s2")
    assert reply_of(router).offset_deletions == [protocol.OffsetDeletion("t", 0, None)]
    # And after s0 is lost, s1 leads the slot without that offset
    s.stop("s0")
    s.elect("s1", ("s1", "s2"))
    assert committed(s.router("s1")).committed == {("t", 1): 7}


def test_a_shard_that_does_not_lead_the_groups_slot_answers_not_leader(slots):
    # Given s1, a follower of the group's slot
    s = slots()
    # When a group request reaches it
    reply = committed(s.router("s1"))
    # Then it answers notLeader, naming the slot (the router refreshes, the client retries)
    assert isinstance(reply.error, NotLeaderError)
    assert f"{topics.OFFSETS_TOPIC}-0" in reply.error.message


def test_a_leader_deposed_with_commits_waiting_answers_them_not_leader(slots):
    # Given a commit waiting at s0 for its stopped (in-sync) followers
    s = slots()
    router = s.router("s0")
    member_id, epoch = member_of(router)
    s.stop("s2")
    s.stop("s1")
    send_commit(router, member_id, epoch, {("t", 0): 4})
    assert not router.poll(300)
    # When the controller elects s1 (it restarts) and tells s0
    s.start("s1")
    s.elect("s1", ("s1",))
    # Then s0 answers the waiting commit notLeader: it was never acknowledged
    reply = reply_of(router)
    assert isinstance(reply.error, NotLeaderError)
    # And s0 no longer coordinates the group
    assert isinstance(committed(router).error, NotLeaderError)


def test_with_too_few_replicas_in_sync_a_commit_is_refused_at_once(slots):
    # Given followers stopped long enough to leave the in-sync set (min.insync.replicas 2)
    s = slots(lag_time_max_ms=300)
    router = s.router("s0")
    member_id, epoch = member_of(router)
    s.stop("s1")
    s.stop("s2")
    s.wait_for(lambda: s.replication("s0")["in_sync"] == ["s0"], "the followers leave")
    # When the member commits
    send_commit(router, member_id, epoch, {("t", 0): 1})
    # Then it is refused at once, naming the slot and the minimum
    reply = reply_of(router, 2000)
    assert isinstance(reply.error, NotEnoughReplicasError)
    assert topics.OFFSETS_TOPIC in reply.error.message


def test_a_replica_whose_slot_log_tail_is_corrupt_catches_up_and_leads_with_every_commit(slots):
    # Given two acknowledged commits, held by every replica
    s = slots()
    router = s.router("s0")
    member_id, epoch = member_of(router)
    for offset in (11, 12):
        send_commit(router, member_id, epoch, {("t", 0): offset})
        assert reply_of(router).error is None
    end_offset = s.replication("s0")["log_end_offset"]
    s.wait_for(lambda: all(s.replication(r)["high_watermark"] == end_offset for r in s.ids),
               "every replica holds both commits")
    # When s1 stops, the last commit's bytes in its slot log rot, and it restarts
    s.stop("s1")
    (segment,) = (s.tmp_path / "s1" / SLOT_DIR).glob("*.log")
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    copy = shutil.copytree(segment.parent, s.tmp_path / "copy")
    recovered = PartitionLog.open(copy, LOG_CONFIG)
    assert recovered.end_offset < end_offset   # recovery cuts the bad commit
    recovered.close()
    s.start("s1", restarted=True)
    # Then it fetches the cut commit again from the leader
    s.wait_for(lambda: s.replication("s1")["log_end_offset"] == end_offset, "s1 catches up")
    # And led by s1 after s0's loss, the group has the last commit
    s.stop("s0")
    s.elect("s1", ("s1", "s2"))
    assert committed(s.router("s1")).committed == {("t", 0): 12}


def test_a_restarted_shard_never_answers_a_group_from_its_own_store_before_it_knows_the_slots(
        slots):
    # Given s0, which led the group's slot and took a commit there, restarted, its
    # partitions reopened but the controller's partition counts not arrived yet
    s = slots()
    router = s.router("s0")
    member_id, epoch = member_of(router)
    send_commit(router, member_id, epoch, {("t", 0): 6})
    assert reply_of(router).error is None
    s.stop("s0")
    s.start("s0", restarted=True, counts=False)
    # When a router's queued group requests reach it
    router = s.router("s0")
    reply = committed(router)
    join_reply = join(router)
    # Then they are answered unavailable (retriable), never from its own, empty, store
    assert isinstance(reply.error, UnavailableError) and "slots" in reply.error.message
    assert isinstance(join_reply.error, UnavailableError)
