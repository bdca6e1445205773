"""The controller and its detached shard actors on a real (single, local) Ray: Ray restarts
a killed controller, which adopts the running shards and serves with a new epoch; the
handle rides out the restart and announces its routers again (a call the controller
died in fails retriably, or is repeated by a handle found by name); a leftover shard of
another data dir is replaced; shutdown ends every shard actor. Uses the session's Ray
(tests/conftest.py); each test ends what it started."""

from __future__ import annotations

import concurrent.futures
import fcntl
import time
from pathlib import Path

import pytest
import ray

from plinth.control.controller_handle import CONTROLLER_NAME, QUERY_GROUP, ControllerHandle
from plinth.control.nodes import ray_nodes
from plinth.errors import BrokerError, UnavailableError
from plinth.shards.actor import ShardActor
from plinth.shards.shard_handle import ShardHandle, ShardOptions, shard_actor_name
from tests.support import wait_until

SHARDS = ["shard-0", "shard-1"]
RESTART_WAIT_S = 60
STAND_IN_NAMESPACE = "plinth-handle-tests"


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


def status_when_answered(controller: ControllerHandle):
    try:
        return controller.status()
    except UnavailableError:
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


def stand_in_controller(**options):
    """A Ray actor that answers ``status`` as the controller would, but the first
    instance only after a long while (a marker file says the call started), so that a
    test can kill it in the middle of a call; an instance Ray restarted answers at once.
    (Defined here so that Ray ships the class by value: workers cannot import tests.)"""

    class StandInController:
        def __init__(self, started_marker: str):
            self._started_marker = Path(started_marker)

        def status(self) -> str:
            if not ray.get_runtime_context().was_current_actor_reconstructed:
                self._started_marker.touch()
                time.sleep(RESTART_WAIT_S)
            return "answered"

        def shutdown(self, grace_period_s: float) -> None:
            return None

    return ray.remote(concurrency_groups={QUERY_GROUP: 1})(StandInController).options(
        max_restarts=1, **options)


def actor_gone(actor) -> bool:
    try:
        ray.get(actor.shutdown.remote(0.0), timeout=RESTART_WAIT_S)
    except ray.exceptions.RayActorError:
        return True
    return False


def status_in_a_thread(controller: ControllerHandle) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(controller.status)
    pool.shutdown(wait=False)
    return future


def test_a_handle_that_has_the_current_routing_table_gets_it_back_until_a_change(
        ray_cluster, tmp_path):
    # Given a controller, and the routing table a router fetched through its handle
    controller = start_controller(tmp_path / "data")
    try:
        table = controller.routing()
        # Then fetching again with it gives that very table (the controller sent none)
        assert controller.routing(table) is table
        # And after a topic is created, a new table with it
        controller.create_topic("t", 2, {})
        changed = controller.routing(table)
        assert changed is not table and changed.partition_count("t") == 2
    finally:
        stop_controller(controller)


def test_a_call_the_controller_dies_in_fails_retriably_and_the_handle_serves_its_restart(
        ray_cluster, tmp_path):
    # Given the server's handle of a controller in the middle of a status call
    actor = stand_in_controller().remote(str(tmp_path / "m"))
    controller = ControllerHandle(actor)
    call = status_in_a_thread(controller)
    try:
        wait_until((tmp_path / "m").exists, timeout_s=RESTART_WAIT_S)
        # When the controller's process dies (Ray restarts it)
        ray.kill(actor, no_restart=False)
        # Then the call fails at once, as a retriable UnavailableError that says why
        with pytest.raises(UnavailableError, match="died or was unreachable during status.*retry"):
            call.result(timeout=RESTART_WAIT_S / 2)
        # And the same handle reaches the restarted controller (a call sent before the
        # caller learnt of the death may fail the same way)
        assert wait_until(lambda: status_when_answered(controller),
                          timeout_s=RESTART_WAIT_S) == "answered"
    finally:
        ray.kill(actor)


def test_a_handle_found_by_name_repeats_the_call_on_the_restarted_controller(
        ray_cluster, tmp_path):
    # Given a handle found by name (a router's, a shard's) in the middle of a status call
    actor = stand_in_controller(name=CONTROLLER_NAME, namespace=STAND_IN_NAMESPACE).remote(
        str(tmp_path / "m"))
    controller = ControllerHandle.find(STAND_IN_NAMESPACE)
    call = status_in_a_thread(controller)
    try:
        wait_until((tmp_path / "m").exists, timeout_s=RESTART_WAIT_S)
        # When the controller's process dies (Ray restarts it)
        ray.kill(actor, no_restart=False)
        # Then the call is made again on the restarted controller, and answered
        assert call.result(timeout=RESTART_WAIT_S / 2) == "answered"
    finally:
        ray.kill(actor)


def test_a_shutdown_the_controller_is_already_gone_for_says_so_instead_of_failing(
        ray_cluster, tmp_path):
    # Given a controller that answers a shutdown
    actor = stand_in_controller().remote(str(tmp_path / "m"))
    controller = ControllerHandle(actor)
    assert controller.shutdown(1.0) is True
    # When its process ends for good, as a SIGTERM to the whole process group ends it
    # (ray.kill only asks for that: a call sent before the kill lands is still answered)
    ray.kill(actor, no_restart=True)
    wait_until(lambda: actor_gone(actor), timeout_s=RESTART_WAIT_S)
    # Then the server's shutdown learns that nothing was flushed through it, at once,
    # instead of an error that would end the server with a failure status
    started_s = time.monotonic()
    assert controller.shutdown(1.0) is False
    assert time.monotonic() - started_s < RESTART_WAIT_S / 2


def test_kill_all_ends_every_shard_actor_of_the_namespace_and_no_other(ray_cluster, tmp_path):
    # Given two shard actors in this namespace and one in another broker's
    pin = ray_nodes()[0].pin_resource
    for shard_id in SHARDS:
        ShardHandle.create(ShardOptions(shard_id, str(tmp_path / shard_id), "always", 5, pin), None)
    elsewhere = ray.remote(ShardActor).options(
        name="plinth-shard:shard-0", namespace=STAND_IN_NAMESPACE, lifetime="detached",
        num_cpus=0).remote("shard-0", str(tmp_path / "elsewhere"))
    try:
        assert ray.get(elsewhere.data_dir.remote(), timeout=RESTART_WAIT_S)
        # When a server that stops (its controller gone) ends this namespace's shards
        ended = ShardHandle.kill_all()
        # Then both are ended, and the other namespace's shard still runs
        assert sorted(ended) == [f"plinth-shard:{s}" for s in SHARDS]
        wait_until(no_shard_actor_left, timeout_s=RESTART_WAIT_S)
        assert ray.get(elsewhere.data_dir.remote(), timeout=RESTART_WAIT_S) == \
            str((tmp_path / "elsewhere").resolve())
    finally:
        ray.kill(elsewhere)


def test_the_nodes_say_how_many_cpus_ray_schedules_on_each(ray_cluster):
    # Given the session's Ray, one node started with num_cpus=2 (tests/conftest.py)
    alive = [node for node in ray_nodes() if node.alive]
    # Then the node reports Ray's CPUs, from which a new data dir's shard count comes
    assert [node.cpus for node in alive] == [int(ray.cluster_resources()["CPU"])] == [2]


def test_a_shard_actor_ray_will_not_restart_is_started_again_by_the_controller(
        ray_cluster, tmp_path):
    # Given a controller with two running shards and a topic on both
    controller = start_controller(tmp_path / "data")
    try:
        controller.create_topic("t", 2, {})
        before = next(s for s in controller.status().shards if s.shard_id == "shard-1")
        # When shard-1's actor is ended for good (as after Ray's restarts ran out)
        ray.kill(ray.get_actor(shard_actor_name("shard-1")), no_restart=True)
        # Then status shows it DOWN with its schedule, and then serving again in a new
        # process, with no restart of the broker
        reasons = []

        def serving_again() -> bool:
            status = status_when_answered(controller)
            shard = status and next(s for s in status.shards if s.shard_id == "shard-1")
            if shard and not shard.alive:
                reasons.append(shard.down_reason)
            return bool(shard and shard.alive and shard.pid != before.pid)

        wait_until(serving_again, timeout_s=RESTART_WAIT_S, interval_s=0.5,
                   explain=lambda: f"down reasons seen: {sorted(set(reasons))}")
        assert any(r.startswith("restarting: died 1 time") for r in reasons)
        assert ShardHandle.find("shard-1") is not None
        assert "shard-1" in controller.routing().shard_addresses
    finally:
        stop_controller(controller)


def shard_1(status):
    return next(s for s in status.shards if s.shard_id == "shard-1")


def locked_by_us(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:   # the killed shard's process has not let go yet
        return False


def test_status_answers_promptly_while_a_revived_shards_new_actor_waits_in_its_constructor(
        ray_cluster, tmp_path):
    # Given a controller with two running shards
    controller = start_controller(tmp_path / "data")
    lock = open(tmp_path / "data" / "shards" / "shard-1" / ".lock", "a+")
    try:
        # When shard-1's actor is ended for good, and its directory then locked by
        # another process (this one), so that its new actor waits in its constructor
        ray.kill(ray.get_actor(shard_actor_name("shard-1")), no_restart=True)
        wait_until(lambda: locked_by_us(lock), timeout_s=RESTART_WAIT_S)
        wait_until(lambda: shard_1(controller.status()).down_reason.endswith(
                       ", a new actor is starting"),
                   timeout_s=RESTART_WAIT_S, interval_s=0.25)
        # Then a status call answers within a few seconds (it neither starts nor waits
        # for that actor), saying shard-1 is DOWN and why
        started_s = time.monotonic()
        shard = shard_1(controller.status())
        assert time.monotonic() - started_s < 3.0
        assert not shard.alive and shard.down_reason.startswith("restarting: died 1 time")
        # And once the lock is let go, the new actor serves the shard
        lock.close()
        wait_until(lambda: shard_1(controller.status()).alive, timeout_s=RESTART_WAIT_S,
                   interval_s=0.25)
    finally:
        lock.close()
        stop_controller(controller)
