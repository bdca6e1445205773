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
from plinth.control.nodes import Node
from plinth.topics import OFFSETS_TOPIC
from plinth.errors import InvalidConfigError
from plinth.shards.shard_handle import PartitionId
from tests.control.ray_node_table import RayNodeTable
from tests.support import wait_until

CATCH_UP_WAIT_S = 30


def four_nodes() -> list[Node]:
    """Nodes a, b, c (one shard each, in order) and d, spare."""
    return [Node(f"{n}{n}" * 28, "127.0.0.1", True, f"plinth-node:{n}") for n in "abcd"]


@pytest.fixture
def cluster(brokers):
    """Three shards on nodes a, b, c; node d holds none. ``cluster.lose(shard)`` kills the
    node of a shard for good (its process and its disk)."""
    nodes = four_nodes()
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
    # And it catches up from the leaders and the leaders add it back: factor 3 again
    wait_until(lambda: all("shard-1" in cluster.record("t", p).in_sync for p in range(2)),
               timeout_s=CATCH_UP_WAIT_S)
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
