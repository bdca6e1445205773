"""The controller creates the internal topic of committed offsets (__consumer_offsets) on a
replicated broker, and keeps it from users; at factor 1 nothing changes. Real shard actors
reached in process on a real disk (broker_without_ray.py), no Ray."""

from __future__ import annotations

import pytest

from plinth import limits, topics
from plinth.control.nodes import Node
from plinth.errors import InvalidConfigError, InvalidTopicError
from tests.control.broker_without_ray import THREE

THREE_NODES = [Node(f"node-{n}", "127.0.0.1", True, f"plinth-node:{n}") for n in "abc"]
ON_ONE_NODE = {"allow_replicas_on_one_node": True}


def test_a_replicated_broker_creates_the_internal_topic_once_with_a_slot_per_shard(brokers):
    # Given three shards on three nodes (the default factor is then 3)
    broker = brokers(3, THREE_NODES)
    # Then the internal topic exists: a slot per shard, factor 3, its log bounded in time
    # (its leaders snapshot it: offset_store.py)
    topic = broker.metadata_on_disk().topics[topics.OFFSETS_TOPIC]
    assert (topic.partitions, topic.replication_factor) == (3, 3)
    assert (topic.config["retention.ms"], topic.config["segment.ms"],
            topic.config["retention.bytes"]) == (str(limits.OFFSETS_SLOT_RETENTION_MS),
                                                 str(limits.OFFSETS_SLOT_SEGMENT_MS), "-1")
    assert topic.config["min.insync.replicas"] == "2"
    assert all(sorted(record.replicas) == THREE for record in topic.leadership.values())
    # And every shard has heard of it (its partition counts), and holds its replicas
    for shard_id in THREE:
        manifest = broker.manifest(shard_id)
        assert manifest.partition_counts[topics.OFFSETS_TOPIC] == 3
        assert {pid.topic for pid in manifest.partitions} == {topics.OFFSETS_TOPIC}
    # And routers learn each slot's leader
    routing = broker.controller.routing()
    assert routing.group_slot("g") == topics.offsets_slot("g", 3)
    assert all(routing.owners[topics.OFFSETS_TOPIC])
    # When the broker restarts, Then the topic is kept, not created again
    leadership = topic.leadership
    broker = brokers(3, THREE_NODES)
    assert broker.metadata_on_disk().topics[topics.OFFSETS_TOPIC].partitions == 3
    assert {p: r.replicas for p, r in
            broker.metadata_on_disk().topics[topics.OFFSETS_TOPIC].leadership.items()} == \
        {p: r.replicas for p, r in leadership.items()}


def test_at_factor_1_there_is_no_internal_topic(brokers):
    # Given three shards on one node (default factor 1), and another asking for factor 1
    one_node = brokers(3)
    # Then neither has the internal topic: groups hash over the shards as before
    assert topics.OFFSETS_TOPIC not in one_node.metadata_on_disk().topics
    assert one_node.controller.routing().group_slot("g") is None


def test_the_offsets_factor_option_overrides_the_default_and_refuses_too_many(brokers, tmp_path):
    # Given three shards on one node, replicas allowed to share it, offsets at factor 2
    broker = brokers(3, **ON_ONE_NODE, offsets_replication_factor=2)
    # Then the internal topic has 2 replicas per slot (the default factor would be 1)
    assert broker.metadata_on_disk().topics[topics.OFFSETS_TOPIC].replication_factor == 2
    # And a factor the shards cannot hold is refused at start, naming the option, the
    # shards and the topic (the check --default-replication-factor has too)
    with pytest.raises(InvalidConfigError, match="--offsets-replication-factor 4 is more than "
                                                 "the broker's 2 shards: .* __consumer_offsets"):
        brokers(2, data_dir=tmp_path / "other", offsets_replication_factor=4, **ON_ONE_NODE)
    # And factor 1 asked for on three nodes keeps offsets unreplicated
    single = brokers(3, THREE_NODES, data_dir=tmp_path / "third", offsets_replication_factor=1)
    assert topics.OFFSETS_TOPIC not in single.metadata_on_disk().topics


def test_users_cannot_create_or_delete_the_internal_topic_and_it_blocks_only_removing_its_shards(
        brokers):
    # Given a replicated broker (no user topic replicated)
    broker = brokers(3, THREE_NODES)
    # When a user deletes or creates the internal topic, Then it is refused, naming it
    with pytest.raises(InvalidTopicError, match="'__consumer_offsets' is internal"):
        broker.controller.delete_topic(topics.OFFSETS_TOPIC)
    with pytest.raises(InvalidTopicError, match="is internal"):
        broker.controller.create_topic(topics.OFFSETS_TOPIC, 1, {})
    # And removing a shard that holds its replicas is refused, naming them
    with pytest.raises(InvalidConfigError, match="shard-2 hold replicas of __consumer_offsets"):
        broker.controller.remove_shards(1)
    # And adding a shard is not refused for it: its slots stay where they are
    broker.controller.add_shards(1)
    assert broker.metadata_on_disk().topics[topics.OFFSETS_TOPIC].partitions == 3
