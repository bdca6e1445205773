"""A controller that replaces one whose process died (Ray restarted it) recovers by itself:
it adopts the shard actors still running (one Ray reports restarting too, and one whose
name stays taken when it would start another), fences the dead one with a new controller
epoch, gives a new leader epoch where a leader waits for one, and a shard of another
data directory is never adopted; shutdown ends every shard actor. Without Ray: real
shard actors reached in process (broker_without_ray.py), which outlive the controller
object as the detached Ray actors outlive its process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import ray.exceptions

from plinth.control.controller import Controller
from plinth.errors import UnavailableError
from plinth.shards.shard_handle import ShardOptions
from tests.control.broker_without_ray import THREE, Broker
from tests.in_process_shards import ONE_NODE, InProcessShards

ON_ONE_NODE = {"allow_replicas_on_one_node": True}


def restart_controller(broker: Broker, start_shard=None) -> Controller:
    """What Ray does after the controller's process died: a new instance on the same data
    dir, told it was restarted; the shards (still running) now announce to it."""
    broker.controller = Controller(str(broker.data_dir), 3,
                                   start_shard=start_shard or broker.shards.start_shard,
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


def names_taken_as_on_ray(shards: InProcessShards, tried: list[str]):
    """A ``start_shard`` that refuses a name a running actor holds, as Ray does
    (ShardHandle.create raises ValueError once SHARD_NAME_WAIT_S ran out); each shard
    it is asked to start is added to ``tried``."""
    def start_shard(options: ShardOptions):
        tried.append(options.shard_id)
        if shards.find_shard(options.shard_id) is not None:
            raise ValueError(f"The name plinth-shard:{options.shard_id} is already taken")
        return shards.start_shard(options)
    return start_shard


def assert_every_shard_adopted_and_told(broker: Broker, controller: Controller, actors: dict,
                                        epoch: int) -> None:
    """Every shard has its running actor and serves, and got its records of ``epoch``."""
    assert {s: h.actor for s, h in broker.shards.handles.items()} == actors
    assert controller.start_report().not_serving == {}
    assert sorted(controller.routing().shard_addresses) == THREE
    assert sorted(controller.shard_stats()) == THREE
    for shard_id in THREE:
        records = [spec.leadership for spec in broker.manifest(shard_id).partitions.values()]
        assert records and {r.controller_epoch for r in records} == {epoch}


@pytest.mark.parametrize("error, tried", [
    (ray.exceptions.ActorUnavailableError("The actor is restarting.", None), []),
    (ray.exceptions.ActorDiedError(), ["shard-1"])],
    ids=["unavailable while ray restarts it", "died before ray restarted it"])
def test_a_restarted_controller_adopts_a_shard_whose_first_call_fails_and_every_shard_after_it(
        tmp_path, error, tried):
    # Given a factor-3 topic, and shard-1 (its process just killed) restarting: the new
    # controller's first call to it fails as Ray reports it, and its name stays taken
    broker = a_broker_with_a_factor_3_topic(tmp_path)
    try:
        actors = {s: h.actor for s, h in broker.shards.handles.items()}
        epoch = broker.metadata_on_disk().controller_epoch
        broker.shards.handles["shard-1"].fail_next("data_dir", error)
        # When the controller's process dies and Ray starts it again
        started: list[str] = []
        controller = restart_controller(broker, names_taken_as_on_ray(broker.shards, started))
        # Then it adopted shard-1 and shard-2 too (it used to start shard-1 anew, which Ray
        # refused, and its recovery ended there: it never called shard-1 or shard-2 again)
        assert_every_shard_adopted_and_told(broker, controller, actors, epoch + 1)
        # And it tried a new actor only for the one Ray said had died (on Ray, a taken
        # name is refused only after SHARD_NAME_WAIT_S, while no election runs)
        assert started == tried
        # And a leader check keeps every leader (all three answer), and acks="all" works
        assert controller.check_leaders() == []
        assert broker.produce("orders", 0, [b"c"], acks=-1) == 2
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
