"""Elections asked for (electLeaders; control/leader_elections.py and the controller's
elect_leaders): a preferred election gives a partition back to its first replica
after a failover moved it, handing it over so that no acknowledged record is cut; an
unclean one gives an offline partition a leader. Real shard actors reached in process
on a real disk, replicating over real sockets (broker_without_ray.py)."""

from __future__ import annotations

import pytest

from plinth import protocol
from plinth.errors import (ElectionNotNeededError, EligibleLeadersNotAvailableError,
                           MalformedRequestError, NotLeaderError, PartitionOutOfRangeError,
                           PreferredLeaderNotAvailableError, UnknownTopicError)
from plinth.shards.shard_handle import PartitionId
from tests.control.test_controller_repair import (CATCH_UP_WAIT_S, factor_3_topic_with_records,
                                                  record_now, restart_announcing)
from tests.control.test_controller_replication import (ON_ONE_NODE, not_answering_once,
                                                       offline_factor_2_topic)
from tests.shard_requests import fetch_values
from tests.support import wait_until

PID = PartitionId("t", 0)
PREFERRED = protocol.ELECTION_PREFERRED


def moved_off_its_preferred_leader(broker):
    """A factor-3 topic t whose preferred leader missed a leader check (a failover gave
    the partition to its second replica) and is back in sync; returns the record."""
    before = factor_3_topic_with_records(broker)
    not_answering_once(broker, before.leader)
    assert broker.controller.check_leaders() == [(PID, before.replicas[1])]

    def back_in_sync() -> bool:   # each check resends a missed record, as the lease's do
        return broker.controller.check_leaders() == [] and \
            before.leader in record_now(broker).in_sync
    wait_until(back_in_sync, timeout_s=CATCH_UP_WAIT_S)
    return record_now(broker)


def test_a_preferred_election_gives_a_moved_partition_back_to_its_first_replica(brokers):
    # Given a partition led by its second replica since a failover, its first back in sync
    broker = brokers(3, **ON_ONE_NODE)
    moved = moved_off_its_preferred_leader(broker)
    preferred = moved.replicas[0]
    # And records acknowledged by the new leader alone (acks=1) after the failover
    for n in range(5, 8):
        assert broker.produce("t", 0, [f"r{n}".encode()], acks=1) == n
    # When a preferred election is asked for it
    [result] = broker.controller.elect_leaders(PREFERRED, [("t", 0)])
    # Then its first replica leads, in a new leader epoch, with the same in-sync set
    assert (result.topic, result.partition, result.leader, result.error) == \
        ("t", 0, preferred, None)
    after = record_now(broker)
    assert (after.leader, after.leader_epoch) == (preferred, moved.leader_epoch + 1)
    assert after.in_sync == moved.in_sync and broker.owner("t", 0) == preferred
    # And it serves every acknowledged record, the acks=1 ones included, and takes writes
    assert broker.produce("t", 0, [b"r8"], acks=-1) == 8
    assert fetch_values(broker.address(preferred), "t", 0, 0) == \
        [f"r{n}".encode() for n in range(9)]


def answers_held(broker, shard_id: str) -> list:
    """The controller's answers to the in-sync changes ``shard_id`` asks for are held from
    now on, as if still on their way to its loop (it posts each one there); returns them."""
    replication = broker.shards.handles[shard_id].actor._server._replication
    held: list = []
    replication._in_sync_answered = lambda *answer: held.append(answer)
    return held


def test_a_preferred_election_hands_over_though_the_leader_has_not_applied_its_in_sync_set(
        brokers):
    # Given a partition led by its second replica since a failover, whose leader has
    # not applied the controller's answer that added the first back in sync yet
    broker = brokers(3, **ON_ONE_NODE)
    before = factor_3_topic_with_records(broker)
    not_answering_once(broker, before.leader)
    assert broker.controller.check_leaders() == [(PID, before.replicas[1])]
    held = answers_held(broker, before.replicas[1])

    def back_in_sync_answer_held() -> bool:   # each check resends a missed record
        return broker.controller.check_leaders() == [] and \
            before.leader in record_now(broker).in_sync and bool(held)
    wait_until(back_in_sync_answer_held, timeout_s=CATCH_UP_WAIT_S)
    # When a preferred election is asked for it
    [result] = broker.controller.elect_leaders(PREFERRED, [("t", 0)])
    # Then its first replica leads: the hand-over went by the controller's in-sync set
    assert (result.leader, result.error) == (before.leader, None)
    assert record_now(broker).leader == before.leader and broker.owner("t", 0) == before.leader


def known_to_its_leader(broker, record) -> None:
    """Wait until ``record``'s leader holds its in-sync set. The controller answers a
    leader's in-sync change to it alone, and the leader applies the answer on its loop
    a moment later; a hand-over asked of the shard directly goes by the shard's set
    (an election sends the leader its record first)."""
    def applied() -> bool:
        stats = broker.shards.handles[record.leader].stats().result()["replication"]
        return set(stats[("t", 0)]["in_sync"]) == set(record.in_sync)
    wait_until(applied, timeout_s=CATCH_UP_WAIT_S)


def stop_fetching(broker, shard_id: str) -> None:
    """The follower on ``shard_id`` stops fetching t-0 (as a paused replica fetcher),
    while its shard still answers the controller."""
    server = broker.shards.handles[shard_id].actor._server
    server.call(lambda: server._replication._fetcher.unfollow(("t", 0)))


def test_the_leader_refuses_writes_while_it_hands_a_partition_over(brokers):
    # Given a partition moved off its preferred leader, which stopped fetching
    broker = brokers(3, **ON_ONE_NODE)
    moved = moved_off_its_preferred_leader(broker)
    known_to_its_leader(broker, moved)
    stop_fetching(broker, moved.replicas[0])
    assert broker.produce("t", 0, [b"r5"], acks=1) == 5   # which it lacks
    # When its leader is asked to hand it over
    [state] = broker.shards.handles[moved.leader].hand_over([PID], [moved.replicas[0]]).result()
    # Then it is not handed over yet, and a produce is refused, retriably, naming it
    assert (state.complete, state.end_offset, state.error) == (False, 6, None)
    with pytest.raises(NotLeaderError, match=f"hands its leadership over to {moved.replicas[0]}"):
        broker.produce("t", 0, [b"r6"], acks=1)
    # And once the hand-over is given up, it takes writes again
    broker.shards.handles[moved.leader].end_hand_over([PID]).result()
    assert broker.produce("t", 0, [b"r6"], acks=1) == 6


def test_a_hand_over_to_a_replica_out_of_sync_is_refused_naming_the_in_sync_set(brokers):
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    [state] = broker.shards.handles[record.leader].hand_over([PID], ["shard-9"]).result()
    assert isinstance(state.error, PreferredLeaderNotAvailableError)
    assert "shard-9 is not an in-sync follower" in str(state.error)
    assert broker.produce("t", 0, [b"r5"], acks=1) == 5   # never refused


def test_a_partition_led_by_its_preferred_leader_needs_no_election(brokers):
    broker = brokers(3, **ON_ONE_NODE)
    record = factor_3_topic_with_records(broker)
    [result] = broker.controller.elect_leaders(PREFERRED, [("t", 0)])
    assert isinstance(result.error, ElectionNotNeededError) and result.leader == record.leader
    assert "its preferred leader" in str(result.error) and record_now(broker) == record


def test_a_preferred_leader_out_of_sync_is_not_elected_and_the_leader_keeps_writing(brokers):
    # Given a partition moved off its preferred leader, which then stopped
    broker = brokers(3, **ON_ONE_NODE)
    moved = moved_off_its_preferred_leader(broker)
    broker.shards.handles[moved.replicas[0]].stop()
    # When a preferred election is asked for
    [result] = broker.controller.elect_leaders(PREFERRED, [("t", 0)])
    # Then it is refused, naming the replica and why, and nothing changed
    assert isinstance(result.error, PreferredLeaderNotAvailableError)
    assert f"its preferred leader {moved.replicas[0]} does not answer" in str(result.error)
    assert record_now(broker).leader == moved.leader
    assert broker.produce("t", 0, [b"r5"], acks=1) == 5


def test_a_hand_over_that_does_not_finish_gives_up_and_the_leader_takes_writes_again(
        brokers, monkeypatch):
    # Given a partition moved off its preferred leader, which then stops fetching
    # (paused: it still answers the controller, but never catches up again)
    broker = brokers(3, **ON_ONE_NODE)
    moved = moved_off_its_preferred_leader(broker)
    preferred = moved.replicas[0]
    stop_fetching(broker, preferred)
    assert broker.produce("t", 0, [b"r5"], acks=1) == 5   # it lacks this one now
    monkeypatch.setattr("plinth.limits.LEADER_HANDOVER_WAIT_MS", 600)
    # When a preferred election is asked for
    [result] = broker.controller.elect_leaders(PREFERRED, [("t", 0)])
    # Then it gives up after the bound, naming the replica and the log end
    assert isinstance(result.error, PreferredLeaderNotAvailableError)
    assert f"{preferred} did not fetch up to its leader {moved.leader}'s log end (6)" in \
        str(result.error)
    # And the leader leads on and takes writes again at once
    assert record_now(broker).leader == moved.leader
    assert broker.produce("t", 0, [b"r6"], acks=1) == 6


def test_every_partition_asked_gets_an_answer_by_topic_then_partition(brokers):
    # Given a factor-1 topic and a factor-3 one
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("plain", 2, {})
    factor_3_topic_with_records(broker)
    # When an election names each, an unknown topic and a partition past the count
    results = broker.controller.elect_leaders(
        PREFERRED, [("t", 0), ("plain", 1), ("nope", 0), ("plain", 0), ("t", 5)])
    # Then each has its answer, in order
    assert [(r.topic, r.partition, type(r.error)) for r in results] == [
        ("nope", 0, UnknownTopicError), ("plain", 0, ElectionNotNeededError),
        ("plain", 1, ElectionNotNeededError), ("t", 0, ElectionNotNeededError),
        ("t", 5, PartitionOutOfRangeError)]
    assert "has one copy" in str(results[1].error)


def test_an_election_of_every_partition_covers_the_replicated_ones(brokers):
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("plain", 2, {})
    moved = moved_off_its_preferred_leader(broker)
    results = broker.controller.elect_leaders(PREFERRED, None)
    assert [(r.topic, r.partition, r.leader, r.error) for r in results] == \
        [("t", 0, moved.replicas[0], None)]


def test_an_unclean_election_is_only_for_a_partition_without_a_leader(brokers):
    # Given a factor-2 topic whose two replicas stop answering: offline
    broker = brokers(3, **ON_ONE_NODE)
    record = offline_factor_2_topic(broker, "u")
    # And a factor-3 topic that has its leader
    factor_3_topic_with_records(broker)
    # When an unclean election is asked for both, while the offline one's replicas are
    # still silent
    for shard_id in record.replicas:
        not_answering_once(broker, shard_id)
    silent = broker.controller.elect_leaders(protocol.ELECTION_UNCLEAN, [("u", 0), ("t", 0)])
    # Then the led one needs none, and the offline one has no replica to take it
    assert isinstance(silent[0].error, ElectionNotNeededError)
    assert isinstance(silent[1].error, EligibleLeadersNotAvailableError) and silent[1].leader == ""
    # And once a replica answers, an unclean election gives it the partition
    [result] = broker.controller.elect_leaders(protocol.ELECTION_UNCLEAN, [("u", 0)])
    assert result.error is None and result.leader in record.replicas


def test_an_election_type_that_is_neither_is_refused_naming_both(brokers):
    broker = brokers(3, **ON_ONE_NODE)
    with pytest.raises(MalformedRequestError, match="election type 2 is neither 0 .preferred. "
                                                    "nor 1 .unclean."):
        broker.controller.elect_leaders(2, None)


def test_a_leader_that_hears_nothing_after_a_hand_over_takes_writes_again_by_itself(
        brokers, monkeypatch):
    # Given a leader asked to hand a partition over, and then never told more (the
    # controller died), with a short fence
    monkeypatch.setattr("plinth.limits.LEADER_HANDOVER_FENCE_MS", 300)
    broker = brokers(3, **ON_ONE_NODE)
    moved = moved_off_its_preferred_leader(broker)
    known_to_its_leader(broker, moved)
    stop_fetching(broker, moved.replicas[0])
    broker.shards.handles[moved.leader].hand_over([PID], [moved.replicas[0]]).result()
    with pytest.raises(NotLeaderError):
        broker.produce("t", 0, [b"r5"], acks=1)

    def takes_writes() -> bool:
        try:
            return broker.produce("t", 0, [b"r5"], acks=1) == 5
        except NotLeaderError:
            return False
    # Then it takes writes again once the fence has passed
    wait_until(takes_writes, timeout_s=10)


# --- The auto leader rebalance (Kafka's auto.leader.rebalance.enable) --------------------

def test_a_leader_check_past_the_rebalance_interval_gives_partitions_back(brokers):
    # Given a controller whose rebalance is due at every leader check
    broker = brokers(3, leader_rebalance_interval_s=0.0, **ON_ONE_NODE)
    before = factor_3_topic_with_records(broker)
    # When its preferred leader misses a check, and comes back in sync
    not_answering_once(broker, before.leader)
    broker.controller.check_leaders()
    # Then a later check gives the partition back to it
    wait_until(lambda: broker.controller.check_leaders() == [] and
               record_now(broker).leader == before.leader, timeout_s=CATCH_UP_WAIT_S)
    assert record_now(broker).leader_epoch == before.leader_epoch + 2


def test_without_the_auto_rebalance_a_moved_partition_stays_where_it_moved(brokers):
    broker = brokers(3, leader_rebalance_interval_s=None, **ON_ONE_NODE)
    moved = moved_off_its_preferred_leader(broker)   # (its checks would have rebalanced)
    assert broker.controller.check_leaders() == [] and record_now(broker) == moved


def test_a_preferred_leader_leading_again_is_logged_at_info_its_leaving_at_warning(
        brokers, caplog):
    # Given a partition whose failover away from its preferred leader was logged
    broker = brokers(3, **ON_ONE_NODE)
    with caplog.at_level("INFO", logger="plinth.control.controller"):
        moved = moved_off_its_preferred_leader(broker)
    left = [r for r in caplog.records if r.getMessage().startswith("t-0: leader ")]
    assert left and all(r.levelname == "WARNING" for r in left)
    caplog.clear()
    # When the operator's preferred election gives it back
    with caplog.at_level("INFO", logger="plinth.control.controller"):
        [result] = broker.controller.elect_leaders(PREFERRED, [("t", 0)])
    assert result.error is None
    # Then that healthy outcome is one INFO line (teams page on WARNING), not a warning
    back = [r for r in caplog.records if "leads it again" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in back] == [
        ("INFO", f"t-0: its preferred leader {moved.replicas[0]} leads it again "
                 f"(leader epoch {moved.leader_epoch + 1})")]
