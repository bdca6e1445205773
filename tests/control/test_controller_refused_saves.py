"""A change whose save of metadata.json the disk refuses (a full disk) did not happen:
the controller undoes it in memory too, so the running broker serves what its file
says, and what a restart would load. Real in-process shards on a real disk, only the
controller's write of metadata.json refused (broker_without_ray.py)."""

from __future__ import annotations

import errno

import pytest

from plinth.control import metadata
from plinth.errors import StorageError


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
