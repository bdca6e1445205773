"""BrokerMetadata's tiered ranges (issue 14): once a removed shard's older range is in
object storage, the range stays in the history with shard "" (``[start, ""]`` in
metadata.json), no shard serves it but the partition's owner, and a tiered last range
is refused."""

from __future__ import annotations

import json

import pytest

from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.control.routing_table import ReplicatedRange, RoutingTable, ShardRange, TieredRange
from plinth.errors import CorruptDataError
from plinth.shards.shard_handle import Leadership

OLD = ("shard-1", "shard-0", "shard-2")
NEW = ("shard-3", "shard-1", "shard-0")


def metadata_with_a_drained_range() -> BrokerMetadata:
    """Partition 1 of "orders" moved from shard-1 (removed, draining) to shard-2 at 52."""
    topic = TopicMetadata(2, {"remote.storage.enable": "true"}, ["shard-0", "shard-1"])
    topic.move_writes(1, 52, "shard-2")
    return BrokerMetadata(shards=["shard-0", "shard-2"], draining=["shard-1"],
                          topics={"orders": topic})


def replicated_topic_sealed_on(sealed_on: tuple[str, ...]) -> TopicMetadata:
    """A factor-3 topic whose partition 0 was sealed at 812 on ``sealed_on``, moved to NEW."""
    topic = TopicMetadata(1, {}, ["shard-1"], {}, 3, {0: Leadership(OLD, "shard-1", 2, OLD, 5, 3)})
    topic.move_replicas(0, 812, sealed_on, Leadership(NEW, "shard-3", 3, NEW, 7, 3))
    return topic


def test_a_tiered_range_is_saved_as_its_start_and_an_empty_shard_and_loads_equal(tmp_path):
    # Given the drained range of partition 1, now in object storage only
    metadata = metadata_with_a_drained_range()
    metadata.topics["orders"].tier_ranges_on(1, "shard-1")
    path = tmp_path / "metadata.json"
    # When it is saved and loaded
    metadata.save(path)
    loaded = BrokerMetadata.load(path)
    # Then the file has [0, ""] for it, and it loads as a tiered range, equal
    assert json.loads(path.read_text())["topics"]["orders"]["ranges"] == {
        "1": [[0, ""], [52, "shard-2"]]}
    assert loaded == metadata
    assert type(loaded.topics["orders"].ranges_of(1)[0]) is TieredRange


def test_tiering_a_sole_holders_range_keeps_it_for_the_owner_to_serve_and_gives_no_spec():
    # Given partition 1's range [0, 52) held by shard-1 alone
    topic = metadata_with_a_drained_range().topics["orders"]
    # When shard-1's ranges are tiered
    topic.tier_ranges_on(1, "shard-1")
    # Then the range stays, with no holder, and shard-1 has nothing left to serve
    assert topic.ranges_of(1) == [(0, ""), (52, "shard-2")]
    assert topic.ranges_of(1)[0].holders == ()
    assert set(topic.specs_of("orders", 1)) == {"shard-2"}
    # And a fetch of its offsets goes to the owner, not to shard-1
    routing = RoutingTable(owners={"orders": ("shard-0", "shard-2")},
                           ranges={"orders": {1: tuple(topic.ranges[1])}})
    assert routing.holders("orders", 1, 0) == ("shard-2",)
    assert routing.holders("orders", 1, 51) == ("shard-2",)
    assert routing.spans_shards("orders", 1)   # offsets still go through the controller


def test_tiering_a_shared_replicated_range_drops_the_replica_and_its_last_makes_it_tiered():
    # Given a sealed range held by shard-1 and shard-2
    topic = replicated_topic_sealed_on(("shard-1", "shard-2"))
    # When shard-2's ranges are tiered, Then shard-1 still serves it
    topic.tier_ranges_on(0, "shard-2")
    assert topic.ranges_of(0)[0] == ReplicatedRange(0, "shard-1", ("shard-1",))
    # And a range held by a shard alone becomes tiered when that one goes
    other = replicated_topic_sealed_on(("shard-2",))
    other.tier_ranges_on(0, "shard-2")
    assert other.ranges_of(0) == [(0, ""), (812, "shard-3", NEW)]
    assert "shard-2" not in other.specs_of("t", 0)


def test_adjacent_tiered_ranges_merge_and_forgetting_another_shard_keeps_them():
    # Given a partition that moved shard-0 -> shard-1 at 10 -> shard-2 at 25 -> shard-3 at 40
    topic = TopicMetadata(1, {}, ["shard-0"])
    for start, shard_id in [(10, "shard-1"), (25, "shard-2"), (40, "shard-3")]:
        topic.move_writes(0, start, shard_id)
    # When the ranges on shard-0 and shard-1 are tiered
    topic.tier_ranges_on(0, "shard-0")
    topic.tier_ranges_on(0, "shard-1")
    # Then one tiered range covers both
    assert topic.ranges_of(0) == [(0, ""), (25, "shard-2"), (40, "shard-3")]
    # And when retention empties shard-2's range, the tiered one stays
    topic.forget_ranges_on(0, "shard-2")
    assert topic.ranges_of(0) == [(0, ""), (40, "shard-3")]


def test_the_owners_ranges_cannot_be_tiered():
    topic = metadata_with_a_drained_range().topics["orders"]
    with pytest.raises(AssertionError, match="it owns the partition's writes"):
        topic.tier_ranges_on(1, "shard-2")
    assert topic.ranges_of(1) == [(0, "shard-1"), (52, "shard-2")]


def test_a_tiered_last_range_is_refused_naming_it(tmp_path):
    # Given a metadata file whose last range of partition 1 is tiered
    path = tmp_path / "metadata.json"
    metadata_with_a_drained_range().save(path)
    raw = json.loads(path.read_text())
    raw["topics"]["orders"]["ranges"]["1"] = [[0, "shard-1"], [52, ""]]
    path.write_text(json.dumps(raw))
    # When it is loaded, Then it is refused, naming the range
    with pytest.raises(CorruptDataError, match=r"partition 1: the last range, at 52, is tiered"):
        BrokerMetadata.load(path)
    # And the controller never writes one
    metadata = metadata_with_a_drained_range()
    metadata.topics["orders"].ranges[1][-1] = TieredRange(52)
    with pytest.raises(AssertionError, match="is tiered"):
        metadata.save(tmp_path / "other.json")


def test_a_range_of_one_copy_is_still_a_shard_range_after_a_round_trip(tmp_path):
    # Given the drained range before it is tiered
    path = tmp_path / "metadata.json"
    metadata_with_a_drained_range().save(path)
    # When it is loaded, Then both ranges are plain ranges of one copy
    assert [type(r) for r in BrokerMetadata.load(path).topics["orders"].ranges_of(1)] == \
        [ShardRange, ShardRange]
