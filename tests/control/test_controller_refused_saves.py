"""A change whose save of metadata.json the disk refuses (a full disk) did not happen:
the controller undoes it in memory too, so the running broker serves what its file
says, and what a restart would load. A leadership record (an election, an
in-sync change) the disk refuses to save is put back too, and reaches no replica. Real
in-process shards on a real disk, only the controller's write of metadata.json refused
(broker_without_ray.py)."""

from __future__ import annotations

import errno

import pytest

from plinth.control import metadata
from plinth.errors import StorageError
from plinth.shards.shard_handle import PartitionId
from tests.control.test_controller_replication import not_answering_once


@pytest.fixture
def full_metadata_disk(monkeypatch):
    """``refuse()`` makes every save of metadata.json fail with ENOSPC; ``free()`` ends it."""
    class Disk:
        def refuse(self):
            def no_space(path, data, **_):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            monkeypatch.setattr(metadata, "write_file_atomically", no_space)

        def free(self):
            monkeypatch.undo()
    return Disk()


def topic_names(broker) -> list[str]:
    return sorted(info.name for info in broker.controller.list_topics())


def test_a_delete_the_disk_refuses_to_save_leaves_the_topic_served_and_its_files(
        brokers, full_metadata_disk):
    # Given a topic with records, then a disk that refuses the metadata's save
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    broker.produce("orders", 0, [b"a", b"b"])
    full_metadata_disk.refuse()
    # When it is deleted / Then the delete fails naming the file
    with pytest.raises(StorageError, match=r"cannot save the broker metadata .*metadata.json: "
                                           r"No space left on device"):
        broker.controller.delete_topic("orders")
    # And the running broker still has the topic, its records and its files, and owes
    # no shard a delete of it (the refused delete was gone from memory before)
    assert topic_names(broker) == ["orders"]
    assert broker.produce("orders", 0, [b"c"]) == 2
    assert len(list((broker.data_dir / "shards").glob("*/orders-*"))) == 2
    assert broker.controller._metadata.deletes_owed == {}
    # And once the disk has room, a save of another change writes the topic too, and
    # a restart loads it
    full_metadata_disk.free()
    broker.controller.create_topic("audit", 1, {})
    assert sorted(broker.metadata_on_disk().topics) == ["audit", "orders"]
    assert topic_names(brokers(2)) == ["audit", "orders"]


def test_a_delete_retried_once_the_disk_has_room_deletes_the_topic_and_its_files(
        brokers, full_metadata_disk):
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    full_metadata_disk.refuse()
    with pytest.raises(StorageError):
        broker.controller.delete_topic("orders")
    full_metadata_disk.free()
    broker.controller.delete_topic("orders")
    assert topic_names(broker) == [] and broker.metadata_on_disk().topics == {}
    assert not list((broker.data_dir / "shards").glob("*/orders-*"))


def test_an_alter_the_disk_refuses_to_save_keeps_the_old_config(brokers, full_metadata_disk):
    broker = brokers(2)
    broker.controller.create_topic("orders", 1, {"retention.ms": "60000"})
    full_metadata_disk.refuse()
    with pytest.raises(StorageError, match="metadata.json"):
        broker.controller.alter_topic("orders", {"retention.ms": "1000"})
    info = broker.controller.describe_topic("orders")
    assert info.config["retention.ms"] == "60000"


def test_a_growth_the_disk_refuses_to_save_keeps_the_count_and_deletes_the_new_partitions(
        brokers, full_metadata_disk):
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    full_metadata_disk.refuse()
    with pytest.raises(StorageError, match="metadata.json"):
        broker.controller.add_partitions("orders", 4)
    assert broker.controller.describe_topic("orders").partitions == 2
    assert broker.controller.routing().partition_count("orders") == 2
    assert sorted(p.name for p in (broker.data_dir / "shards").glob("*/orders-*")) == [
        "orders-0", "orders-1"]
    full_metadata_disk.free()
    assert broker.controller.add_partitions("orders", 4).partitions == 4


def test_a_create_the_disk_refuses_to_save_leaves_no_topic_and_no_directory(
        brokers, full_metadata_disk):
    broker = brokers(2)
    full_metadata_disk.refuse()
    with pytest.raises(StorageError, match="metadata.json"):
        broker.controller.create_topic("orders", 3, {})
    assert topic_names(broker) == []
    assert not list((broker.data_dir / "shards").glob("*/orders-*"))
    assert all(broker.manifest(s).partition_counts == {} for s in ("shard-0", "shard-1"))
    # And the name is free: once the disk has room it is created
    full_metadata_disk.free()
    broker.controller.create_topic("orders", 3, {})
    assert topic_names(brokers(2)) == ["orders"]


# --- Leadership records (issue 12): a record not saved reaches no replica ---------------

def described(broker, topic: str, partition: int = 0) -> tuple[str, int, list[str]]:
    """(leader, leader epoch, in-sync replicas) as the running controller serves them."""
    info = broker.controller.describe_topic(topic).partition_info[partition]
    return info.shard, info.leader_epoch, list(info.in_sync_replicas)


def factor_3_topic_on_a_full_disk(brokers, full_metadata_disk):
    """A broker of 3 shards with a factor-3 topic t, whose disk then refuses saves;
    returns the broker and t-0's record as saved."""
    broker = brokers(3, allow_replicas_on_one_node=True)
    broker.controller.create_topic("t", 1, {}, 3)
    full_metadata_disk.refuse()
    return broker, broker.metadata_on_disk().topics["t"].leadership[0]


def test_an_election_the_disk_refuses_to_save_keeps_the_old_leader_and_tells_no_replica(
        brokers, full_metadata_disk):
    # Given a factor-3 topic whose leader stops answering, on a disk that refuses saves
    broker, before = factor_3_topic_on_a_full_disk(brokers, full_metadata_disk)
    not_answering_once(broker, before.leader)
    # When the controller checks the leaders / Then the election fails naming the file
    with pytest.raises(StorageError, match="metadata.json"):
        broker.controller.check_leaders()
    # And the running controller serves the record its file holds: a controller restarted
    # from the file would not elect from an in-sync set the replicas had already left
    assert broker.controller._metadata.topics["t"].leadership[0] == before
    assert described(broker, "t")[1:] == (before.leader_epoch, list(before.in_sync))
    for shard_id in before.replicas:
        assert broker.manifest(shard_id).partitions[PartitionId("t", 0)].leadership == before
    # And once the disk has room, the next check elects and saves the new leader
    full_metadata_disk.free()
    not_answering_once(broker, before.leader)
    assert broker.controller.check_leaders() == [(PartitionId("t", 0), before.replicas[1])]
    after = broker.metadata_on_disk().topics["t"].leadership[0]
    assert (after.leader, after.leader_epoch) == (before.replicas[1], before.leader_epoch + 1)
    assert described(broker, "t") == (after.leader, after.leader_epoch, list(after.in_sync))


def test_an_in_sync_change_the_disk_refuses_to_save_keeps_the_set_and_can_be_asked_again(
        brokers, full_metadata_disk):
    broker, record = factor_3_topic_on_a_full_disk(brokers, full_metadata_disk)

    def shrink():
        return broker.controller.alter_in_sync(record.leader, PartitionId("t", 0),
                                               record.leader_epoch, record.partition_epoch,
                                               record.replicas[:2])
    with pytest.raises(StorageError, match="metadata.json"):
        shrink()
    assert described(broker, "t")[2] == list(record.in_sync)
    # The leader asks again at the same epochs once the disk has room (a record bumped
    # in memory only would fence it for good)
    full_metadata_disk.free()
    changed = shrink()
    assert changed.in_sync == record.replicas[:2]
    assert broker.metadata_on_disk().topics["t"].leadership[0] == changed


def test_a_preferred_election_the_disk_refuses_to_save_fails_and_the_leader_takes_writes_again(
        brokers, full_metadata_disk):
    # Given a partition led by its second replica since a failover, its first back in sync
    from tests.control.test_controller_elect_leaders import (PREFERRED,
                                                             moved_off_its_preferred_leader)
    broker = brokers(3, allow_replicas_on_one_node=True)
    moved = moved_off_its_preferred_leader(broker)
    # When a preferred election is asked for on a disk that refuses the record's save
    full_metadata_disk.refuse()
    with pytest.raises(StorageError, match="metadata.json"):
        broker.controller.elect_leaders(PREFERRED, [("t", 0)])
    # Then the leader that handed the partition over leads on and takes writes again
    assert broker.controller._metadata.topics["t"].leadership[0] == moved
    assert broker.owner("t", 0) == moved.leader
    assert broker.produce("t", 0, [b"after"], acks=1) == 5
