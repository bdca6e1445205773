"""What an election asked for decides, without shards (control/leader_elections.py):
which partitions an auto leader rebalance takes back to their preferred leaders."""

from __future__ import annotations

from plinth.control.leader_elections import imbalanced
from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.shards.shard_handle import Leadership

SHARDS = ("a", "b", "c")


def record(replicas, leader, in_sync=None) -> Leadership:
    return Leadership(replicas=tuple(replicas), leader=leader, leader_epoch=1,
                      in_sync=tuple(in_sync or replicas), partition_epoch=1, controller_epoch=1,
                      eligible=())


def metadata_with(records: list[Leadership]) -> BrokerMetadata:
    metadata = BrokerMetadata(shards=list(SHARDS))
    metadata.topics["t"] = TopicMetadata(len(records), {}, [r.replicas[0] for r in records],
                                         replication_factor=3,
                                         leadership=dict(enumerate(records)))
    return metadata


def test_a_shard_led_away_from_more_than_the_share_gets_its_in_sync_partitions_back():
    # Given shard a prefers 4 partitions: 2 led by b (a in sync in one of them only)
    records = [record("abc", "a"), record("abc", "a"), record("abc", "b"),
               record("abc", "b", in_sync="bc"), record("bca", "b")]
    # When the rebalance looks at them with a 10 % share / Then it takes back the one a
    # may lead, not the one a is out of sync in
    assert imbalanced(metadata_with(records), 10) == [("t", 2)]


def test_a_shard_led_away_from_no_more_than_the_share_keeps_its_leaders():
    # Given shard a prefers 10 partitions and one is led by b: 10 %, not more
    records = [record("abc", "a") for _ in range(9)] + [record("abc", "b")]
    assert imbalanced(metadata_with(records), 10) == []
    assert imbalanced(metadata_with(records), 9) == [("t", 9)]


def test_partitions_led_by_their_preferred_leaders_are_balanced():
    assert imbalanced(metadata_with([record("abc", "a"), record("bca", "b")]), 0) == []
