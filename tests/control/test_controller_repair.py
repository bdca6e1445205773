"""The controller and replicas that need repair (issue 12): a replica whose recovery cut
entries, or whose data directory was lost while it was down, is reported by its shard
when the controller reopens its partitions, leaves the in-sync set at once, is never
elected, and is repaired from its leader until the leader adds it back. Real shard
actors reached in process on a real disk, replicating over real sockets
(broker_without_ray.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from plinth.shards.shard_handle import PartitionId
from tests.control.test_controller_replication import ON_ONE_NODE, not_answering_once
from tests.shards.test_actor_repair import corrupt_last_entry
from tests.support import wait_until

PID = PartitionId("t", 0)
CATCH_UP_WAIT_S = 30


def factor_3_topic_with_records(broker, count: int = 5):
    """A factor-3 topic t with ``count`` records in partition 0, acknowledged by every
    replica (acks="all", all in sync); returns its record."""
    broker.controller.create_topic("t", 1, {}, 3)
    for n in range(count):
        assert broker.produce("t", 0, [f"r{n}".encode()], acks=-1) == n
    record = broker.metadata_on_disk().topics["t"].leadership[0]
    assert record.in_sync == record.replicas
    return record


def partition_dir(broker, shard_id: str) -> Path:
    return broker.shards.directory(shard_id) / "t-0"


def restart_announcing(broker, shard_id: str) -> None:
    """The shard's process starts again and announces itself (delivered after its
    constructor, as Ray does: see test_controller_replication.py)."""
    handle = broker.shards.handles[shard_id]
    handle.restart()
    broker.controller.shard_started(shard_id, handle.actor.address())


def record_now(broker):
    return broker.metadata_on_disk().topics["t"].leadership[0]


def test_a_follower_with_a_corrupted_tail_is_not_elected_when_the_leader_dies(brokers):
    # Given a factor-3 topic whose replicas all hold five acknowledged records, and a
    # follower listed before the other one
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    leader, corrupted, other = record.replicas
    # When the follower's last entry is corrupted while it is down, the leader's shard
    # dies, and the follower comes back (its recovery cuts the entry)
    broker.shards.handles[corrupted].stop()
    corrupt_last_entry(partition_dir(broker, corrupted))
    broker.shards.handles[leader].stop()
    restart_announcing(broker, corrupted)
    # Then it is out of the in-sync set at once, and the partition shows under-replicated
    assert corrupted not in record_now(broker).in_sync
    [state] = broker.controller.partition_replication()
    assert (state.replicas, state.in_sync, state.under_replicated) == (3, 2, True)
    # And when the controller replaces the dead leader, the other follower leads, not it
    assert broker.controller.check_leaders() == [(PID, other)]
    assert record_now(broker).in_sync == (other,)


def test_a_replica_that_needs_repair_and_led_leaves_the_lead_at_once(brokers):
    # Given a factor-3 topic, and its leader whose last entry is corrupted while down
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    leader = record.leader
    broker.shards.handles[leader].stop()
    corrupt_last_entry(partition_dir(broker, leader))
    # When it restarts before the controller noticed its loss
    restart_announcing(broker, leader)
    # Then an in-sync replica that holds everything leads, in a new leader epoch, and the
    # repaired one is a follower out of the in-sync set
    after = record_now(broker)
    assert after.leader in record.replicas[1:] and leader not in after.in_sync
    assert after.leader_epoch > record.leader_epoch
    # And every acknowledged record is still readable from the new leader
    assert broker.produce("t", 0, [b"next"], acks=-1) == 5


def test_a_replica_whose_data_directory_was_wiped_is_reopened_and_never_elected_empty(brokers):
    # Given a factor-3 topic whose replicas hold five acknowledged records
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    leader, wiped, other = record.replicas
    # When a follower's whole data directory is deleted while it is down, the leader
    # dies, and the follower comes back knowing nothing (no manifest)
    broker.shards.handles[wiped].stop()
    shutil.rmtree(broker.shards.directory(wiped))
    broker.shards.handles[leader].stop()
    restart_announcing(broker, wiped)
    # Then the controller opened the partition on it again (its manifest has it)
    assert PID in broker.manifest(wiped).partitions
    # And it is out of the in-sync set, and the other follower leads, not it
    assert wiped not in record_now(broker).in_sync
    assert broker.controller.check_leaders() == [(PID, other)]


def test_a_wiped_replica_is_rebuilt_from_its_leader_and_rejoins_the_in_sync_set(brokers):
    # Given a factor-3 topic whose replicas hold five acknowledged records, and a
    # follower whose data directory is deleted while it is down
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    wiped = record.replicas[1]
    broker.shards.handles[wiped].stop()
    shutil.rmtree(broker.shards.directory(wiped))
    # When it comes back
    restart_announcing(broker, wiped)
    # Then it fetches every record from the leader and the leader adds it back: two
    # changes of the record (out of the in-sync set, then back in)
    wait_until(lambda: wiped in record_now(broker).in_sync, timeout_s=CATCH_UP_WAIT_S)
    assert record_now(broker).partition_epoch >= record.partition_epoch + 2
    [info] = broker.shards.handles[wiped].actor.partition_infos([PID])
    assert info.end_offset == 5
    stats = broker.shards.handles[wiped].actor.stats()["replication"][("t", 0)]
    assert stats["needs_repair"] is False and stats["log_end_offset"] == 5
    # And being repaired, it may lead again: when the two others die, it is elected
    for shard_id in set(record.replicas) - {wiped}:
        not_answering_once(broker, shard_id)
    assert broker.controller.check_leaders() == [(PID, wiped)]


def test_a_leader_whose_disk_was_lost_while_the_broker_was_down_does_not_lead_empty(brokers):
    # Given a factor-3 topic whose replicas hold five acknowledged records
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    wiped = record.leader
    # When the whole broker stops, the leader's data directory is deleted, and the broker
    # starts again (the record still names it leader; it knows nothing, not even its
    # manifest)
    broker.shards.stop_all()
    shutil.rmtree(broker.shards.directory(wiped))
    broker = brokers(3, **ON_ONE_NODE)
    # Then it is out of the in-sync set and does not lead; once a leader is elected
    # among the others, every acknowledged record is there, and the wiped one rebuilds
    assert wiped not in record_now(broker).in_sync and record_now(broker).leader != wiped
    broker.controller.check_leaders()
    assert record_now(broker).leader in record.replicas[1:]
    assert broker.produce("t", 0, [b"next"], acks=-1) == 5
    wait_until(lambda: wiped in record_now(broker).in_sync, timeout_s=CATCH_UP_WAIT_S)


def test_a_restarted_leader_that_cannot_say_how_it_found_its_partitions_is_not_reelected(
        brokers):
    # Given a factor-3 topic whose leader's last entry is corrupted while it is down
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    leader = record.leader
    broker.shards.handles[leader].stop()
    corrupt_last_entry(partition_dir(broker, leader))
    # When it restarts and announces itself, but does not answer the controller's open
    # (in process, calls during its constructor fail, as to an actor still starting)
    broker.shards.handles[leader].restart()
    # Then the controller did not elect it again (it may need repair): the next in-sync
    # replica leads, in a newer leader epoch
    after = record_now(broker)
    assert after.leader == record.replicas[1] and after.leader_epoch > record.leader_epoch
