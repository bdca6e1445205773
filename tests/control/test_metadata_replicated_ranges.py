"""BrokerMetadata's ranges of replicated partitions (issue 12): a partition whose replica
set moved keeps (start offset, shard, replicas) ranges in metadata.json; they round-trip,
files of earlier brokers (two-element ranges) still load, and broken ones are refused."""

from __future__ import annotations

import json

import pytest

from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.control.routing_table import ReplicatedRange, RoutingTable, ShardRange
from plinth.errors import CorruptDataError
from plinth.shards.shard_handle import Leadership
from tests.control.broker_without_ray import MAIN_DATA_DIR

OLD = ("shard-1", "shard-0", "shard-2")
NEW = ("shard-3", "shard-1", "shard-0")


def metadata_with_a_moved_replica_set() -> BrokerMetadata:
    """A factor-3 topic whose partition 0 was sealed at 812 on OLD and moved to NEW."""
    record = Leadership(OLD, "shard-1", 2, OLD, 5, 3)
    topic = TopicMetadata(2, {"min.insync.replicas": "2"}, ["shard-1", "shard-1"], {}, 3,
                          {0: record, 1: Leadership(OLD, "shard-1", 0, OLD, 0, 3)})
    topic.move_replicas(0, 812, ("shard-1", "shard-2"),
                        Leadership(NEW, "shard-3", 3, NEW, 7, 3))
    return BrokerMetadata(shards=["shard-0", "shard-1", "shard-2", "shard-3"],
                          topics={"events": topic}, controller_epoch=3,
                          partitions_moving_from=["shard-0", "shard-1", "shard-2"])


def test_a_moved_replica_set_saves_its_ranges_with_their_replicas_and_loads_equal(tmp_path):
    # Given a factor-3 partition sealed at 812 on two of its old replicas, moved to NEW
    metadata = metadata_with_a_moved_replica_set()
    path = tmp_path / "metadata.json"
    # When it is saved and loaded
    metadata.save(path)
    # Then it is the same, and the file has the replicas third in each range
    assert BrokerMetadata.load(path) == metadata
    on_disk = json.loads(path.read_text())
    assert on_disk["topics"]["events"]["ranges"] == {
        "0": [[0, "shard-1", ["shard-1", "shard-2"]], [812, "shard-3", list(NEW)]]}
    assert on_disk["partitions_moving_from"] == ["shard-0", "shard-1", "shard-2"]
    # And the new set takes the writes; its preferred leader is the placement
    topic = metadata.topics["events"]
    assert (topic.placement[0], topic.leader_of(0), topic.replicas_of(0)) == \
        ("shard-3", "shard-3", NEW)


def test_each_replica_holding_a_sealed_range_serves_it_read_only_and_the_new_set_the_rest():
    # Given the moved partition
    topic = metadata_with_a_moved_replica_set().topics["events"]
    # When the shards' specs are made
    specs = topic.specs_of("events", 0)
    # Then the sealed range's holder that is not in the new set serves it sealed from 0;
    # the new set (shard-1 too: it continues its own log) serves from 812 with its record
    assert (specs["shard-2"].sealed, specs["shard-2"].initial_offset,
            specs["shard-2"].leadership) == (True, 0, None)
    for shard_id in NEW:
        assert (specs[shard_id].sealed, specs[shard_id].initial_offset,
                specs[shard_id].leadership.replicas) == (False, 812, NEW)
    # And routers fetch a sealed offset from its holders in order, a later one from the
    # new set's leader (whoever leads it now, not its first range entry)
    routing = RoutingTable(owners={"events": ("shard-0", "shard-1")},
                           ranges={"events": {0: tuple(topic.ranges[0])}})
    assert routing.holders("events", 0, 811) == ("shard-1", "shard-2")
    assert routing.holders("events", 0, 812) == ("shard-0",)


def test_forgetting_a_replica_of_a_sealed_range_keeps_the_others_and_the_last_drops_the_range():
    # Given the moved partition, whose sealed range is on shard-1 and shard-2
    topic = metadata_with_a_moved_replica_set().topics["events"]
    # When retention emptied it on shard-2, Then shard-1 still serves it
    topic.forget_ranges_on(0, "shard-2")
    assert topic.ranges_of(0)[0] == ReplicatedRange(0, "shard-1", ("shard-1",))
    # And a shard of the current set cannot be forgotten
    with pytest.raises(AssertionError, match="it owns the partition's writes"):
        topic.forget_ranges_on(0, "shard-1")


def test_a_lost_shards_copy_of_a_sealed_range_is_forgotten_only_where_another_holds_it():
    # Given the moved partition (range [0, 812) sealed on shard-1 and shard-2), and a
    # partition of one copy whose range [0, 40) is sealed on shard-2 alone
    topic = metadata_with_a_moved_replica_set().topics["events"]
    plain = TopicMetadata(1, {}, ["shard-0"])
    plain.move_writes(0, 40, "shard-1")
    # When shard-2's copies of sealed ranges are forgotten (it lost its disk)
    topic.forget_sealed_copy_on(0, "shard-2")
    plain.forget_sealed_copy_on(0, "shard-0")
    # Then the replicated range is served by shard-1 alone; the current range is untouched
    assert topic.ranges[0] == [ReplicatedRange(0, "shard-1", ("shard-1",)),
                               ReplicatedRange(812, "shard-3", NEW)]
    # And a range no other shard holds stays (it is all the partition has of it)
    assert plain.ranges[0] == [ShardRange(0, "shard-0"), ShardRange(40, "shard-1")]
    # And forgetting a shard that holds no sealed range changes nothing
    topic.forget_sealed_copy_on(0, "shard-3")
    assert topic.ranges[0][-1] == ReplicatedRange(812, "shard-3", NEW)


@pytest.mark.parametrize("bad_range, problem", [
    ([0, "shard-1", ["shard-2", "shard-1"]], "not the first of its replicas"),
    ([0, "shard-1", ["shard-1", "shard-9"]], "a range on unknown shard 'shard-9'"),
    ([0, "shard-1", []], "an empty replica list"),
    ([0, "shard-1", ["shard-1"], "x"], "is not \\[start, shard\\] or"),
])
def test_a_broken_replicated_range_is_refused_naming_it(tmp_path, bad_range, problem):
    # Given a metadata file whose sealed range is broken
    path = tmp_path / "metadata.json"
    metadata_with_a_moved_replica_set().save(path)
    raw = json.loads(path.read_text())
    raw["topics"]["events"]["ranges"]["0"][0] = bad_range
    path.write_text(json.dumps(raw))
    # When it is loaded, Then it is refused, naming the problem
    with pytest.raises(CorruptDataError, match=problem):
        BrokerMetadata.load(path)


def test_metadata_of_a_broker_before_replica_sets_moved_still_loads_with_plain_ranges():
    # Given the data dir main wrote at fb38567 (two-element ranges)
    # When it is loaded
    metadata = BrokerMetadata.load(MAIN_DATA_DIR / "metadata.json")
    # Then its ranges are ranges of one copy, and it saves as it was
    ranges = [r for t in metadata.topics.values() for rs in t.ranges.values() for r in rs]
    assert ranges and all(type(r) is ShardRange and r.holders == (r.shard_id,) for r in ranges)
    raw = json.loads((MAIN_DATA_DIR / "metadata.json").read_text())
    assert metadata.to_json()["topics"] == {   # with the ids given on load (metadata.py)
        name: {**topic, "topic_id": metadata.topics[name].topic_id}
        for name, topic in raw["topics"].items()}
    assert metadata.partitions_moving_from is None
