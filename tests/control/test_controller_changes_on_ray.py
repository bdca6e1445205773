"""The controller's changes (create, delete, alter, grow) on a real Ray while a shard they
need is stopped (SIGSTOP: alive by Ray, answering nothing): each change waits for the
shard on the controller's CHANGE_GROUP thread, so the calls of the actor thread (the
routing table, leader checks, in-sync changes) are answered meanwhile; the changes
still run one at a time, and a change not finished is not visible; a create, though,
first pings the shards and is refused at once when one it needs does not answer
(STATUS_CALL_TIMEOUT_S). Nor does a shard's
restart: the others are told its new address without a long wait for a stopped one.
Uses the session's Ray (tests/conftest.py); each test continues and ends what it
stopped and started."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from plinth import limits, protocol
from plinth.control import placement
from plinth.control.controller_handle import ControllerHandle
from plinth.errors import RequestTimedOutError, TopicExistsError, UnavailableError
from plinth.shards.shard_handle import ShardHandle
from tests.shard_processes import shard_pids
from tests.support import wait_until

SHARDS = ["shard-0", "shard-1"]
CHANGE_WAIT_S = 60   # a change's own bound (CONTROL_CALL_TIMEOUT_S), and no more
ANSWER_S = 10        # an actor-thread call not held up by a stopped shard answers within


@pytest.fixture
def controller(ray_cluster, tmp_path):
    handle = ControllerHandle.create(str(tmp_path / "data"), len(SHARDS), "always", 5, "DEFAULT")
    report = handle.start()
    assert sorted(report.addresses) == SHARDS and report.not_serving == {}
    # Each shard announced itself from its constructor, before start asked its address:
    # this call on the actor thread runs after those announcements, which push the
    # peers to the shard and would wait for one stopped now.
    assert handle.start_report().not_serving == {}
    handle.data_dir = tmp_path / "data"
    try:
        yield handle
    finally:
        try:
            handle.shutdown(10.0)
        finally:
            handle.kill()
            ShardHandle.kill_all()


@contextmanager
def stopped(controller: ControllerHandle, shard_id: str):
    """``shard_id``'s process stopped (SIGSTOP) for the block, then continued."""
    pid = wait_until(lambda: shard_pids(controller.data_dir).get(shard_id), timeout_s=30)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def deleting_behind_stopped_shard(controller: ControllerHandle, topic: str):
    """For the block: a delete of ``topic`` (its future) gone from the routing table and
    waiting for shard-1, stopped, on the change thread; shard-1 continued after."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with stopped(controller, "shard-1"):
            deleting = pool.submit(controller.delete_topic, topic)
            wait_until(lambda: topic not in controller.routing().owners, timeout_s=CHANGE_WAIT_S)
            yield deleting
    finally:
        pool.shutdown(wait=False)


def name_on_both_shards(prefix: str, partitions: range) -> str:
    """A topic name whose ``partitions`` are placed on both shards (rendezvous hashing)."""
    for n in range(1000):
        owners = placement.place_topic(f"{prefix}{n}", partitions.stop, SHARDS)
        if {owners[p] for p in partitions} == set(SHARDS):
            return f"{prefix}{n}"
    raise AssertionError(f"no name {prefix}N has partitions {partitions} on both shards")


def manifest_entries(controller: ControllerHandle, shard_id: str) -> dict:
    """The partitions in ``shard_id``'s manifest (shards/shard_manifest.py), as saved."""
    path = Path(controller.data_dir) / "shards" / shard_id / "manifest.json"
    return json.loads(path.read_text())["partitions"] if path.exists() else {}


def topic_ids_on_shards(controller: ControllerHandle, topic: str) -> dict[str, str]:
    """"<topic>/<partition>" -> its topic id, of every shard's manifest."""
    return {key: entry["topic_id"] for shard_id in SHARDS
            for key, entry in manifest_entries(controller, shard_id).items()
            if key.split("/")[0] == topic}


def routing_within(controller: ControllerHandle, timeout_s: float):
    """The routing table, or RequestTimedOutError if the actor thread does not answer
    within ``timeout_s`` (the handle's own bound is CONTROL_CALL_TIMEOUT_S)."""
    return controller._call(lambda actor: actor.routing.remote(None), "routing", timeout_s)


def test_a_delete_waiting_for_a_stopped_shard_holds_up_no_routing_table_or_leader_check(
        controller):
    # Given a topic with a partition on each shard
    t = name_on_both_shards("t", range(2))
    controller.create_topic(t, 2, {})
    # When it is deleted while shard-1 answers nothing / Then the routing table drops it
    # at once (the metadata goes first)
    with deleting_behind_stopped_shard(controller, t) as deleting:
        # And a leader check is answered while the delete still waits for shard-1
        assert controller.check_leaders() == []
        assert not deleting.done(), "the delete did not wait for the stopped shard"
    # And once shard-1 runs again, the delete finishes
    deleting.result(timeout=CHANGE_WAIT_S)
    assert [t.name for t in controller.list_topics()] == []


def test_a_create_placed_on_a_stopped_shard_is_refused_within_the_status_wait_naming_it(
        controller):
    # Given a topic name with a partition on each shard (factor 1: one node)
    new = name_on_both_shards("new", range(2))
    with stopped(controller, "shard-1"):
        # When it is created while shard-1 answers nothing
        # Then it is refused once shard-1 missed a ping of STATUS_CALL_TIMEOUT_S, not
        # after the change's CHANGE_SHARD_WAIT_S, naming the shard, why, and what to do
        started_s = time.monotonic()
        with pytest.raises(UnavailableError,
                           match=rf"topic '{new}' was not created: 1 partition of it \(1\) "
                                 rf"would be on shard-1, which is down \(shard-1 did not "
                                 rf"answer within {limits.STATUS_CALL_TIMEOUT_S:g} s.*plinth "
                                 rf"shards move"):
            controller.create_topic(new, 2, {})
        assert time.monotonic() - started_s < limits.CHANGE_SHARD_WAIT_S
        # And the routing table and the list are answered, without it
        assert new not in controller.routing().owners
        assert [t.name for t in controller.list_topics()] == []
    # And no shard opened a partition of it; once shard-1 runs again, it is created
    assert topic_ids_on_shards(controller, new) == {}
    assert controller.create_topic(new, 2, {}).partitions == 2
    assert len(controller.routing().owners[new]) == 2


def test_a_delete_and_a_create_of_the_same_name_queued_behind_a_stopped_shard_run_in_order(
        controller):
    # Given a topic with a partition on each shard
    t = name_on_both_shards("t", range(2))
    controller.create_topic(t, 2, {})
    old_ids = topic_ids_on_shards(controller, t)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        with stopped(controller, "shard-1"):
            # When it is deleted and created again while shard-1 answers nothing
            deleting = pool.submit(controller.delete_topic, t)
            wait_until(lambda: t not in controller.routing().owners, timeout_s=CHANGE_WAIT_S)
            creating = pool.submit(controller.create_topic, t, 2, {})
        # Then both finish once it runs again, in the order they were asked
        deleting.result(timeout=CHANGE_WAIT_S)
        assert creating.result(timeout=CHANGE_WAIT_S).partitions == 2
        # And both shards hold the new topic's partition (the old delete did not
        # remove it after the create opened it), under one new topic id
        new_ids = topic_ids_on_shards(controller, t)
        assert sorted(new_ids) == sorted(old_ids) == [f"{t}/0", f"{t}/1"]
        assert len(set(new_ids.values())) == 1
        assert set(new_ids.values()).isdisjoint(old_ids.values())
        described = controller.describe_topic(t)
        assert [(p.partition, p.shard, p.end_offset) for p in described.partition_info] == \
            [(0, controller.routing().owners[t][0], 0), (1, controller.routing().owners[t][1], 0)]
    finally:
        pool.shutdown()


def test_an_alter_waiting_for_a_stopped_shard_holds_up_no_routing_table(controller):
    # Given a topic with a partition on each shard
    t = name_on_both_shards("t", range(2))
    controller.create_topic(t, 2, {})
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with stopped(controller, "shard-1"):
            # When it is altered while shard-1 answers nothing (shard-0 took the change)
            altering = pool.submit(controller.alter_topic, t, {"retention.ms": "60000"})
            wait_until(lambda: any(entry["config"].get("retention.ms") == "60000"
                                   for entry in manifest_entries(controller, "shard-0").values()),
                       timeout_s=CHANGE_WAIT_S)
            # Then the routing table and a leader check are answered meanwhile
            assert len(controller.routing().owners[t]) == 2
            assert controller.check_leaders() == []
            assert not altering.done(), "the alter did not wait for the stopped shard"
        # And it takes effect once shard-1 runs again
        assert altering.result(timeout=CHANGE_WAIT_S).config["retention.ms"] == "60000"
    finally:
        pool.shutdown()


def test_a_growth_waiting_for_a_stopped_shard_is_invisible_until_it_finishes(controller):
    # Given a topic of 2 partitions whose partitions 2 and 3 would be on both shards
    t = name_on_both_shards("t", range(2, 4))
    controller.create_topic(t, 2, {})
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with stopped(controller, "shard-1"):
            # When it is grown to 4 while shard-1 answers nothing (shard-0 opened its new one)
            growing = pool.submit(controller.add_partitions, t, 4)
            wait_until(lambda: any(key.startswith(f"{t}/") and int(key.split("/")[1]) >= 2
                                   for key in manifest_entries(controller, "shard-0")),
                       timeout_s=CHANGE_WAIT_S)
            # Then the routing table is answered meanwhile, with the old count
            assert len(controller.routing().owners[t]) == 2
            assert not growing.done(), "the growth did not wait for the stopped shard"
        # And it takes effect once shard-1 runs again
        assert growing.result(timeout=CHANGE_WAIT_S).partitions == 4
        assert len(controller.routing().owners[t]) == 4
    finally:
        pool.shutdown()


def test_a_restarted_shard_is_routed_at_once_while_another_shard_is_stopped(controller):
    old_address = controller.routing().shard_addresses["shard-0"]
    with stopped(controller, "shard-1"):
        # When shard-0's process is killed while shard-1 answers nothing (Ray restarts
        # shard-0, which announces its new address)
        os.kill(shard_pids(controller.data_dir)["shard-0"], signal.SIGKILL)
        # Then the routing table gets its new address, every call answered at once:
        # telling shard-1 of it does not wait out CONTROL_CALL_TIMEOUT_S on the actor thread
        new_address = wait_until(
            lambda: (address := routing_within(controller, ANSWER_S).shard_addresses.get(
                "shard-0")) not in (None, old_address) and address, timeout_s=CHANGE_WAIT_S)
    # And every address the controller routes to is on loopback
    assert new_address.startswith("tcp://127.0.0.1:")
    assert all(a.startswith("tcp://127.0.0.1:")
               for a in controller.routing().shard_addresses.values())


def test_an_alter_a_stopped_shard_does_not_answer_is_saved_and_reaches_it_when_it_runs(
        controller):
    # Given a topic with a partition on each shard
    t = name_on_both_shards("t", range(2))
    controller.create_topic(t, 2, {})
    with stopped(controller, "shard-1"):
        # When it is altered while shard-1 answers nothing
        # Then the controller says the config is saved but shard-1 has not applied it
        with pytest.raises(RequestTimedOutError,
                           match=rf"topic '{t}' has its new config \(saved\), but not every "
                                 rf"shard applied it yet: shard-1 did not answer "
                                 rf"alter_partitions"):
            controller.alter_topic(t, {"retention.ms": "60000"})
        # And the topic has it: describe (and a restarted shard) see the new config
        assert controller.describe_topic(t).config["retention.ms"] == "60000"
    # And once shard-1 runs again, it applies it too
    wait_until(lambda: all(entry["config"].get("retention.ms") == "60000"
                           for shard_id in SHARDS
                           for key, entry in manifest_entries(controller, shard_id).items()
                           if key.split("/")[0] == t), timeout_s=CHANGE_WAIT_S)


def test_a_change_that_waited_past_its_callers_deadline_is_not_run_at_all(
        controller, monkeypatch):
    # Given a delete waiting for a stopped shard on the change thread
    t = name_on_both_shards("t", range(2))
    controller.create_topic(t, 2, {})
    with deleting_behind_stopped_shard(controller, t) as deleting:
        # When a create queued behind it outlasts its caller's timeout
        monkeypatch.setattr(limits, "CONTROL_CALL_TIMEOUT_S", 2.0)
        with pytest.raises(RequestTimedOutError, match="did not answer create_topic "
                                                       "within 2.0 s"):
            controller.create_topic("late", 1, {})
        monkeypatch.undo()
    deleting.result(timeout=CHANGE_WAIT_S)
    # Then, once it comes to run, it is dropped: a change after it (changes run in
    # order) finds no topic "late"
    controller.create_topic("after", 1, {})
    assert [topic.name for topic in controller.list_topics()] == ["after"]
