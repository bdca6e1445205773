"""A controller that replaces one whose process died (Ray restarted it) recovers by itself:
it adopts the shard actors still running, fences the dead one with a new controller
epoch, gives a new leader epoch where a leader waits for one, and a shard of another
data directory is never adopted; shutdown ends every shard actor. Without Ray: real
shard actors reached in process (broker_without_ray.py), which outlive the controller
object as the detached Ray actors outlive its process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from plinth.control.controller import Controller
from plinth.errors import UnavailableError
from plinth.shards.shard_handle import ShardOptions
from tests.control.broker_without_ray import THREE, Broker
from tests.in_process_shards import ONE_NODE, InProcessShards

ON_ONE_NODE = {"allow_replicas_on_one_node": True}


def restart_controller(broker: Broker) -> Controller:
    """What Ray does after the controller's process died: a new instance on the same data
    dir, told it was restarted; the shards (still running) now announce to it."""
    broker.controller = Controller(str(broker.data_dir), 3, start_shard=broker.shards.start_shard,
                                   find_shard=broker.shards.find_shard, nodes=lambda: ONE_NODE,
                                   restarted=lambda: True, **ON_ONE_NODE)
    broker.shards.announce_to = broker.controller
    return broker.controller


def a_broker_with_a_factor_3_topic(tmp_path: Path) -> Broker:
    broker = Broker(tmp_path / "data", 3, ONE_NODE, **ON_ONE_NODE)
    broker.controller.start()
    broker.controller.create_topic("orders", 2, {}, 3)
    assert broker.produce("orders", 0, [b"a", b"b"], acks=-1) == 0
    return broker


def test_a_restarted_controller_adopts_the_running_shards_and_fences_with_a_new_epoch(tmp_path):
    # Given a broker with a factor-3 topic holding records
    broker = a_broker_with_a_factor_3_topic(tmp_path)
    try:
        actors = {s: h.actor for s, h in broker.shards.handles.items()}
        addresses = dict(broker.controller.routing().shard_addresses)
        epoch = broker.metadata_on_disk().controller_epoch
        # When the controller's process dies and Ray starts it again
        controller = restart_controller(broker)
        # Then it adopted every running shard actor (no new one: same actors, addresses)
        assert {s: h.actor for s, h in broker.shards.handles.items()} == actors
        assert controller.routing().shard_addresses == addresses
        assert controller.start_report().not_serving == {}
        # And it took a new controller epoch, saved, in its routing table and in every
        # record each shard holds (so a record of the dead controller is ignored)
        assert broker.metadata_on_disk().controller_epoch == epoch + 1
        assert controller.routing().controller_epoch == epoch + 1
        for shard_id in THREE:
            records = [spec.leadership for spec in broker.manifest(shard_id).partitions.values()]
            assert records and {r.controller_epoch for r in records} == {epoch + 1}
        # And the partitions serve as before: the records are there, and more are taken
        assert broker.produce("orders", 0, [b"c"], acks=-1) == 2
        info = controller.describe_topic("orders").partition_info[0]
        assert (info.end_offset, info.high_watermark) == (3, 3)
    finally:
        broker.shards.stop_all()


def test_a_restarted_controller_elects_anew_where_a_leader_restarted_while_it_was_dead(tmp_path):
    # Given a factor-3 topic, partition 0 led by some shard in leader epoch 0
    broker = a_broker_with_a_factor_3_topic(tmp_path)
    try:
        leader = broker.owner("orders", 0)
        record = broker.metadata_on_disk().topics["orders"].leadership[0]
        # When that shard restarts while the controller is dead (its announcement is lost:
        # it told the dead instance), and then Ray restarts the controller
        handle = broker.shards.handles[leader]
        handle._announce_to = None
        handle.restart()
        controller = restart_controller(broker)
        # Then partition 0 has a new leader epoch (the restarted shard never leads again in
        # the epoch it led), saved, and its leader leads it
        now = broker.metadata_on_disk().topics["orders"].leadership[0]
        assert now.leader_epoch > record.leader_epoch and now.leader
        stats = broker.shards.handles[now.leader].stats().result()
        assert stats["replication"][("orders", 0)]["role"] == "leader"
        # And it takes acks="all" records again
        assert broker.produce("orders", 0, [b"c"], acks=-1) == 2
        assert controller.start_report().not_serving == {}
    finally:
        broker.shards.stop_all()


def test_a_running_shard_of_another_data_dir_is_ended_and_started_anew_not_adopted(
        tmp_path, caplog):
    # Given a running shard-0 actor that serves another broker's directory (a leftover
    # of an earlier broker in the same Ray namespace)
    shards = InProcessShards()
    other = tmp_path / "other" / "shards" / "shard-0"
    leftover = shards.start_shard(ShardOptions("shard-0", str(other), "always", 5,
                                               "node:127.0.0.1"))
    # When a controller on this data dir starts its shards
    controller = Controller(str(tmp_path / "data"), 2, start_shard=shards.start_shard,
                            find_shard=shards.find_shard, nodes=lambda: ONE_NODE)
    shards.announce_to = controller
    try:
        with caplog.at_level(logging.WARNING, logger="plinth.control.shard_set"):
            report = controller.start()
        # Then the leftover was ended, said so, and a new shard-0 serves this data dir
        assert shards.find_shard("shard-0") is not leftover
        with pytest.raises(UnavailableError):
            leftover.data_dir().result()
        assert "another broker's leftover" in caplog.text and str(other) in caplog.text
        assert shards.handles["shard-0"].data_dir().result() == \
            str((tmp_path / "data" / "shards" / "shard-0").resolve())
        assert sorted(report.addresses) == ["shard-0", "shard-1"]
    finally:
        shards.stop_all()
        leftover.stop()


def test_shutdown_ends_every_shard_actor(tmp_path):
    # Given a broker with three running shards
    broker = a_broker_with_a_factor_3_topic(tmp_path)
    # When the controller shuts down
    broker.controller.shutdown(5.0)
    # Then no shard actor runs any more (they are detached: nothing else would end them)
    assert [s for s in THREE if broker.shards.find_shard(s) is not None] == []
