"""The controller's resend of leadership records (Controller._resend_records): a shard that
missed a push of its records (it did not answer: down, stopped, slow) or that asked for an
in-sync change with a stale record gets every record it holds again once it answers a
leader check. Without it a leader deposed while it was SIGSTOPped never learns it was: it
does not restart, so it never announces itself. Real shard actors in process on a real
disk (broker_without_ray.py); a failed call is injected at the shard handle, the
controller's neighbour."""

from __future__ import annotations

import logging
import shutil
import time
from pprint import pformat

import pytest
import ray.exceptions

from plinth import limits
from plinth.errors import FencedLeaderEpochError, RequestTimedOutError, StorageError
from plinth.shards.shard_handle import PartitionId
from tests.control.test_controller_revivals import new_actor_still_in_its_constructor
from tests.support import wait_until

ON_ONE_NODE = {"allow_replicas_on_one_node": True}
PARTITION = PartitionId("t", 0)
CATCH_UP_WAIT_S = 30


def held_record(broker, shard_id: str):
    """The partition's record as the shard's manifest holds it (what it acts on)."""
    return broker.manifest(shard_id).partitions[PARTITION].leadership


def controller_record(broker):
    return broker.metadata_on_disk().topics["t"].leadership[0]


def test_a_leader_deposed_while_silent_gets_its_new_record_once_it_answers_again(brokers):
    # Given a factor-3 topic whose leader misses a ping (as a SIGSTOPped shard does)
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    old_leader = controller_record(broker).leader
    broker.shards.handles[old_leader].fail_next("address", ray.exceptions.ActorDiedError())
    # When the controller checks the leaders, the leader is replaced while it is silent
    [(_, new_leader)] = broker.controller.check_leaders()
    deposed = controller_record(broker)
    # Then the silent shard still holds the record in which it leads
    assert new_leader != old_leader
    assert held_record(broker, old_leader).leader == old_leader
    # When it answers the next check
    assert broker.controller.check_leaders() == []
    # Then it holds the record that deposed it, so it can neither append nor acknowledge
    assert held_record(broker, old_leader) == deposed


def test_a_replica_whose_push_failed_gets_the_record_at_the_next_check_and_only_once(brokers):
    # Given a factor-3 topic, and a follower whose next set_leadership call fails
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    record = controller_record(broker)
    follower = record.replicas[2]
    slow = RequestTimedOutError(f"{follower} did not answer set_leadership within 0.75 s")
    broker.shards.handles[follower].fail_next("set_leadership", slow)
    # When the leader shrinks the in-sync set to drop that follower (the push to it fails)
    changed = broker.controller.alter_in_sync(record.leader, PARTITION, record.leader_epoch,
                                              record.partition_epoch, record.in_sync[:2])
    assert held_record(broker, follower) == record
    # Then the next check sends it the new record
    assert broker.controller.check_leaders() == []
    assert held_record(broker, follower) == changed
    # And the one after sends nothing: the resend list was emptied (a second push would
    # raise ControllerCrash, which nothing in the controller catches)
    broker.shards.handles[follower].crash_controller_at("set_leadership")
    assert broker.controller.check_leaders() == []


def test_a_leader_asking_with_a_stale_record_is_refused_and_sent_the_current_one(brokers):
    # Given a factor-3 topic whose in-sync set changed at the leader's request, the answer
    # lost on the way back (the leader's manifest still holds the record before it)
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    record = controller_record(broker)
    changed = broker.controller.alter_in_sync(record.leader, PARTITION, record.leader_epoch,
                                              record.partition_epoch, record.in_sync[:2])
    assert held_record(broker, record.leader) == record
    # When the leader asks again with the record it holds (an older partition epoch)
    with pytest.raises(FencedLeaderEpochError):
        broker.controller.alter_in_sync(record.leader, PARTITION, record.leader_epoch,
                                        record.partition_epoch, record.in_sync[:1])
    # Then the controller's record is unchanged, and the next check sends it to the leader
    assert controller_record(broker) == changed
    assert broker.controller.check_leaders() == []
    assert held_record(broker, record.leader) == changed


# --- Peers' addresses: resent to a shard that missed them --------------------------------

def peers_held(broker, shard_id: str) -> dict[str, str]:
    """Where the shard believes each shard listens (what its fetches to leaders use)."""
    return broker.shards.handles[shard_id].actor._server._replication._fetcher._addresses


def restart_missing_the_peers(broker, shard_id: str) -> None:
    """The shard's process restarts at a new address and announces itself, but the push
    of the peers' addresses to it fails: Ray had not yet seen the restart, and answered
    ActorUnavailableError (seen in the repair e2e flake: the calls after it reached the
    shard, so it held its records, but it never learnt where its leaders listen)."""
    handle = broker.shards.handles[shard_id]
    handle.restart()
    handle.fail_next("set_peers", ray.exceptions.ActorUnavailableError(
        f"{shard_id} is restarting", None))
    broker.controller.shard_started(shard_id, handle.actor.address())


def test_a_restarted_shard_whose_push_of_peers_failed_gets_them_at_the_next_check(brokers):
    # Given a factor-3 topic
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    follower = controller_record(broker).replicas[1]
    # When the follower restarts, and the push of the peers' addresses to it fails
    restart_missing_the_peers(broker, follower)
    # Then it holds its record but knows no leader's address
    assert held_record(broker, follower) == controller_record(broker)
    assert peers_held(broker, follower) == {}
    # And once it answers a leader check, it gets every shard's address
    assert broker.controller.check_leaders() == []
    assert peers_held(broker, follower) == broker.controller.routing().shard_addresses
    # And the check after sends nothing more (a push would raise ControllerCrash)
    broker.shards.handles[follower].crash_controller_at("set_peers")
    assert broker.controller.check_leaders() == []


def test_a_push_of_peers_waits_briefly_for_a_shard_still_in_its_constructor_which_gets_them_later(
        brokers):
    # Given shard-1's new actor (Ray gave up on shard-1) still in its constructor (its
    # directory locked by another process, say): it has not said where it listens, and
    # Ray queues every call to it until the constructor returns
    broker = brokers(2)
    stuck = new_actor_still_in_its_constructor(broker, "shard-1")
    # When every shard is told where the shards listen, as a start tells them
    started_s = time.monotonic()
    broker.controller._push_peers()
    # Then the push is sent to shard-1 but not waited for past a leader ping's timeout (a
    # start waited CONTROL_CALL_TIMEOUT_S, 60 s, for it)
    assert stuck.queued() == ["set_peers"]
    assert time.monotonic() - started_s < limits.LEADER_PING_TIMEOUT_S + 2.0
    # When its constructor returns (the queued push runs) and it announces itself
    stuck.returns()
    # Then it holds every shard's address, its own included
    assert peers_held(broker, "shard-1") == broker.controller.routing().shard_addresses
    assert sorted(peers_held(broker, "shard-1")) == ["shard-0", "shard-1"]


def test_a_restarted_follower_whose_push_of_peers_failed_catches_up_and_rejoins(brokers):
    # Given a factor-3 topic whose replicas hold acknowledged records, and a follower
    # whose data directory is deleted while it is down
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    for n in range(5):
        assert broker.produce("t", 0, [f"r{n}".encode()], acks=-1) == n
    follower = controller_record(broker).replicas[1]
    broker.shards.handles[follower].stop()
    shutil.rmtree(broker.shards.directory(follower))
    # When it restarts and the push of the peers' addresses to it fails, and the
    # controller checks the leaders once
    restart_missing_the_peers(broker, follower)
    assert follower not in controller_record(broker).in_sync   # it needs repair
    assert broker.controller.check_leaders() == []
    # Then it fetches every record from its leader, and the leader adds it back
    wait_until(lambda: follower in controller_record(broker).in_sync,
               timeout_s=CATCH_UP_WAIT_S, explain=lambda: pformat(
                   broker.shards.handles[follower].actor.stats()["replication"]))
    [info] = broker.shards.handles[follower].actor.partition_infos([PARTITION])
    assert info.end_offset == 5


def test_a_wiped_shard_whose_reopen_failed_is_reopened_at_the_next_check_and_rebuilt(brokers):
    # Given a factor-3 topic whose replicas hold acknowledged records, and a follower
    # whose data directory is deleted while it is down
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    for n in range(5):
        assert broker.produce("t", 0, [f"r{n}".encode()], acks=-1) == n
    follower = controller_record(broker).replicas[1]
    handle = broker.shards.handles[follower]
    handle.stop()
    shutil.rmtree(broker.shards.directory(follower))
    # When it restarts, and the controller's call to reopen its partitions fails (as the
    # push of peers may: Ray had not seen the restart yet); it announces itself only once
    handle.restart()
    handle.fail_next("open_partitions", ray.exceptions.ActorUnavailableError(
        f"{follower} is restarting", None))
    broker.controller.shard_started(follower, handle.actor.address())
    assert PARTITION not in handle.actor._manifest.partitions   # it knows nothing
    # Then the next leader check reopens them (it needs repair: out of the in-sync set)
    assert broker.controller.check_leaders() == []
    assert PARTITION in broker.manifest(follower).partitions
    # And it is rebuilt from its leader, which adds it back
    wait_until(lambda: follower in controller_record(broker).in_sync,
               timeout_s=CATCH_UP_WAIT_S, explain=lambda: pformat(
                   broker.shards.handles[follower].actor.stats()["replication"]))
    [info] = broker.shards.handles[follower].actor.partition_infos([PARTITION])
    assert info.end_offset == 5


# --- Silent shards: not waited for by pushes, queries or status ------------------------

def test_an_in_sync_change_after_a_replica_went_silent_does_not_wait_for_it(brokers):
    # Given a factor-3 topic whose follower did not answer the last leader check (its
    # node is lost: every call to it would wait out its timeout)
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    record = controller_record(broker)
    follower = record.replicas[2]
    broker.shards.handles[follower].fail_next("address", RequestTimedOutError("silent"))
    assert broker.controller.check_leaders() == []
    # When the leader drops it from the in-sync set (a push to it would raise
    # ControllerCrash, which nothing in the controller catches)
    broker.shards.handles[follower].crash_controller_at("set_leadership")
    changed = broker.controller.alter_in_sync(record.leader, PARTITION, record.leader_epoch,
                                              record.partition_epoch, record.in_sync[:2])
    # Then the change is made without calling it, and the other follower has it
    assert held_record(broker, record.replicas[1]) == changed
    assert held_record(broker, follower) == record
    # And once it answers a check again, it gets the record
    broker.shards.handles[follower]._crash_at.discard("set_leadership")
    assert broker.controller.check_leaders() == []
    assert held_record(broker, follower) == changed


def test_describe_and_status_skip_a_silent_leader_and_ask_it_again_once_it_answers(brokers):
    # Given a factor-3 topic with records, whose leader missed one ping (not yet replaced)
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    leader = controller_record(broker).leader
    broker.produce("t", 0, [b"a", b"b"], acks=-1)
    broker.shards.handles[leader].fail_next("address", RequestTimedOutError("silent"))
    assert broker.controller.check_leaders() == []
    # When the topic is described and the status asked (a call to it would raise
    # ControllerCrash)
    broker.shards.handles[leader].crash_controller_at("partition_infos")
    broker.shards.handles[leader].crash_controller_at("stats")
    [info] = broker.controller.describe_topic("t").partition_info
    status = {s.shard_id: s for s in broker.controller.status().shards}
    # Then the partition is shown from the metadata without offsets, and with no leader
    # serving it (the CLI's OFFLINE), the shard as down
    assert (info.shard, info.end_offset, len(info.replicas)) == ("", 0, 3)
    assert not status[leader].alive
    # And once it answers a check, describe asks it again
    broker.shards.handles[leader]._crash_at.clear()
    assert broker.controller.check_leaders() == []
    [info] = broker.controller.describe_topic("t").partition_info
    assert (info.shard, info.end_offset) == (leader, 2)


def test_a_replica_whose_disk_refused_its_record_stays_up_and_gets_it_once_saved(
        brokers, caplog):
    # Given a factor-3 topic, and a follower whose disk refuses its next two saves
    # (a full disk: the shard answers StorageError, it is not silent)
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    record = controller_record(broker)
    follower = record.replicas[2]
    full = StorageError(f"cannot save the shard manifest {follower}/manifest.json: No space "
                        f"left on device")
    broker.shards.handles[follower].fail_next("set_leadership", full)
    # When the leader shrinks the in-sync set (the push to the follower fails), and the
    # next check's resend fails the same way
    with caplog.at_level(logging.WARNING, logger="plinth.control.controller"):
        changed = broker.controller.alter_in_sync(record.leader, PARTITION,
                                                  record.leader_epoch, record.partition_epoch,
                                                  record.in_sync[:2])
        broker.shards.handles[follower].fail_next("set_leadership", full)
        assert broker.controller.check_leaders() == []
    # Then the status shows it up and no partition offline (it showed every such
    # shard DOWN and its partitions OFFLINE while they served)
    status = broker.controller.status()
    assert {s.shard_id: s.alive for s in status.shards}[follower] is True
    assert status.offline_partitions == 0
    # And one WARNING said why, not one per check
    unsaved = [r.getMessage() for r in caplog.records if "could not save" in r.getMessage()]
    assert unsaved == [f"{follower} could not save its leadership records: {full}; it serves "
                       f"on, and gets them again at each leader check until one is saved (not "
                       f"logged again until then)"]
    # And once its disk takes it, the next check saves the record
    assert broker.controller.check_leaders() == []
    assert held_record(broker, follower) == changed
