"""A leader whose disk refuses writes hands its partitions to an in-sync replica with
room (control/disk_moves.py; the shard's nudge and the controller's
leader_disk_refused). Real shard actors reached in process on a real disk,
replicating over real sockets (broker_without_ray.py); each shard's disk says what a
test's numbers say (its reserve refuses as a full disk's would)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plinth import limits, protocol
from plinth.errors import StorageError
from plinth.shards.disk_reserve import DiskReserve
from tests.control.test_controller_repair import (CATCH_UP_WAIT_S, factor_3_topic_with_records,
                                                  record_now)
from tests.control.test_controller_replication import ON_ONE_NODE
from tests.shard_requests import fetch_values
from tests.support import wait_until

MiB = 1024 * 1024
RESERVE = 4 * MiB
ROOMY = 60 * MiB
TOO_LITTLE = RESERVE + limits.LEADER_MOVE_DISK_ROOM_BYTES_MIN - 1


class DiskOf(DiskReserve):
    """A shard's disk reserve on a file system with ``free_bytes`` free (a fake's
    numbers, for its checks and its stats alike)."""

    def __init__(self, directory: Path, free_bytes: int):
        super().__init__(directory, RESERVE, free_bytes=lambda: free_bytes)
        self.free_bytes = free_bytes

    def snapshot(self) -> dict[str, int]:
        return {"free_bytes": self.free_bytes, "total_bytes": 64 * MiB,
                "reserve_bytes": RESERVE}


def disk_of(broker, shard_id: str, free_bytes: int) -> None:
    """``shard_id``'s disk has ``free_bytes`` free from now on (its loop thread's)."""
    server = broker.shards.handles[shard_id].actor._server
    server.call(lambda: setattr(server, "disk_reserve", DiskOf(server.data_dir, free_bytes)))


def refused_and_told(broker, leader: str) -> tuple[str, str]:
    """A produce to t-0 is refused by its leader's disk; returns the nudge it sent the
    controller (held by the test's announcements, as it was on its way)."""
    with pytest.raises(StorageError, match="bytes free"):
        broker.produce("t", 0, [b"refused"], acks=-1)
    told = broker.shards.announce_to.disk_refused_from
    wait_until(lambda: len(told) >= 1, timeout_s=5)
    assert told[0][0] == leader
    return told[0]


def test_a_leader_whose_disk_refuses_writes_hands_over_to_an_in_sync_replica_with_room(
        brokers, caplog):
    # Given a factor-3 partition with acknowledged records, acks=1 ones included
    broker = brokers(3, **ON_ONE_NODE)
    before = factor_3_topic_with_records(broker)
    leader, second, third = before.replicas
    for n in range(5, 8):
        assert broker.produce("t", 0, [f"r{n}".encode()], acks=1) == n
    # And the leader's disk full, its second replica's with too little room beyond its
    # reserve, its third's with room
    disk_of(broker, leader, 0)
    disk_of(broker, second, TOO_LITTLE)
    disk_of(broker, third, ROOMY)
    nudge = refused_and_told(broker, leader)
    # When the leader's word reaches the controller
    with caplog.at_level("INFO", logger="plinth.control.controller"):
        broker.controller.leader_disk_refused(*nudge)
    # Then the third replica leads, in a new leader epoch, and the old leader leaves the
    # in-sync set at once: it cannot append what the new leader takes, and acks="all"
    # produces counting it would wait for it for the lag time, then be answered as
    # perhaps stored (tester T-fd2)
    after = record_now(broker)
    assert (after.leader, after.leader_epoch) == (third, before.leader_epoch + 1)
    assert after.in_sync == (second, third) and broker.owner("t", 0) == third
    # And it takes writes, and serves every acknowledged record, acks=1 ones included
    assert broker.produce("t", 0, [b"r8"], acks=-1) == 8
    assert fetch_values(broker.address(third), "t", 0, 0) == [f"r{n}".encode()
                                                              for n in range(9)]
    # And one WARNING names the partition, both shards, and the full disk's numbers
    moved = [r for r in caplog.records if r.getMessage().startswith("t-0: leader ")]
    assert [r.levelname for r in moved] == ["WARNING"]
    assert moved[0].getMessage().startswith(
        f"t-0: leader {leader} -> {third} (leader epoch {after.leader_epoch}): {leader}'s disk "
        f"refuses writes (0 bytes free, reserve {RESERVE}: t-0: ")
    # And the auto leader rebalance does not give it back to the full disk
    assert broker.controller.rebalance_leaders() == []
    assert record_now(broker).leader == third


def test_a_moved_partition_goes_back_by_a_preferred_election_once_the_disk_has_room(brokers):
    # Given a partition moved off its preferred leader for its full disk
    broker = brokers(3, **ON_ONE_NODE)
    before = factor_3_topic_with_records(broker)
    disk_of(broker, before.leader, 0)
    broker.controller.leader_disk_refused(*refused_and_told(broker, before.leader))
    assert record_now(broker).leader == before.replicas[1]
    # When its disk has room again and the operator asks for a preferred election
    disk_of(broker, before.leader, ROOMY)
    wait_until(lambda: broker.controller.check_leaders() == [] and
               before.leader in record_now(broker).in_sync, timeout_s=CATCH_UP_WAIT_S)
    [result] = broker.controller.elect_leaders(protocol.ELECTION_PREFERRED, [("t", 0)])
    # Then it leads again and takes writes
    assert (result.leader, result.error) == (before.leader, None)
    assert broker.produce("t", 0, [b"r5"], acks=-1) == 5


def test_a_leader_tells_the_controller_once_per_interval_however_many_produces_are_refused(
        brokers, monkeypatch):
    # Given a factor-3 partition whose leader's disk is full, and an interval between
    # nudges longer than the test
    monkeypatch.setattr(limits, "DISK_REFUSED_NUDGE_INTERVAL_MS", 600_000)
    broker = brokers(3, **ON_ONE_NODE)
    before = factor_3_topic_with_records(broker)
    disk_of(broker, before.leader, 0)
    # When producers retry many times within the interval
    refused_and_told(broker, before.leader)
    for _ in range(5):
        with pytest.raises(StorageError):
            broker.produce("t", 0, [b"again"], acks=1)
    in_sync_thread_done(broker, before.leader)   # where the nudges are sent from
    # Then the controller was told once
    assert len(broker.shards.announce_to.disk_refused_from) == 1


def in_sync_thread_done(broker, shard_id: str) -> None:
    """Wait until ``shard_id``'s in-sync thread has run what was given it so far (one
    thread: a task given it now runs after them)."""
    server = broker.shards.handles[shard_id].actor._server
    server._replication._in_sync_pool.submit(lambda: None).result(timeout=10)


def test_a_partition_no_in_sync_replica_with_room_may_take_stays_saying_why_once(
        brokers, caplog):
    # Given a factor-3 partition whose three disks are all full
    broker = brokers(3, **ON_ONE_NODE)
    before = factor_3_topic_with_records(broker)
    for shard_id in before.replicas:
        disk_of(broker, shard_id, 0)
    nudge = refused_and_told(broker, before.leader)
    # When the controller hears of it twice
    with caplog.at_level("INFO", logger="plinth.control.controller"):
        broker.controller.leader_disk_refused(*nudge)
        broker.controller.leader_disk_refused(*nudge)
    # Then the leader stays, and one WARNING says why of each other replica
    assert record_now(broker) == before
    stays = [r.getMessage() for r in caplog.records if "stay on it" in r.getMessage()]
    assert len(stays) == 1
    assert f"t-0: no other in-sync replica may lead it: {before.replicas[1]} has too little " \
           f"room (0 bytes free, reserve {RESERVE}); {before.replicas[2]} has too little " \
           f"room (0 bytes free, reserve {RESERVE})" in stays[0]


def test_a_partition_moved_off_a_full_disk_is_not_moved_back_onto_it_by_the_next_move(
        brokers):
    # Given a partition moved off its first replica's full disk to its second
    broker = brokers(3, **ON_ONE_NODE)
    before = factor_3_topic_with_records(broker)
    first, second, third = before.replicas
    disk_of(broker, first, 0)
    broker.controller.leader_disk_refused(*refused_and_told(broker, first))
    assert record_now(broker).leader == second
    # When the first's disk shows room again (another shard on its disk freed some) and
    # the second's disk refuses writes
    disk_of(broker, first, ROOMY)
    disk_of(broker, second, 0)
    broker.shards.announce_to.disk_refused_from.clear()
    broker.controller.leader_disk_refused(*refused_and_told(broker, second))
    # Then the third replica takes it, not the first, whose disk refused a write lately
    after = record_now(broker)
    assert (after.leader, after.leader_epoch) == (third, before.leader_epoch + 2)
    assert broker.produce("t", 0, [b"r5"], acks=1) == 5
