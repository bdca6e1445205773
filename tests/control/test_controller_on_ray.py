"""The controller and its detached shard actors on a real (single, local) Ray: Ray restarts
a killed controller, which adopts the running shards and serves with a new epoch; the
handle rides out the restart and announces its routers again; a leftover shard of
another data dir is replaced; shutdown ends every shard actor. Uses the session's Ray
(tests/conftest.py); each test ends what it started."""

from __future__ import annotations

import ray

from plinth.control.controller_handle import CONTROLLER_NAME, ControllerHandle
from plinth.control.nodes import ray_nodes
from plinth.errors import BrokerError
from plinth.shards.shard_handle import ShardHandle, ShardOptions
from tests.support import wait_until

SHARDS = ["shard-0", "shard-1"]
RESTART_WAIT_S = 60


def start_controller(data_dir) -> ControllerHandle:
    controller = ControllerHandle.create(str(data_dir), len(SHARDS), "always", 5, "DEFAULT")
    report = controller.start()
    assert sorted(report.addresses) == SHARDS and report.not_serving == {}
    return controller


def stop_controller(controller: ControllerHandle) -> None:
    try:
        controller.shutdown(10.0)
    finally:
        controller.kill()
        ShardHandle.kill_all()   # whatever a failed test left


def routing_when_answered(controller: ControllerHandle):
    try:
        return controller.routing()
    except BrokerError:   # restarting: its in-flight call failed
        return None


def no_shard_actor_left() -> bool:
    return all(ShardHandle.find(s) is None for s in SHARDS)


def test_ray_restarts_a_killed_controller_which_adopts_the_running_shards_with_a_new_epoch(
        ray_cluster, tmp_path):
    # Given a controller with two running shards, a topic and a router announced through it
    controller = start_controller(tmp_path / "data")
    try:
        controller.create_topic("t", 2, {})
        controller.router_started("tcp://127.0.0.1:1", "127.0.0.1")
        before = controller.routing()
        # When its process is killed (Ray may restart it)
        ray.kill(ray.get_actor(CONTROLLER_NAME), no_restart=False)
        # Then the same handle gets a routing table from a controller with a new epoch
        after = wait_until(lambda: (r := routing_when_answered(controller)) and
                           r.controller_epoch > before.controller_epoch and r,
                           timeout_s=RESTART_WAIT_S)
        assert after.controller_epoch == before.controller_epoch + 1
        # And the shards were adopted, not restarted: same addresses, all serving
        assert after.shard_addresses == before.shard_addresses
        assert controller.start_report().not_serving == {}
        # And the router announced before the restart is listed again
        assert controller.status().routers == [("tcp://127.0.0.1:1", "127.0.0.1")]
        # And it serves admin calls: the topic is there, a new one can be made
        controller.create_topic("u", 1, {})
        assert sorted(t.name for t in controller.list_topics()) == ["t", "u"]
    finally:
        stop_controller(controller)
    # And its shutdown ended the detached shard actors
    wait_until(no_shard_actor_left, timeout_s=RESTART_WAIT_S)


def test_a_leftover_shard_of_another_data_dir_is_replaced_and_shutdown_ends_the_shards(
        ray_cluster, tmp_path):
    # Given a running detached shard-0 actor of another broker's data dir
    pin = ray_nodes()[0].pin_resource
    other = tmp_path / "other" / "shards" / "shard-0"
    ShardHandle.create(ShardOptions("shard-0", str(other), "always", 5, pin), None)
    assert ShardHandle.find("shard-0").data_dir().result() == str(other.resolve())
    # When a controller on this data dir starts
    controller = start_controller(tmp_path / "data")
    try:
        # Then shard-0 serves this data dir (a new actor under the name)
        for shard_id in SHARDS:
            assert ShardHandle.find(shard_id).data_dir().result() == \
                str((tmp_path / "data" / "shards" / shard_id).resolve())
    finally:
        controller.shutdown(10.0)
        controller.kill()
    # And the shutdown ended every shard actor
    try:
        wait_until(no_shard_actor_left, timeout_s=RESTART_WAIT_S)
    finally:
        ShardHandle.kill_all()
