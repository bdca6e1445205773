"""Controller.move_shard (``plinth shards move``): a shard whose node was lost for good is
re-created on another node, its replicas rebuilt from their leaders, so that the
replication factor is restored; what would lose data, share a node, or stop a serving
shard is refused unless asked for. Real shard actors reached in process on a real disk
(broker_without_ray.py), on four named nodes the test can declare dead, or on the nodes
of a fake of Ray's node table (ray_node_table.py), which lists a dead node as Ray does."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from plinth.control import nodes as control_nodes
from plinth.control import placement
from plinth.control.nodes import Node
from plinth.topics import OFFSETS_TOPIC
from plinth.errors import InvalidConfigError
from plinth.shards.shard_handle import PartitionId
from tests.control.ray_node_table import RayNodeTable
from tests.shard_requests import fetch_values
from tests.support import wait_until

CATCH_UP_WAIT_S = 30


def named_nodes(names: str) -> list[Node]:
    """A node per letter of ``names``, named by it: the first three get a shard each, in
    order; the others are spare."""
    return [Node(f"{n}{n}" * 28, "127.0.0.1", True, f"plinth-node:{n}") for n in names]


@pytest.fixture
def cluster(brokers):
    """Three shards on nodes a, b, c; node d holds none (``three_shards_on``)."""
    return three_shards_on(brokers, "abcd")


@pytest.fixture
def cluster_of_five(brokers):
    """Three shards on nodes a, b, c; nodes d and e hold none: one for a shard added,
    one to move a lost shard to."""
    return three_shards_on(brokers, "abcde")


def three_shards_on(brokers, names: str):
    """Three shards on the first three nodes of ``names``. ``cluster.lose(shard)`` kills
    the node of a shard for good (its process and its disk)."""
    nodes = named_nodes(names)
    broker = brokers(3, nodes=nodes)

    class Cluster:
        def __init__(self):
            self.broker, self.nodes = broker, nodes

        def lose(self, shard_id: str) -> None:
            pin = broker.metadata_on_disk().shard_nodes[shard_id]
            index = next(i for i, n in enumerate(nodes) if n.pin_resource == pin)
            nodes[index] = dataclasses.replace(nodes[index], alive=False)
            broker.shards.handles[shard_id].stop()
            shutil.rmtree(broker.shards.directory(shard_id))

        def record(self, topic: str, partition: int = 0):
            return broker.metadata_on_disk().topics[topic].leadership[partition]

    made = Cluster()
    assert broker.metadata_on_disk().shard_nodes == {
        "shard-0": "plinth-node:a", "shard-1": "plinth-node:b", "shard-2": "plinth-node:c"}
    return made


def test_a_shard_of_a_lost_node_moves_to_a_new_node_and_its_replicas_rejoin_in_sync(cluster):
    # Given a factor-3 topic with acknowledged records on all three replicas
    broker = cluster.broker
    broker.controller.create_topic("t", 2, {}, 3)
    for n in range(4):
        broker.produce("t", 0, [f"r{n}".encode()], acks=-1)
    # When node b is lost for good (shard-1 with its disk) and shard-1 is moved to node d
    cluster.lose("shard-1")
    move = broker.controller.move_shard("shard-1", "d")
    # Then it is pinned to d (saved), and its replicas are being rebuilt: the topic's two
    # and the three slots of the committed offsets (the broker is replicated)
    assert (move.shard, move.from_node, move.to_node) == ("shard-1", "b", "d")
    assert sorted(move.repairing) == [(OFFSETS_TOPIC, s) for s in range(3)] + [("t", 0), ("t", 1)]
    assert move.emptied == []
    assert broker.metadata_on_disk().shard_nodes["shard-1"] == "plinth-node:d"
    assert move.address == broker.address("shard-1")
    # And it catches up from the leaders and the leaders add it back: factor 3 again, for
    # every partition it repairs (the groups' offsets slots too, which status counts)
    wait_until(lambda: all("shard-1" in cluster.record(topic, p).in_sync
                           for topic, p in move.repairing), timeout_s=CATCH_UP_WAIT_S)
    [info] = broker.shards.handles["shard-1"].actor.partition_infos([PartitionId("t", 0)])
    assert info.end_offset == 4
    # And status names the nodes and the shard's new node
    status = broker.controller.status()
    assert sorted(status.node_names.values()) == ["a", "b", "c", "d"]
    assert {s.shard_id: s.node for s in status.shards}["shard-1"] == "d"
    assert status.under_replicated_partitions == 0


def test_moving_a_shard_that_serves_on_an_alive_node_is_refused_without_force(cluster):
    # Given a factor-3 topic and every node alive
    broker = cluster.broker
    broker.controller.create_topic("t", 1, {}, 3)
    # When shard-1 is moved to d, Then it is refused, saying what it would do
    with pytest.raises(InvalidConfigError, match="shard-1 serves on node b, which is alive: "
                                                 "moving it would stop it there.*rebuild its \\d+ "
                                                 "replica.*--force"):
        broker.controller.move_shard("shard-1", "d")
    assert broker.metadata_on_disk().shard_nodes["shard-1"] == "plinth-node:b"
    # And with force it moves (onto the same directory here: one machine)
    assert broker.controller.move_shard("shard-1", "d", force=True).to_node == "d"
    assert broker.metadata_on_disk().shard_nodes["shard-1"] == "plinth-node:d"


def test_moving_onto_a_node_holding_another_replica_is_refused_unless_allowed(cluster):
    # Given a factor-3 topic, and node b lost
    broker = cluster.broker
    broker.controller.create_topic("t", 1, {}, 3)
    cluster.lose("shard-1")
    # When shard-1 is moved to node c, which holds shard-2's replica, Then it is refused
    with pytest.raises(InvalidConfigError, match=r"node c already holds a replica of \d+ "
                                                 r"partition\(s\) of shard-1: .*t-0 \(on shard-2\)"
                                                 ".*--allow-replicas-on-one-node"):
        broker.controller.move_shard("shard-1", "c")
    # And allowed, it moves there
    assert broker.controller.move_shard("shard-1", "c",
                                        allow_replicas_on_one_node=True).to_node == "c"


def test_moving_a_shard_whose_partitions_have_no_other_copy_is_refused_naming_them(cluster):
    # Given a factor-1 topic, some of whose partitions are on shard-1, whose node is lost
    broker = cluster.broker
    broker.controller.create_topic("plain", 6, {}, 1)
    mine = [p for p in range(6) if broker.owner("plain", p) == "shard-1"]
    assert mine
    cluster.lose("shard-1")
    # When it is moved, Then it is refused, naming the partitions that would come back empty
    names = ", ".join(f"plain-{p}" for p in mine)
    with pytest.raises(InvalidConfigError, match=f"would lose {len(mine)} partition.*{names}.*"
                                                 "--accept-data-loss"):
        broker.controller.move_shard("shard-1", "d")
    # And accepting the loss, it moves, reporting them emptied, and serves them again
    move = broker.controller.move_shard("shard-1", "d", accept_data_loss=True)
    assert move.emptied == [("plain", p) for p in mine]
    assert broker.produce("plain", mine[0], [b"again"]) == 0


def factor_3_topic_leaving(shard_id: str, partitions: int) -> str:
    """A factor-3 topic name some of whose partitions get a replica set without
    ``shard_id`` once shard-3 is added to shards 0, 1 and 2 (each on its own node)."""
    four = ["shard-0", "shard-1", "shard-2", "shard-3"]
    for n in range(1000):
        if any(shard_id not in placement.replicas_for(f"r{n}", p, four, {}, 3,
                                                      allow_same_node=True)
               for p in range(partitions)):
            return f"r{n}"
    raise AssertionError(f"no topic name with a partition leaving {shard_id}")


def test_a_lost_shards_sealed_ranges_held_by_other_replicas_do_not_refuse_its_move(
        cluster_of_five):
    # Given a factor-3 topic with records a, b, c (acks="all") in each partition, and a
    # shard added: the partitions whose new replica set leaves out shard-1 keep their
    # range [0, 3) sealed on shards 0, 1 and 2, each of which holds it whole
    broker = cluster_of_five.broker
    topic = factor_3_topic_leaving("shard-1", 6)
    broker.controller.create_topic(topic, 6, {}, 3)
    for p in range(6):
        assert broker.produce(topic, p, [b"a", b"b", b"c"], acks=-1) == 0
    broker.controller.add_shards(1)
    left = [p for p in range(6) if "shard-1" not in cluster_of_five.record(topic, p).replicas]
    assert left
    assert broker.metadata_on_disk().shard_nodes["shard-3"] == "plinth-node:d"
    # When node b is lost for good and shard-1 is moved to node e
    cluster_of_five.lose("shard-1")
    move = broker.controller.move_shard("shard-1", "e")
    # Then it is not refused, and nothing is reported emptied: the other holders of those
    # sealed ranges have every record of them
    assert move.emptied == []
    assert not set(left) & {p for t, p in move.repairing if t == topic}
    # And those ranges are no longer routed to shard-1 (its new disk holds nothing of
    # them), and each of their records is read from another holder
    routing = broker.controller.routing()
    for p in left:
        holders = routing.holders(topic, p, 0)
        assert holders and "shard-1" not in holders
        assert fetch_values(broker.address(holders[0]), topic, p, 0) == [b"a", b"b", b"c"]


def test_a_lost_shard_that_alone_holds_a_sealed_range_is_still_refused_naming_it(
        cluster_of_five):
    # Given a factor-1 topic some of whose partitions moved from shard-1 to an added
    # shard: their range [0, 1) is sealed on shard-1 alone
    broker = cluster_of_five.broker
    broker.controller.create_topic("plain", 24, {}, 1)
    for p in range(24):
        broker.produce("plain", p, [b"x"])
    moved = [m.partition for m in broker.controller.add_shards(1) if m.from_shard == "shard-1"]
    assert moved
    # When node b is lost and shard-1 is moved, Then it is refused, naming them
    cluster_of_five.lose("shard-1")
    with pytest.raises(InvalidConfigError, match=f"would lose .*plain-{moved[0]}.*"
                                                 "--accept-data-loss"):
        broker.controller.move_shard("shard-1", "e")


def test_moving_to_an_unknown_or_dead_node_or_an_unknown_shard_is_refused(cluster):
    broker = cluster.broker
    cluster.lose("shard-1")
    with pytest.raises(InvalidConfigError, match="no node is named 'x'; the nodes "
                                                 r"are: a \(aaaa.*d \(dddd"):
        broker.controller.move_shard("shard-1", "x")
    with pytest.raises(InvalidConfigError, match="cannot move shard-1 to node b: it is dead"):
        broker.controller.move_shard("shard-1", "b")
    with pytest.raises(InvalidConfigError, match="there is no shard 'shard-9'"):
        broker.controller.move_shard("shard-9", "d")
    # And a node is named by its Ray node id too (a prefix of at least 8 characters)
    assert broker.controller.move_shard("shard-1", "dddddddd").to_node == "d"


def test_moving_a_serving_shard_whose_partitions_have_no_other_copy_is_refused_as_serving_first(
        cluster):
    # Given a factor-1 topic with partitions on shard-1, whose node is alive
    broker = cluster.broker
    broker.controller.create_topic("plain", 6, {}, 1)
    assert any(broker.owner("plain", p) == "shard-1" for p in range(6))
    # When it is moved (a typo of the shard id, say), Then it is refused because it serves,
    # naming --force and what the command is for, not steered to --accept-data-loss
    with pytest.raises(InvalidConfigError, match="shard-1 serves on node b, which is alive: .*"
                                                 "empty \\d+ partition.*--force .*shards move "
                                                 "is for a shard whose node is lost"):
        broker.controller.move_shard("shard-1", "d")


@pytest.fixture
def ray_table(monkeypatch):
    """Nodes a, b, c in a fake of Ray's node table, which the controller's own node list
    (control/nodes.py's RayNodes) reads: start brokers with ``nodes=None``."""
    table = RayNodeTable("abc")
    monkeypatch.setattr(control_nodes, "_ray_node_list", table.list)
    return table


def node_rows(status) -> list[tuple[str, str, bool]]:
    """(name, address, alive) of each node ``status`` lists, as plinth status prints them."""
    return [(status.node_names.get(node_id, ""), address, alive)
            for node_id, address, alive in status.nodes]


def test_a_lost_node_keeps_its_name_in_status_and_moving_a_shard_to_it_is_refused_as_dead(
        brokers, ray_table):
    # Given three shards, one on each of nodes a, b and c
    broker = brokers(3, nodes=None)
    assert broker.metadata_on_disk().shard_nodes["shard-2"] == "plinth-node:c"
    broker.controller.status()   # (the nodes are seen alive)
    # When node c is lost: Ray lists it dead, without its resources
    ray_table.lose("c")
    # Then status lists it under its name, dead, as its shard's node
    status = broker.controller.status()
    assert node_rows(status) == [("a", "127.0.0.1", True), ("b", "127.0.0.1", True),
                                 ("c", "127.0.0.1", False)]
    assert {s.shard_id: s.node for s in status.shards}["shard-2"] == "c"
    # And moving a shard to it is refused, naming it dead
    with pytest.raises(InvalidConfigError, match="cannot move shard-2 to node c: it is dead"):
        broker.controller.move_shard("shard-2", "c")


def test_a_node_lost_while_the_broker_was_down_is_named_after_a_restart_from_the_saved_pins(
        brokers, ray_table):
    # Given three shards, one on each of nodes a, b and c
    brokers(3, nodes=None)
    # When node c is lost while the broker is down, and the broker starts again
    ray_table.lose("c")
    broker = brokers(3, nodes=None)
    # Then status lists it under its name (the one saved pin no alive node holds)
    assert node_rows(broker.controller.status())[2] == ("c", "127.0.0.1", False)
    # And a refused move lists it so
    with pytest.raises(InvalidConfigError, match=r"no node is named 'x'; the nodes are: a "
                                                 r"\(aaaaaaaaaaaa, alive\), b \(bbbbbbbbbbbb, "
                                                 r"alive\), c \(cccccccccccc, dead\)$"):
        broker.controller.move_shard("shard-2", "x")
