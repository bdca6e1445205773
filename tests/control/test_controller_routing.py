"""The controller's routing table (``Controller.routing``): its topics' part is built
again only after the metadata changed, and a router that has the current table is
sent nothing; a router that stopped refreshing it (killed, its node lost) is left
out of the Kafka brokers and of status. Real shard actors reached in process, on a
real disk (broker_without_ray.py); the routers' refreshes are calls as their
ControllerHandle makes them, on a clock the tests step."""

from __future__ import annotations

import pytest

from plinth import limits
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


A = ("tcp://127.0.0.1:7400", "127.0.0.1", "127.0.0.1:9092")
B = ("tcp://127.0.0.1:7401", "127.0.0.1", "127.0.0.1:9093")


class SteppedClock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def with_stepped_clock(controller: Controller) -> SteppedClock:
    clock = SteppedClock()
    controller._monotonic_s = clock
    controller._router_clock_ticked_s = clock.now_s
    return clock


def refresh(controller: Controller, *routers) -> tuple[str, ...]:
    """One routing refresh from the process of ``routers``; the Kafka brokers named."""
    return controller.routing(None, tuple(routers)).kafka_brokers


def status_routers(controller: Controller) -> list[str]:
    return [listen for listen, _ in controller.status().routers]


def test_a_router_that_stops_refreshing_is_no_longer_named_to_kafka_clients_nor_in_status(brokers):
    # Given two routers with Kafka listeners, each refreshing its routing table
    controller = brokers(1).controller
    clock = with_stepped_clock(controller)
    for router in (A, B):
        controller.router_started(*router)
    assert refresh(controller, A) == ("127.0.0.1:9092", "127.0.0.1:9093")
    # When B is killed (no router_stopped) and A goes on refreshing every second
    for _ in range(int(limits.ROUTER_SILENT_S_MAX)):
        clock.now_s += limits.ROUTING_REFRESH_INTERVAL_S
        assert refresh(controller, A) == ("127.0.0.1:9092", "127.0.0.1:9093")
    clock.now_s += limits.ROUTING_REFRESH_INTERVAL_S
    # Then once B was silent for longer than ROUTER_SILENT_S_MAX it is left out
    assert refresh(controller, A) == ("127.0.0.1:9092",)
    assert status_routers(controller) == [A[0]]
    # And a refresh from B (it was only stopped, SIGSTOP) names it again
    assert refresh(controller, B) == ("127.0.0.1:9092", "127.0.0.1:9093")
    assert status_routers(controller) == [A[0], B[0]]


def test_routers_are_not_taken_for_silent_when_the_controller_itself_was_held_up(brokers):
    # Given two routers refreshing
    controller = brokers(1).controller
    clock = with_stepped_clock(controller)
    refresh(controller, A)
    refresh(controller, B)
    # When the controller's thread answers nothing for 60 s (a change waiting for a
    # stopped shard), then A's queued refresh is answered first
    clock.now_s += 60
    # Then B, whose refresh waits behind A's, is still named
    assert refresh(controller, A) == ("127.0.0.1:9092", "127.0.0.1:9093")


def test_a_router_that_says_it_stops_is_left_out_at_once(brokers):
    controller = brokers(1).controller
    refresh(controller, A, B)
    controller.router_stopped(B[0])
    assert refresh(controller, A) == ("127.0.0.1:9092",)


def test_a_restarted_controller_learns_the_routers_from_their_next_refresh(brokers):
    # Given a controller that never heard router_started (Ray restarted it)
    controller = brokers(1).controller
    # Then a router's refresh registers it
    assert refresh(controller, A) == ("127.0.0.1:9092",)
    assert status_routers(controller) == [A[0]]
