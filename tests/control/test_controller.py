"""The controller without Ray: real shard actors reached in process (tests/in_process_shards.py),
its metadata on a real disk. A restart of the server is a new Controller on the same data
dir with new shard actors on the same shard directories, as after a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import ray.exceptions

from plinth import protocol
from plinth.control import placement
from plinth.control.controller import Controller
from plinth.control.metadata import BrokerMetadata
from plinth.control.nodes import Node
from plinth.errors import (InvalidConfigError, TopicExistsError, UnavailableError,
                           UnknownTopicError)
from plinth.shards.shard_manifest import ShardManifest
from tests.in_process_shards import ONE_NODE, ControllerCrash, InProcessShards
from tests.shard_requests import commit_offsets, committed_offsets, produce
from tests.support import wait_until

TWO = ["shard-0", "shard-1"]
THREE = ["shard-0", "shard-1", "shard-2"]
MAIN_DATA_DIR = Path(__file__).parent / "data" / "main-fb38567"


class Broker:
    """A controller and its in-process shards on ``data_dir``."""

    def __init__(self, data_dir: Path, shard_count: int | None, nodes: list[Node]):
        self.data_dir = data_dir
        self.shards = InProcessShards()
        self.controller = Controller(str(data_dir), shard_count, start_shard=self.shards.start_shard,
                                     nodes=lambda: nodes)
        self.shards.announce_to = self.controller

    def address(self, shard_id: str) -> str:
        return self.controller.routing().shard_addresses[shard_id]

    def owner(self, topic: str, partition: int) -> str:
        return self.controller.routing().owner(topic, partition)

    def produce(self, topic: str, partition: int, values: list[bytes]) -> int:
        return produce(self.address(self.owner(topic, partition)), topic, partition, values)

    def metadata_on_disk(self) -> BrokerMetadata:
        return BrokerMetadata.load(self.data_dir / "metadata.json")

    def manifest(self, shard_id: str) -> ShardManifest:
        return ShardManifest.load(self.data_dir / "shards" / shard_id / "manifest.json")


@pytest.fixture
def brokers(tmp_path):
    """``brokers(shard_count)`` starts a Broker on tmp_path/data (again: a restart,
    after the previous one's shards stopped); every shard is stopped at the end."""
    made: list[Broker] = []

    def start(shard_count: int | None = 2, nodes: list[Node] = ONE_NODE,
              data_dir: Path | None = None) -> Broker:
        for broker in made:   # a restart: the old shard processes are gone
            broker.shards.stop_all()
        broker = Broker(data_dir or tmp_path / "data", shard_count, nodes)
        made.append(broker)
        broker.controller.start()
        return broker

    yield start
    for broker in made:
        broker.shards.stop_all()


def topic_that_moves(partitions: int, before: list[str], after: list[str],
                     moving_min: int = 1) -> str:
    """A topic name some of whose partitions (at least ``moving_min``) move, not all."""
    for n in range(1000):
        moving = [placement.shard_for(f"t{n}", p, before) != placement.shard_for(f"t{n}", p, after)
                  for p in range(partitions)]
        if moving_min <= sum(moving) < partitions:
            return f"t{n}"
    raise AssertionError("no topic name with some partitions moving")


def group_that_moves(before: list[str], after: list[str]) -> str:
    return next(f"g{n}" for n in range(1000)
                if placement.shard_for_group(f"g{n}", before) != placement.shard_for_group(f"g{n}", after))


# --- Topics -----------------------------------------------------------------------------

def test_a_created_topic_is_placed_by_rendezvous_hashing_opened_on_its_shards_and_saved(brokers):
    # Given a broker with two shards
    broker = brokers(2)
    # When a topic with 8 partitions is created
    info = broker.controller.create_topic("orders", 8, {"retention.ms": "1000"})
    # Then each partition is owned by its rendezvous shard, which serves it with the config
    owners = placement.place_topic("orders", 8, TWO)
    assert list(broker.controller.routing().owners["orders"]) == owners
    for shard_id in TWO:
        manifest = broker.manifest(shard_id)
        assert sorted(pid.partition for pid in manifest.partitions) == \
            [p for p in range(8) if owners[p] == shard_id]
        assert all(spec.config["retention.ms"] == "1000" for spec in manifest.partitions.values())
        assert manifest.partition_counts == {"orders": 8}
    # And the topic is in the metadata on disk, and takes writes
    assert broker.metadata_on_disk().topics["orders"].placement == owners
    assert info.config["retention.ms"] == "1000" and info.partitions == 8
    assert broker.produce("orders", 5, [b"a", b"b"]) == 0


def test_a_topic_a_shard_fails_to_open_is_not_created(brokers):
    # Given a shard that is down for its next call
    broker = brokers(2)
    broker.shards.handles["shard-1"].fail_next("open_partitions", ray.exceptions.ActorDiedError())
    # When a topic with partitions on both shards is created, Then it fails
    with pytest.raises(UnavailableError, match="shard-1 is down"):
        broker.controller.create_topic("orders", 8, {})
    # And the topic exists nowhere: not listed, not on disk
    assert broker.controller.list_topics() == []
    assert "orders" not in broker.metadata_on_disk().topics
    # And once the shard is back it can be created, once
    assert broker.controller.create_topic("orders", 8, {}).partitions == 8
    with pytest.raises(TopicExistsError, match="topic 'orders' already exists"):
        broker.controller.create_topic("orders", 8, {})


def test_an_altered_config_reaches_every_shard_that_holds_a_range_of_the_topic(brokers):
    # Given a topic one of whose partitions moved to a third shard
    broker = brokers(2)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    moves = broker.controller.add_shards(1)
    # When its retention is changed
    broker.controller.alter_topic(topic, {"retention.ms": "5000"})
    # Then every shard serving any range of it, sealed or not, has the new config
    holders = {m.from_shard for m in moves} | {m.to_shard for m in moves}
    for shard_id in holders:
        specs = [s for s in broker.manifest(shard_id).partitions.values() if s.topic == topic]
        assert specs and all(s.config["retention.ms"] == "5000" for s in specs)
    assert broker.metadata_on_disk().topics[topic].config["retention.ms"] == "5000"


def test_a_deleted_topic_is_forgotten_first_and_its_logs_deleted_on_every_shard(brokers):
    # Given a topic with records on both shards
    broker = brokers(2)
    broker.controller.create_topic("orders", 8, {})
    for partition in range(8):
        broker.produce("orders", partition, [b"x"])
    # When it is deleted
    broker.controller.delete_topic("orders")
    # Then it is gone from the metadata, from every manifest and from disk
    assert broker.metadata_on_disk().topics == {}
    for shard_id in TWO:
        assert broker.manifest(shard_id).partitions == {}
        assert list((broker.data_dir / "shards" / shard_id).glob("orders-*")) == []
    with pytest.raises(UnknownTopicError):
        broker.controller.describe_topic("orders")


# --- Shards on nodes --------------------------------------------------------------------

def test_new_shards_go_to_the_alive_node_with_the_fewest_and_stay_pinned_there(brokers):
    # Given two alive nodes and a dead one, and a broker of three shards
    nodes = [Node("a", "10.0.0.1", True, "plinth-node:a"), Node("b", "10.0.0.2", True, "plinth-node:b"),
             Node("c", "10.0.0.3", False, "node:10.0.0.3")]
    broker = brokers(3, nodes)
    pins = {s: h.options.node_resource for s, h in broker.shards.handles.items()}
    assert pins == {"shard-0": "plinth-node:a", "shard-1": "plinth-node:b",
                    "shard-2": "plinth-node:a"}
    # When a shard is added
    broker.controller.add_shards(1)
    # Then it goes to node b (fewer shards), never to the dead node, and the pins are kept
    assert broker.shards.handles["shard-3"].options.node_resource == "plinth-node:b"
    assert broker.metadata_on_disk().shard_nodes == {**pins, "shard-3": "plinth-node:b"}
    # And the status lists the nodes as given
    assert broker.controller.status().nodes == [("a", "10.0.0.1", True), ("b", "10.0.0.2", True),
                                                ("c", "10.0.0.3", False)]


def test_a_restarted_shard_announces_its_new_address_and_the_routing_table_follows(brokers):
    # Given a running broker
    broker = brokers(2)
    old = broker.address("shard-0")
    # When Ray restarts a shard actor (a new process, a new port)
    broker.shards.handles["shard-0"].restart()
    # Then the routing table has the address it announced
    new = broker.address("shard-0")
    assert new != old and new == broker.shards.handles["shard-0"].actor.address()


def test_a_restart_keeps_the_shard_count_changed_since_the_command_line(brokers):
    # Given a broker started with 2 shards that grew to 3
    brokers(2).controller.add_shards(1)
    # When it restarts with --shards 2
    broker = brokers(2)
    # Then it runs three shards
    assert broker.controller.routing().shard_ids == tuple(THREE)


def test_a_shard_count_out_of_range_is_refused(tmp_path):
    with pytest.raises(InvalidConfigError, match="--shards 0 is outside 1..256"):
        Controller(str(tmp_path), 0, start_shard=InProcessShards().start_shard, nodes=lambda: ONE_NODE)


# --- Adding and removing shards ------------------------------------------------------------

def test_adding_a_shard_moves_writes_at_the_end_offset_without_copying_records(brokers):
    # Given a topic with three records in each of its 8 partitions
    broker = brokers(2)
    topic = topic_that_moves(8, TWO, THREE)
    broker.controller.create_topic(topic, 8, {})
    for partition in range(8):
        broker.produce(topic, partition, [b"a", b"b", b"c"])
    # When a shard is added
    moves = broker.controller.add_shards(1)
    # Then exactly the partitions the new shard wins move to it, at offset 3
    after = placement.place_topic(topic, 8, THREE)
    assert moves == [protocol.PartitionMove(topic, p, placement.shard_for(topic, p, TWO), "shard-2", 3)
                     for p in range(8) if after[p] == "shard-2"]
    routing = broker.controller.routing()
    for move in moves:
        # And the old owner keeps offsets 0..2 for reads and refuses writes
        assert routing.holder(topic, move.partition, 2) == move.from_shard
        with pytest.raises(UnavailableError, match="moved away"):
            produce(broker.address(move.from_shard), topic, move.partition, [b"late"])
        # And the new owner continues at 3
        assert routing.owner(topic, move.partition) == "shard-2"
        assert broker.produce(topic, move.partition, [b"d"]) == 3
    assert broker.metadata_on_disk().topics[topic].ranges == {
        m.partition: [(0, m.from_shard), (3, "shard-2")] for m in moves}
    # And describe merges both ranges of a moved partition
    merged = broker.controller.describe_topic(topic).partition_info[moves[0].partition]
    assert (merged.shard, merged.start_offset, merged.end_offset) == ("shard-2", 0, 4)


def test_adding_a_shard_moves_the_groups_that_now_hash_to_it_with_their_offsets(brokers):
    # Given a group with committed offsets on its coordinator
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    group = group_that_moves(TWO, THREE)
    old = placement.shard_for_group(group, TWO)
    commit_offsets(broker.address(old), group, {("orders", 0): 7})
    # When a shard is added that the group's name now hashes to
    broker.controller.add_shards(1)
    # Then the new coordinator has it with its offsets, and the old one lists it no more
    new = placement.shard_for_group(group, THREE)
    assert committed_offsets(broker.address(new), group) == {("orders", 0): 7}
    assert group not in broker.shards.handles[old].group_names().result()
    assert broker.controller.list_groups() == [group]
    assert broker.metadata_on_disk().groups_moving_from is None


def test_a_group_move_that_fails_half_way_is_undone_and_the_shards_are_unchanged(brokers):
    # Given a group whose name would hash to a third shard, which fails to adopt it
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    group = group_that_moves(TWO, THREE)
    old = placement.shard_for_group(group, TWO)
    commit_offsets(broker.address(old), group, {("orders", 1): 4})
    broker.shards.when_started("shard-2", lambda new: new.fail_next(
        "adopt_groups", UnavailableError("shard-2: disk full")))
    # When a shard is added, Then the command fails
    with pytest.raises(UnavailableError, match="disk full"):
        broker.controller.add_shards(1)
    # And the group is back on its old coordinator with its offsets
    assert committed_offsets(broker.address(old), group) == {("orders", 1): 4}
    # And the broker still has its two shards, no move pending, no partition moved
    metadata = broker.metadata_on_disk()
    assert (metadata.shards, metadata.groups_moving_from) == (TWO, None)
    assert broker.controller.routing().shard_ids == tuple(TWO)
    assert list(broker.controller.routing().owners["orders"]) == placement.place_topic("orders", 2, TWO)


def test_a_partition_move_that_fails_half_way_keeps_the_earlier_moves_and_a_restart_finishes_it(brokers):
    # Given a topic with records, two of whose partitions will move to a new shard
    broker = brokers(2)
    topic = topic_that_moves(8, TWO, THREE, moving_min=2)
    broker.controller.create_topic(topic, 8, {})
    for partition in range(8):
        broker.produce(topic, partition, [b"a", b"b"])
    moving = [p for p in range(8) if placement.shard_for(topic, p, THREE) == "shard-2"]
    broker.shards.when_started("shard-2", lambda new: new.fail_next(
        "open_partitions", ray.exceptions.ActorDiedError(), after_calls=1))
    # When the new shard dies while the second partition moves to it
    with pytest.raises(UnavailableError, match=f"cannot move {topic}-{moving[1]} from"):
        broker.controller.add_shards(1)
    # Then the first move is kept, durable; the second partition still belongs to its old owner
    metadata = broker.metadata_on_disk()
    assert metadata.shards == THREE
    assert metadata.topics[topic].placement[moving[0]] == "shard-2"
    assert metadata.topics[topic].placement[moving[1]] == placement.shard_for(topic, moving[1], TWO)
    # And after a restart the move is finished: the partition continues on the new shard at 2
    broker = brokers(2)
    assert broker.controller.routing().owner(topic, moving[1]) == "shard-2"
    assert broker.produce(topic, moving[1], [b"c"]) == 2


@pytest.mark.parametrize("crash_at", ["group_names", "open_partitions"])
def test_a_crash_between_the_steps_of_adding_a_shard_is_finished_at_the_next_start(brokers, crash_at):
    # Given a topic with records and a group with offsets, both of which will move
    broker = brokers(2)
    topic, group = topic_that_moves(4, TWO, THREE), group_that_moves(TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    for partition in range(4):
        broker.produce(topic, partition, [b"a", b"b", b"c"])
    commit_offsets(broker.address(placement.shard_for_group(group, TWO)), group, {(topic, 0): 3})
    # When the controller dies after recording the third shard: before it asks the old
    # shards for their groups, or after sealing a partition, before its new owner opens it
    for handle in broker.shards.handles.values():
        handle.crash_controller_at(crash_at)
    broker.shards.when_started("shard-2", lambda new: new.crash_controller_at(crash_at))
    with pytest.raises(ControllerCrash):
        broker.controller.add_shards(1)
    assert broker.metadata_on_disk().shards == THREE
    # And the server starts again
    broker = brokers(2)
    # Then the group is on its new coordinator with its offsets, every partition is owned
    # by the shard it hashes to among three, and each continues after its records
    assert committed_offsets(broker.address(placement.shard_for_group(group, THREE)), group) \
        == {(topic, 0): 3}
    assert list(broker.controller.routing().owners[topic]) == placement.place_topic(topic, 4, THREE)
    assert [broker.produce(topic, p, [b"d"]) for p in range(4)] == [3, 3, 3, 3]
    assert broker.metadata_on_disk().groups_moving_from is None


def test_a_removed_shard_hands_back_writes_and_groups_and_retires_once_it_holds_nothing(brokers):
    # Given three shards, a topic with records on the third, and a group it coordinates
    broker = brokers(3)
    topic, group = topic_that_moves(4, TWO, THREE), group_that_moves(TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    moving = [p for p in range(4) if placement.shard_for(topic, p, THREE) == "shard-2"]
    for partition in moving:
        broker.produce(topic, partition, [b"a"])
    commit_offsets(broker.address("shard-2"), group, {(topic, 0): 1})
    # When the newest shard is removed
    moves = broker.controller.remove_shards(1)
    # Then its partitions' writes and its group go back to the other two
    assert [(m.partition, m.from_shard, m.offset) for m in moves] == [(p, "shard-2", 1) for p in moving]
    assert list(broker.controller.routing().owners[topic]) == placement.place_topic(topic, 4, TWO)
    assert committed_offsets(broker.address(placement.shard_for_group(group, TWO)), group) \
        == {(topic, 0): 1}
    # And it drains: it serves its older ranges until they are gone
    status = {s.shard_id: s for s in broker.controller.status().shards}
    assert status["shard-2"].draining and status["shard-2"].alive
    assert broker.metadata_on_disk().draining == ["shard-2"]
    # When the topic is deleted, Then it holds nothing and is retired: forgotten and stopped
    broker.controller.delete_topic(topic)
    metadata = broker.metadata_on_disk()
    assert (metadata.shards, metadata.draining, sorted(metadata.shard_nodes)) == (TWO, [], TWO)
    assert "shard-2" not in {s.shard_id for s in broker.controller.status().shards}
    with pytest.raises(UnavailableError, match="shard-2 is down"):
        broker.shards.handles["shard-2"].group_names().result()


def test_a_removed_shard_that_holds_no_records_retires_at_once(brokers):
    # Given three shards and a topic with no records
    broker = brokers(3)
    broker.controller.create_topic(topic_that_moves(4, TWO, THREE), 4, {})
    # When the newest shard is removed
    broker.controller.remove_shards(1)
    # Then it is retired by the command itself: its empty ranges are forgotten, it is stopped
    metadata = broker.metadata_on_disk()
    assert (metadata.shards, metadata.draining) == (TWO, [])
    assert all(r.shard_id != "shard-2" for topic in metadata.topics.values()
               for ranges in topic.ranges.values() for r in ranges)
    with pytest.raises(UnavailableError, match="shard-2 is down"):
        broker.shards.handles["shard-2"].group_names().result()


def test_a_removed_shard_retires_once_retention_has_deleted_its_last_range(brokers):
    # Given a removed shard that keeps one partition's older range, with a record
    broker = brokers(3)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    partition = next(p for p in range(4) if placement.shard_for(topic, p, THREE) == "shard-2")
    broker.produce(topic, partition, [b"old"])
    broker.controller.remove_shards(1)
    assert broker.metadata_on_disk().draining == ["shard-2"]
    # When retention deletes it (the shard checks every few seconds)
    broker.controller.alter_topic(topic, {"retention.ms": "1"})
    # Then a status call forgets that range and retires the shard
    wait_until(lambda: "shard-2" not in {s.shard_id for s in broker.controller.status().shards},
               timeout_s=30, interval_s=0.5)
    metadata = broker.metadata_on_disk()
    assert metadata.draining == [] and metadata.topics[topic].ranges_of(partition)[0].shard_id != "shard-2"


def test_removing_every_shard_or_adding_beyond_the_limit_is_refused(brokers):
    broker = brokers(2)
    with pytest.raises(InvalidConfigError, match="cannot remove 2 of 2 shards: at least one must stay"):
        broker.controller.remove_shards(2)
    with pytest.raises(InvalidConfigError, match="at most 256 shards"):
        broker.controller.add_shards(255)


# --- A data dir from main ---------------------------------------------------------------------

def test_a_data_dir_written_by_main_starts_and_serves_what_it_held(brokers, tmp_path):
    # Given a data dir main wrote (two shards, a third added then removed, records, a group)
    data_dir = tmp_path / "from-main"
    shutil.copytree(MAIN_DATA_DIR, data_dir)
    raw = json.loads((data_dir / "metadata.json").read_text())
    expected = json.loads((data_dir / "expected.json").read_text())
    # When the controller starts on it
    broker = brokers(None, data_dir=data_dir)
    # Then it has the same shards and topics, each partition with its offsets, and its group
    assert list(broker.controller.routing().shard_ids) == raw["shards"]
    for name, ends in expected["end_offsets"].items():
        infos = broker.controller.describe_topic(name).partition_info
        assert [i.end_offset for i in infos] == ends
        assert [broker.produce(name, p, [b"new"]) for p in range(len(ends))] == ends
    group, offsets = expected["group"], expected["committed"]
    coordinator = placement.shard_for_group(group, raw["shards"])
    assert committed_offsets(broker.address(coordinator), group) == \
        {(t, int(p)): o for t, per_topic in offsets.items() for p, o in per_topic.items()}
    # And the draining shard serves its older ranges for reads only
    assert raw["draining"] == ["shard-2"]
    older = [(name, int(p)) for name, t in raw["topics"].items() for p, ranges in t["ranges"].items()
             if any(shard == "shard-2" for _, shard in ranges)]
    assert older
    for name, partition in older:
        with pytest.raises(UnavailableError, match="moved away"):
            produce(broker.address("shard-2"), name, partition, [b"late"])
