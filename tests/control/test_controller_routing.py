"""The controller's routing table (``Controller.routing``): its topics' part is built
again only after the metadata changed, and a router that has the current table is
sent nothing. Real shard actors reached in process, on a real disk
(broker_without_ray.py)."""

from __future__ import annotations

import pytest

from plinth.control.controller import Controller
from tests.control.broker_without_ray import TWO
from tests.control.test_controller_repair import restart_announcing
from tests.control.test_controller_replication import ON_ONE_NODE, not_answering_once


def assert_built_from_the_metadata(controller: Controller) -> None:
    """The table the controller hands out is the one its metadata gives now."""
    table = controller.routing()
    owners, ranges = controller._routing_of_topics()
    assert (table.owners, table.ranges) == (owners, ranges)


def test_a_router_that_has_the_current_table_is_sent_nothing_until_the_metadata_changes(
        brokers):
    # Given a broker and the routing table a router fetched
    broker = brokers(2)
    table = broker.controller.routing()
    # Then asking again with its version is answered with nothing
    assert broker.controller.routing(table.version) is None
    # When a topic is created
    broker.controller.create_topic("orders", 4, {})
    # Then the same question is answered with a new table that has the topic
    changed = broker.controller.routing(table.version)
    assert changed is not None and changed.version != table.version
    assert changed.partition_count("orders") == 4
    # And that one is current until the next change
    assert broker.controller.routing(changed.version) is None


def test_a_router_announcing_a_kafka_listener_changes_the_table_but_not_its_topics(brokers):
    # Given a broker with a topic, and its routing table
    broker = brokers(2)
    broker.controller.create_topic("orders", 4, {})
    table = broker.controller.routing()
    # When a router with a Kafka listener announces itself
    broker.controller.router_started("tcp://127.0.0.1:1", "127.0.0.1", "127.0.0.1:9092")
    # Then the next table names the listener, with the same topics
    changed = broker.controller.routing(table.version)
    assert changed.kafka_brokers == ("127.0.0.1:9092",)
    assert changed.owners == table.owners


def test_a_shard_restarted_at_a_new_address_changes_the_table(brokers):
    # Given a broker's routing table
    broker = brokers(2)
    table = broker.controller.routing()
    # When a shard's process starts again, at a new address
    restart_announcing(broker, "shard-1")
    # Then the next table has its new address
    changed = broker.controller.routing(table.version)
    assert changed.shard_addresses["shard-1"] != table.shard_addresses["shard-1"]
    assert changed.shard_addresses["shard-1"] == \
        broker.shards.handles["shard-1"].actor.address()


def test_the_table_after_each_change_is_the_one_the_metadata_gives(brokers):
    # Given three shards on one node
    broker = brokers(3, **ON_ONE_NODE)
    controller = broker.controller
    assert_built_from_the_metadata(controller)
    # When topics are created, grown and deleted, a leader fails over and shards are
    # added: after each, the table handed out is the one built from the metadata
    controller.create_topic("orders", 4, {})
    assert_built_from_the_metadata(controller)
    controller.create_topic("t", 1, {}, 3)
    assert_built_from_the_metadata(controller)
    controller.add_partitions("orders", 6)
    assert_built_from_the_metadata(controller)
    leader = controller.routing().owner("t", 0)
    not_answering_once(broker, leader)
    assert [pid.topic for pid, _ in controller.check_leaders()] == ["t"]
    assert controller.routing().owner("t", 0) != leader
    assert_built_from_the_metadata(controller)
    controller.add_shards(1)
    assert_built_from_the_metadata(controller)
    controller.delete_topic("orders")
    assert controller.routing().partition_count("orders") is None
    assert_built_from_the_metadata(controller)


def test_a_change_encoded_by_a_refused_save_still_reaches_the_table(brokers):
    # Given two topics, and a routing table built
    broker = brokers(2)
    controller = broker.controller
    controller.create_topic("a", 1, {})
    controller.create_topic("b", 1, {})
    controller.routing()
    # When a change of topic a is saved together with a bug in topic b, which the save
    # refuses, and then saved again once b is mended (a unchanged since the refusal)
    metadata = controller._metadata
    moved_to = next(s for s in TWO if s != metadata.topics["a"].placement[0])
    metadata.topics["a"].placement[0] = moved_to
    b_shard = metadata.topics["b"].placement[0]
    metadata.topics["b"].placement[0] = "shard-9"
    with pytest.raises(AssertionError, match="unknown shard 'shard-9'"):
        controller._save()
    metadata.topics["b"].placement[0] = b_shard
    controller._save()
    # Then the table has topic a's change
    assert controller.routing().owner("a", 0) == moved_to
    assert_built_from_the_metadata(controller)
