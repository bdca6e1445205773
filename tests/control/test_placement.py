"""placement.py: rendezvous hashing is deterministic and moves few partitions; new shards
go to the least loaded node."""

import pytest

from plinth.control.placement import node_for_new_shard, place_topic, shard_for
from plinth.errors import UnavailableError


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
