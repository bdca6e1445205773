"""placement.py: rendezvous hashing is deterministic and moves few partitions."""

from plinth.control.placement import place_topic, shard_for


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
