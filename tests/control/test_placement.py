"""placement.py: rendezvous hashing is deterministic and moves few partitions; new shards
go to the least loaded node; a new data dir's shard count; which node a name names."""

import pytest

from plinth import limits
from plinth.control.placement import (default_shard_count, distinct_nodes, node_for_new_shard,
                                      node_named, place_topic, replicas_for, shard_for)
from plinth.control.nodes import Node
from plinth.errors import InvalidConfigError, UnavailableError


def test_placement_depends_only_on_names_not_on_shard_order():
    shards = [f"shard-{i}" for i in range(5)]
    assert place_topic("orders", 64, shards) == place_topic("orders", 64, list(reversed(shards)))


def test_partitions_spread_over_every_shard():
    owners = place_topic("orders", 256, [f"shard-{i}" for i in range(4)])
    counts = {s: owners.count(s) for s in set(owners)}
    assert len(counts) == 4 and min(counts.values()) > 256 / 4 / 2


def test_adding_a_shard_moves_only_partitions_to_the_new_shard():
    before = place_topic("orders", 1000, [f"shard-{i}" for i in range(4)])
    after = place_topic("orders", 1000, [f"shard-{i}" for i in range(5)])
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(a == "shard-4" for _, a in moved)
    assert 100 < len(moved) < 300   # about 1/5 of 1000


def test_a_single_shard_owns_everything():
    assert shard_for("t", 3, ["only"]) == "only"


def test_placing_a_partition_on_no_shard_is_a_programmer_error():
    with pytest.raises(AssertionError, match="placing t-3: placement needs at least one shard"):
        shard_for("t", 3, [])


def test_a_new_shard_goes_to_the_alive_node_with_the_fewest_shards():
    # Given node a with two shards, b with one, and a shard pinned to a node that is gone
    pins = {"shard-0": "node:a", "shard-1": "node:b", "shard-2": "node:a", "shard-3": "node:gone"}
    # Then the next shard goes to b, and with equal loads to the first name
    assert node_for_new_shard(["node:a", "node:b"], pins) == "node:b"
    assert node_for_new_shard(["node:c", "node:b"], {}) == "node:b"


def test_a_new_shard_with_no_alive_node_is_unavailable():
    with pytest.raises(UnavailableError, match="no alive Ray node"):
        node_for_new_shard([], {"shard-0": "node:a"})


# --- Replicas ---------------------------------------------------------------------

SIX = [f"shard-{i}" for i in range(6)]


def test_a_partitions_replicas_are_distinct_and_its_preferred_leader_is_the_factor_1_owner():
    # Given six shards, each on its own node
    pins = {s: f"node-{s}" for s in SIX}
    for partition in range(50):
        # When three replicas are placed
        replicas = replicas_for("orders", partition, SIX, pins, 3)
        # Then they are three distinct shards, the first the one a factor-1 topic gets
        assert len(set(replicas)) == 3
        assert replicas[0] == shard_for("orders", partition, SIX)
    # And they depend on the names only
    assert replicas_for("orders", 7, SIX, pins, 3) == replicas_for("orders", 7, SIX[::-1], pins, 3)


def test_replicas_go_to_distinct_nodes_unless_allowed_to_share_one():
    # Given six shards on three nodes, two each
    pins = {s: f"node-{i % 3}" for i, s in enumerate(SIX)}
    for partition in range(50):
        # When three replicas are placed, Then each is on another node
        replicas = replicas_for("t", partition, SIX, pins, 3)
        assert len({pins[s] for s in replicas}) == 3
    # And on one node they may share it only when allowed
    one_node = {s: "node-0" for s in SIX}
    assert len(replicas_for("t", 0, SIX, one_node, 3, allow_same_node=True)) == 3
    with pytest.raises(AssertionError, match="3 replicas asked of 6 shards on 1 nodes"):
        replicas_for("t", 0, SIX, one_node, 3)
    assert distinct_nodes(SIX, pins) == 3 and distinct_nodes(SIX, one_node) == 1


def cpu_nodes(*cpus: int, alive: bool = True) -> list[Node]:
    return [Node(f"n{i}", "127.0.0.1", alive, f"plinth-node:n{i}", c) for i, c in enumerate(cpus)]


@pytest.mark.parametrize("cpus, shards", [((0,), 1), ((1,), 1), ((2,), 1), ((4,), 3), ((64,), 63),
                                          ((2, 2, 2), 3), ((8, 2, 0), 8)])
def test_a_new_data_dir_gets_a_shard_per_cpu_but_one_on_each_node_and_at_least_one(cpus, shards):
    assert default_shard_count(cpu_nodes(*cpus)) == shards


def test_a_new_data_dir_on_more_cpus_than_shards_max_gets_shards_max_shards():
    # Given nodes with 300 CPUs in all / Then a new data dir gets the most --shards allows
    assert default_shard_count(cpu_nodes(200, 100)) == limits.SHARDS_MAX


def test_a_dead_node_gets_no_default_shards():
    assert default_shard_count(cpu_nodes(4) + cpu_nodes(8, alive=False)) == 3


def named(name: str, node_id: str, alive: bool = True) -> Node:
    return Node(node_id * 56, "127.0.0.1", alive, f"plinth-node:{name}")


def test_a_name_no_node_has_is_refused_saying_so_and_listing_the_nodes():
    nodes = [named("a", "a"), named("b", "b"), named("c", "c", alive=False)]
    with pytest.raises(InvalidConfigError, match=r"^no node is named 'x'; the nodes are: "
                                                 r"a \(aaaaaaaaaaaa, alive\), b \(bbbbbbbbbbbb, "
                                                 r"alive\), c \(cccccccccccc, dead\)$"):
        node_named(nodes, "x")


def test_a_name_several_alive_nodes_share_is_refused_saying_how_many_share_it():
    # Given three nodes without a plinth-node name, all on 127.0.0.1: each is named so
    nodes = [Node(n * 56, "127.0.0.1", True, "node:127.0.0.1") for n in "abc"]
    with pytest.raises(InvalidConfigError, match=r"^3 alive nodes are named '127.0.0.1'; name "
                                                 r"one by its node id .*the nodes are: 127.0.0.1 "
                                                 r"\(aaaaaaaaaaaa, alive\), "):
        node_named(nodes, "127.0.0.1")
    # And a node id names one
    assert node_named(nodes, "bbbbbbbb").node_id == "b" * 56


def test_the_name_of_a_node_that_died_and_came_back_names_the_alive_one():
    # Given node c listed twice, as Ray lists a node started again: dead, then alive
    nodes = [named("a", "a"), named("c", "c", alive=False), named("c", "C")]
    assert node_named(nodes, "c").node_id == "C" * 56
    # And a name only dead nodes have names one of them (a move refuses it as dead)
    nodes = [named("a", "a"), named("c", "c", alive=False), named("c", "C", alive=False)]
    assert not node_named(nodes, "c").alive
