"""Rebalancer with replicated topics (issue 12): plinth shards add/remove move a factor-3
partition's writes to its new replica set without copying bytes; the sealed range stays
readable on each replica that held it whole; a crash between the steps is finished at the
next start; a seal that cannot finish gives the leader its writes back. Real shard actors
reached in process on a real disk (broker_without_ray.py), replicas on one node."""

from __future__ import annotations

import dataclasses

import pytest

from plinth import protocol
from plinth.control import placement
from plinth.control.routing_table import ReplicatedRange
from plinth.errors import InvalidConfigError, UnavailableError
from plinth.shards.shard_handle import PartitionId
from tests.control.broker_without_ray import THREE
from tests.control.test_controller_move_shard import named_nodes
from tests.control.test_metadata import metadata_with_a_replicated_topic
from tests.in_process_shards import ControllerCrash
from tests.shard_requests import fetch_values, produce
from tests.support import wait_until

FOUR = THREE + ["shard-3"]
ON_ONE_NODE = {"allow_replicas_on_one_node": True}


def replicas(topic: str, partition: int, shard_ids: list[str]) -> tuple[str, ...]:
    return placement.replicas_for(topic, partition, shard_ids, {}, 3, allow_same_node=True)


def topic_whose_replicas_move(partitions: int, before: list[str], after: list[str]) -> str:
    """A topic name some (not all) of whose partitions get another replica set."""
    for n in range(1000):
        moving = [replicas(f"r{n}", p, before) != replicas(f"r{n}", p, after)
                  for p in range(partitions)]
        if 1 <= sum(moving) < partitions:
            return f"r{n}"
    raise AssertionError("no topic name with some replica sets moving")


def size_bytes(broker, shard_id: str, topic: str, partition: int) -> int:
    [info] = broker.shards.handles[shard_id].partition_infos(
        [PartitionId(topic, partition)]).result()
    return info.size_bytes


def factor_3_topic_with_records(broker, partitions: int, before: list[str],
                                after: list[str]) -> tuple[str, list[int]]:
    """A factor-3 topic with records a, b, c (acks="all") in each partition, some of
    whose replica sets change from ``before`` to ``after``: (topic, moving partitions)."""
    topic = topic_whose_replicas_move(partitions, before, after)
    broker.controller.create_topic(topic, partitions, {}, 3)
    for p in range(partitions):
        assert broker.produce(topic, p, [b"a", b"b", b"c"], acks=-1) == 0
    moving = [p for p in range(partitions) if replicas(topic, p, before) != replicas(topic, p, after)]
    return topic, moving


def test_adding_a_shard_moves_a_factor_3_partitions_writes_to_its_new_replica_set_copying_nothing(
        brokers):
    # Given three shards and a factor-3 topic with three records per partition, some of
    # whose replica sets include a fourth shard once it exists
    broker = brokers(3, **ON_ONE_NODE)
    topic, moving = factor_3_topic_with_records(broker, 6, THREE, FOUR)
    sizes = {(s, p): size_bytes(broker, s, topic, p) for s in THREE for p in range(6)}
    # When a shard is added
    moves = broker.controller.add_shards(1)
    # Then exactly those partitions moved their writes, at offset 3, to their new leader
    assert moves == [protocol.PartitionMove(topic, p, replicas(topic, p, THREE)[0],
                                            replicas(topic, p, FOUR)[0], 3) for p in moving]
    metadata = broker.metadata_on_disk()
    routing = broker.controller.routing()
    for p in moving:
        old, new = replicas(topic, p, THREE), replicas(topic, p, FOUR)
        # And the history is (0, the three old replicas), (3, the new set), whose record
        # leads in the next leader epoch, every new replica in sync
        record = metadata.topics[topic].leadership[p]
        assert metadata.topics[topic].ranges[p] == [ReplicatedRange(0, old[0], old),
                                                    ReplicatedRange(3, new[0], new)]
        assert (record.replicas, record.leader, record.leader_epoch, record.in_sync) == \
            (new, new[0], 1, new)
        # And nothing was copied: the new shard holds no byte, the old ones what they held
        assert size_bytes(broker, "shard-3", topic, p) == 0
        assert all(size_bytes(broker, s, topic, p) == sizes[(s, p)] for s in old)
        # And every old replica serves the sealed offsets; routers try them in order
        assert routing.holders(topic, p, 2) == old and routing.holders(topic, p, 3) == (new[0],)
        for shard_id in old:
            assert fetch_values(broker.address(shard_id), topic, p, 0) == [b"a", b"b", b"c"]
        # And produce continues at 3 on the new leader, acknowledged by the new set
        assert broker.produce(topic, p, [b"d"], acks=-1) == 3
        assert fetch_values(broker.address(new[0]), topic, p, 3) == [b"d"]
        wait_until(lambda: fetch_values(broker.address("shard-3"), topic, p, 3) == [b"d"],
                   timeout_s=10)
    # And a partition whose replica set did not change kept its record and took no range
    still = next(p for p in range(6) if p not in moving)
    assert metadata.topics[topic].leadership[still].leader_epoch == 0
    assert still not in metadata.topics[topic].ranges


def test_the_old_replica_that_leaves_the_set_refuses_writes_and_serves_only_the_sealed_range(
        brokers):
    # Given a moved factor-3 partition, one of whose old replicas is not in its new set
    broker = brokers(3, **ON_ONE_NODE)
    topic, moving = factor_3_topic_with_records(broker, 6, THREE, FOUR)
    broker.controller.add_shards(1)
    p = moving[0]
    [left] = set(replicas(topic, p, THREE)) - set(replicas(topic, p, FOUR))
    # When a producer still writes to it, Then it refuses (retriable): the writes moved
    with pytest.raises(UnavailableError, match="moved away"):
        produce(broker.address(left), topic, p, [b"late"])
    # And it neither leads nor follows the partition any more; it is sealed in its
    # manifest without a record, so that a restart does not follow it again
    spec = broker.manifest(left).partitions[PartitionId(topic, p)]
    assert (spec.sealed, spec.leadership) == (True, None)
    stats = broker.shards.handles[left].stats().result()
    assert (topic, p) not in stats["replication"]


def test_removing_a_shard_moves_factor_3_partitions_off_it_and_it_retires_with_its_last_range(
        brokers):
    # Given four shards and a factor-3 topic with records, some of whose partitions
    # have a replica on the newest shard
    broker = brokers(4, **ON_ONE_NODE)
    topic, moving = factor_3_topic_with_records(broker, 6, FOUR, THREE)
    # When that shard is removed
    moves = broker.controller.remove_shards(1)
    # Then those partitions continue at 3 on the three shards left
    assert [m.partition for m in moves] == moving
    for p in moving:
        assert broker.produce(topic, p, [b"d"], acks=-1) == 3
        # And the removed shard still serves the sealed offsets (and nothing after), as
        # do the others (which continue their own logs after them)
        assert fetch_values(broker.address("shard-3"), topic, p, 1) == [b"b", b"c"]
        for shard_id in replicas(topic, p, FOUR):
            assert fetch_values(broker.address(shard_id), topic, p, 1)[:2] == [b"b", b"c"]
    metadata = broker.metadata_on_disk()
    assert (metadata.shards, metadata.draining) == (THREE, ["shard-3"])
    # And once the topic is deleted, the removed shard holds nothing and retires
    broker.controller.delete_topic(topic)
    assert broker.metadata_on_disk().draining == []
    assert "shard-3" not in broker.controller.routing().shard_addresses


def test_removing_shards_below_a_replicated_topics_factor_is_refused_naming_it(brokers):
    # Given three shards and a factor-3 topic
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("orders", 1, {}, 3)
    # When a shard is removed, Then it is refused, naming the topic, its factor and the room
    with pytest.raises(InvalidConfigError, match="topic 'orders' has replication factor 3, "
                                                 "and the 2 shards it leaves .* can hold 2 copies"):
        broker.controller.remove_shards(1)
    assert broker.metadata_on_disk().shards == THREE


def test_adding_shards_where_the_replicas_cannot_be_placed_is_refused_before_any_starts(brokers):
    # Given a factor-2 topic made while replicas could share the one node, and the
    # server started again without that
    brokers(2, **ON_ONE_NODE).controller.create_topic("orders", 2, {}, 2)
    broker = brokers(2)
    before = broker.metadata_on_disk()
    # When a shard is added, Then it is refused naming the topic, the room and the way
    # out, and no shard was started or saved: a later remove is not blocked by it
    with pytest.raises(InvalidConfigError, match=(
            r"cannot add 1 shard: topic 'orders' has replication factor 2, and the 3 shards "
            r"it leaves on 1 node\(s\) can hold 1 copies of a partition \(each on its own "
            r"node; a server started with --allow-replicas-on-one-node")):
        broker.controller.add_shards(1)
    after = broker.metadata_on_disk()
    assert (after.shards, after.shard_nodes) == (before.shards, before.shard_nodes)
    assert "shard-2" not in broker.shards.handles


def test_a_crash_after_sealing_before_the_new_set_opens_is_finished_at_the_next_start(brokers):
    # Given a factor-3 topic with records, some of whose replica sets will change
    broker = brokers(3, **ON_ONE_NODE)
    topic, moving = factor_3_topic_with_records(broker, 6, THREE, FOUR)
    # When the controller dies after sealing a partition on its old replicas, before
    # the new shard opens it
    broker.shards.when_started("shard-3", lambda new: new.crash_controller_at("open_partitions"))
    with pytest.raises(ControllerCrash):
        broker.controller.add_shards(1)
    assert broker.metadata_on_disk().topics[topic].ranges == {}
    # And the server starts again
    broker = brokers(3, **ON_ONE_NODE)
    # Then every moving partition continues at 3 on its new replica set, and its sealed
    # range is recorded and served by its old replicas
    metadata = broker.metadata_on_disk()
    for p in moving:
        old, new = replicas(topic, p, THREE), replicas(topic, p, FOUR)
        assert metadata.topics[topic].leadership[p].replicas == new
        assert metadata.topics[topic].ranges[p] == [ReplicatedRange(0, old[0], old),
                                                    ReplicatedRange(3, new[0], new)]
        assert all(fetch_values(broker.address(s), topic, p, 0) == [b"a", b"b", b"c"]
                   for s in old)
        assert broker.produce(topic, p, [b"d"], acks=-1) == 3


def test_a_move_whose_new_replica_does_not_open_gives_the_old_leader_its_writes_back(brokers):
    # Given a factor-3 topic with records, some of whose replica sets will include a new
    # shard, which fails to open the first of them
    broker = brokers(3, **ON_ONE_NODE)
    topic, moving = factor_3_topic_with_records(broker, 6, THREE, FOUR)
    p = moving[0]
    broker.shards.when_started("shard-3", lambda new: new.fail_next(
        "open_partitions", UnavailableError("shard-3: disk full")))
    # When a shard is added, Then the move fails, naming the partition and the shard
    with pytest.raises(UnavailableError, match=f"cannot move {topic}-{p} from .*: shard-3 did "
                                               f"not open it .*disk full"):
        broker.controller.add_shards(1)
    # And its old leader takes writes again, after its last record, as do its followers
    old = replicas(topic, p, THREE)
    assert broker.owner(topic, p) == old[0]
    assert broker.produce(topic, p, [b"d"], acks=-1) == 3
    assert broker.metadata_on_disk().topics[topic].leadership[p].replicas == old
    # And the next start finishes the move
    broker = brokers(3, **ON_ONE_NODE)
    assert broker.metadata_on_disk().topics[topic].leadership[p].replicas == \
        replicas(topic, p, FOUR)
    assert broker.produce(topic, p, [b"e"], acks=-1) == 4


def test_a_replica_set_placement_did_not_make_is_left_alone_by_adding_a_shard(brokers, tmp_path):
    # Given a factor-3 partition whose replica set was made by hand (not placement's)
    data_dir = tmp_path / "given"
    data_dir.mkdir()
    metadata_with_a_replicated_topic().save(data_dir / "metadata.json")
    by_hand = ("shard-1", "shard-0", "shard-2")
    assert replicas("events", 0, THREE) != by_hand != replicas("events", 0, FOUR)
    broker = brokers(3, data_dir=data_dir, **ON_ONE_NODE)
    # When a shard is added, Then the partition does not move: its set stays as made
    assert broker.controller.add_shards(1) == []
    assert broker.metadata_on_disk().topics["events"].leadership[0].replicas == by_hand


def test_offsets_of_a_moved_partition_are_answered_while_a_holder_of_its_sealed_range_is_down(
        brokers):
    # Given a factor-3 partition led by the newest of four shards, with records, and that
    # shard removed (its writes moved; it holds the sealed range first), and a record after
    broker = brokers(4, **ON_ONE_NODE)
    topic = next(f"o{n}" for n in range(1000) if replicas(f"o{n}", 0, FOUR)[0] == "shard-3")
    broker.controller.create_topic(topic, 1, {}, 3)
    assert broker.produce(topic, 0, [b"a", b"b", b"c"], acks=-1) == 0
    broker.controller.remove_shards(1)
    assert broker.produce(topic, 0, [b"d"], acks=-1) == 3
    # When the removed shard is down
    broker.shards.handles["shard-3"].stop()
    # Then the partition's offsets still span both ranges: the other holders answer
    info = broker.controller.partition_offsets(topic, 0)
    assert (info.start_offset, info.end_offset) == (0, 4)


def test_a_partition_whose_writes_moved_is_described_from_its_first_offset_with_every_ranges_bytes(
        brokers):
    # Given a factor-3 topic with three records per partition, some of whose partitions
    # move their writes to a new replica set when a shard is added
    broker = brokers(3, **ON_ONE_NODE)
    topic, moving = factor_3_topic_with_records(broker, 6, THREE, FOUR)
    before = {p: info for p, info in
              enumerate(broker.controller.describe_topic(topic).partition_info)}
    broker.controller.add_shards(1)
    for p in moving:
        assert broker.produce(topic, p, [b"d"], acks=-1) == 3
    # When the topic is described
    after = broker.controller.describe_topic(topic).partition_info
    # Then a moved partition starts at 0, where its sealed range does, not at 3, where
    # its new leader's range does, and ends after the new record; its bytes are the
    # sealed range's (one holder's) and then some
    for p in moving:
        info = after[p]
        assert (info.start_offset, info.end_offset, info.shard) == (
            0, 4, replicas(topic, p, FOUR)[0])
        assert info.size_bytes > before[p].size_bytes
    # And a partition that did not move is described as before
    still = next(p for p in range(6) if p not in moving)
    assert (after[still].start_offset, after[still].end_offset,
            after[still].size_bytes) == (0, 3, before[still].size_bytes)


def test_a_moved_partition_is_described_from_its_first_offset_while_a_holder_of_its_sealed_range_is_down(
        brokers):
    # Given a factor-3 topic with three records in partition 0, which moves its writes
    # to a new replica set led by the added shard, leaving out one of the sealed
    # range's holders (the new leader's log does not hold the sealed range)
    nodes = named_nodes("abcd")
    broker = brokers(3, nodes=nodes)
    topic = next(f"r{n}" for n in range(1000) if replicas(f"r{n}", 0, FOUR)[0] == "shard-3")
    broker.controller.create_topic(topic, 1, {}, 3)
    assert broker.produce(topic, 0, [b"a", b"b", b"c"], acks=-1) == 0
    before = broker.controller.describe_topic(topic).partition_info
    broker.controller.add_shards(1)
    p = 0
    [left_out] = set(replicas(topic, p, THREE)) - set(replicas(topic, p, FOUR))
    assert broker.metadata_on_disk().shard_nodes["shard-3"] == "plinth-node:d"
    # When that holder's node is lost (Ray lists it dead)
    lost = "abc"[THREE.index(left_out)]
    nodes["abc".index(lost)] = dataclasses.replace(nodes["abc".index(lost)], alive=False)
    broker.shards.handles[left_out].stop()
    # Then the partition is described from another holder of its sealed range: it starts
    # at 0, not at 3 where its new range does, with the sealed range's bytes
    info = broker.controller.describe_topic(topic).partition_info[p]
    assert (info.start_offset, info.end_offset) == (0, 3)
    assert info.size_bytes == before[0].size_bytes
