"""ShardSet: shards pinned to the least loaded alive node, addresses as the shards announce
them (or as a restarting one answers once Ray has it back); through the controller, on
real shard actors reached in process."""

from __future__ import annotations

import ray.exceptions

from plinth.control.nodes import Node
from tests.control.broker_without_ray import Broker
from tests.in_process_shards import ONE_NODE

def test_new_shards_go_to_the_alive_node_with_the_fewest_and_stay_pinned_there(brokers):
    # Given two alive nodes and a dead one, and a broker of three shards
    nodes = [Node("a", "10.0.0.1", True, "plinth-node:a"), Node("b", "10.0.0.2", True, "plinth-node:b"),
             Node("c", "10.0.0.3", False, "node:10.0.0.3")]
    broker = brokers(3, nodes)
    pins = {s: h.options.node_resource for s, h in broker.shards.handles.items()}
    assert pins == {"shard-0": "plinth-node:a", "shard-1": "plinth-node:b",
                    "shard-2": "plinth-node:a"}
    # When a shard is added
    broker.controller.add_shards(1)
    # Then it goes to node b (fewer shards), never to the dead node, and the pins are kept
    assert broker.shards.handles["shard-3"].options.node_resource == "plinth-node:b"
    assert broker.metadata_on_disk().shard_nodes == {**pins, "shard-3": "plinth-node:b"}
    # And the status lists the nodes as given
    assert broker.controller.status().nodes == [("a", "10.0.0.1", True), ("b", "10.0.0.2", True),
                                                ("c", "10.0.0.3", False)]


def test_a_restarted_shard_announces_its_new_address_and_the_routing_table_follows(brokers):
    # Given a running broker
    broker = brokers(2)
    old = broker.address("shard-0")
    # When Ray restarts a shard actor (a new process, a new port)
    broker.shards.handles["shard-0"].restart()
    # Then the routing table has the address it announced
    new = broker.address("shard-0")
    assert new != old and new == broker.shards.handles["shard-0"].actor.address()


def test_a_shard_that_fails_to_start_is_reported_not_serving_with_why_until_it_announces_itself(tmp_path):
    # Given a broker whose shard-1 dies as it starts
    broker = Broker(tmp_path / "data", 2, ONE_NODE)
    broker.shards.when_started("shard-1", lambda handle: handle.fail_next(
        "address", ray.exceptions.ActorDiedError()))
    try:
        # When the controller starts its shards
        report = broker.controller.start()
        # Then shard-0 serves and shard-1 is reported not serving, with why
        assert list(report.addresses) == ["shard-0"]
        assert list(report.not_serving) == ["shard-1"] and "shard-1" in report.not_serving["shard-1"]
        # And when Ray restarts shard-1 and it announces itself, every shard serves
        broker.shards.handles["shard-1"].restart()
        report = broker.controller.start_report()
        assert report.not_serving == {} and sorted(report.addresses) == ["shard-0", "shard-1"]
    finally:
        broker.shards.stop_all()


def test_a_shard_ray_reports_restarting_at_start_is_asked_again_and_serves(tmp_path):
    # Given a broker whose shard-1 is restarting when the controller first asks its
    # address (Ray answers that call with ActorUnavailableError, at once)
    broker = Broker(tmp_path / "data", 2, ONE_NODE)
    broker.shards.when_started("shard-1", lambda handle: handle.fail_next(
        "address", ray.exceptions.ActorUnavailableError("The actor is restarting.", None)))
    try:
        # When the controller starts its shards
        report = broker.controller.start()
        # Then it asked again, and both shards serve, shard-1 at the address it answered
        assert report.not_serving == {} and sorted(report.addresses) == ["shard-0", "shard-1"]
        assert report.addresses["shard-1"] == broker.shards.handles["shard-1"].actor.address()
    finally:
        broker.shards.stop_all()
