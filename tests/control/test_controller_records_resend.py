"""The controller's resend of leadership records (Controller._resend_records): a shard that
missed a push of its records (it did not answer: down, stopped, slow) or that asked for an
in-sync change with a stale record gets every record it holds again once it answers a
leader check. Without it a leader deposed while it was SIGSTOPped never learns it was: it
does not restart, so it never announces itself. Real shard actors in process on a real
disk (broker_without_ray.py); a failed call is injected at the shard handle, the
controller's neighbour."""

from __future__ import annotations

import pytest
import ray.exceptions

from plinth.errors import FencedLeaderEpochError, RequestTimedOutError
from plinth.shards.shard_handle import PartitionId

ON_ONE_NODE = {"allow_replicas_on_one_node": True}
PARTITION = PartitionId("t", 0)


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
