"""The controller's changes to a partition's leadership record (control/leadership.py)."""

import re

import pytest

from plinth.control.leadership import (alter_in_sync, elect_leader, elect_preferred,
                                      elect_replica, initial_leadership, mark_needs_repair,
                                      preferred_refusal, replica_refusal)
from plinth.errors import (ElectionNotNeededError, FencedLeaderEpochError, NotLeaderError,
                           PreferredLeaderNotAvailableError)
from plinth.shards.shard_handle import Leadership

ALL = ("a", "b", "c")


def record(leader="a", in_sync=ALL, eligible=(), leader_epoch=3, partition_epoch=7,
           controller_epoch=2):
    return Leadership(replicas=ALL, leader=leader, leader_epoch=leader_epoch, in_sync=in_sync,
                      partition_epoch=partition_epoch, controller_epoch=controller_epoch,
                      eligible=eligible)


def test_a_new_partition_is_led_by_its_first_replica_with_every_replica_in_sync():
    assert initial_leadership(["b", "a", "c"], controller_epoch=4) == Leadership(
        replicas=("b", "a", "c"), leader="b", leader_epoch=0, in_sync=("b", "a", "c"),
        partition_epoch=0, controller_epoch=4, eligible=())


# --- alter_in_sync: the leader's compare-and-set ---------------------------------------

def test_an_in_sync_change_with_the_current_epochs_is_applied_and_bumps_the_partition_epoch():
    # Given the record at leader epoch 3, partition epoch 7
    # When the leader asks for (c, a) with those epochs
    new = alter_in_sync(record(), "a", 3, 7, ("c", "a"), min_insync=2)
    # Then the set is applied, in the replicas' order, and only the partition epoch grows
    assert (new.in_sync, new.leader_epoch, new.partition_epoch, new.eligible) == \
        (("a", "c"), 3, 8, ())


@pytest.mark.parametrize("leader_epoch,partition_epoch", [(2, 7), (3, 6), (4, 7), (3, 8)])
def test_a_stale_in_sync_change_is_fenced_naming_both_epochs(leader_epoch, partition_epoch):
    with pytest.raises(FencedLeaderEpochError,
                       match=f"leader epoch {leader_epoch}, partition epoch {partition_epoch}; "
                             f"the record has leader epoch 3, partition epoch 7"):
        alter_in_sync(record(), "a", leader_epoch, partition_epoch, ("a",), min_insync=1)


def test_an_in_sync_change_from_a_shard_that_does_not_lead_is_refused():
    with pytest.raises(NotLeaderError, match="from b, but a leads"):
        alter_in_sync(record(), "b", 3, 7, ("a", "b"), min_insync=1)


def test_an_in_sync_set_without_the_leader_or_with_strangers_is_a_programmer_error():
    with pytest.raises(ValueError):
        alter_in_sync(record(), "a", 3, 7, ("b", "c"), min_insync=1)
    with pytest.raises(ValueError):
        alter_in_sync(record(), "a", 3, 7, ("a", "x"), min_insync=1)


def test_asking_for_the_current_set_changes_nothing():
    current = record()
    assert alter_in_sync(current, "a", 3, 7, ALL, min_insync=2) is current


def test_a_replica_leaving_a_set_below_min_insync_becomes_eligible():
    # Given min.insync.replicas 2 and in-sync a, b
    current = record(in_sync=("a", "b"))
    # When b leaves (the high watermark cannot move without it from now on)
    new = alter_in_sync(current, "a", 3, 7, ("a",), min_insync=2)
    # Then b is eligible to lead (KIP-966)
    assert (new.in_sync, new.eligible) == (("a",), ("b",))


def test_replicas_leaving_a_set_that_stays_at_min_insync_do_not_become_eligible():
    new = alter_in_sync(record(), "a", 3, 7, ("a", "b"), min_insync=2)
    assert new.eligible == ()


def test_an_eligible_replica_is_cleared_when_it_rejoins_or_the_set_reaches_min_insync():
    # Given b and c eligible with a alone in sync, min.insync.replicas 3
    current = record(in_sync=("a",), eligible=("b", "c"))
    # When b rejoins / Then it is in sync, not eligible; c stays eligible
    joined = alter_in_sync(current, "a", 3, 7, ("a", "b"), min_insync=3)
    assert (joined.in_sync, joined.eligible) == (("a", "b"), ("c",))
    # When the set reaches min.insync.replicas without c / Then c is no longer eligible
    grown = alter_in_sync(record(in_sync=("a",), eligible=("c",)), "a", 3, 7, ("a", "b"),
                          min_insync=2)
    assert grown.eligible == ()


def test_a_replica_that_needs_repair_never_becomes_eligible():
    new = alter_in_sync(record(in_sync=("a", "b")), "a", 3, 7, ("a",), min_insync=2,
                        needs_repair={"b"})
    assert new.eligible == ()


# --- elect_leader ----------------------------------------------------------------------

def test_the_first_alive_in_sync_replica_leads_and_both_epochs_grow():
    # Given a lost leader a
    # When the controller elects among b, c
    new = elect_leader(record(), {"b", "c"}, unclean=False, min_insync=2)
    # Then b leads in leader epoch 4, and a leaves the in-sync set
    assert (new.leader, new.leader_epoch, new.partition_epoch, new.in_sync, new.eligible) == \
        ("b", 4, 8, ("b", "c"), ())


def test_dead_in_sync_replicas_become_eligible_when_the_set_falls_below_min_insync():
    # Given a and b lost, min.insync.replicas 2
    new = elect_leader(record(), {"c"}, unclean=False, min_insync=2)
    # Then c leads alone, and a and b are eligible (they hold every acknowledged record)
    assert (new.leader, new.in_sync, new.eligible) == ("c", ("c",), ("a", "b"))
    # Without min_insync nobody new becomes eligible (the safe side)
    assert elect_leader(record(), {"c"}, unclean=False).eligible == ()


def test_an_eligible_replica_leads_when_no_in_sync_replica_is_alive():
    # Given a alone in sync and b, c eligible; a is lost
    current = record(in_sync=("a",), eligible=("b", "c"))
    new = elect_leader(current, {"c"}, unclean=False, min_insync=2)
    # Then c leads; a, which was in sync, and b stay eligible
    assert (new.leader, new.in_sync, new.eligible) == ("c", ("c",), ("a", "b"))


def test_with_no_in_sync_or_eligible_replica_alive_the_partition_goes_offline():
    # Given a alone in sync and lost, b alive but neither in sync nor eligible
    current = record(in_sync=("a",))
    new = elect_leader(current, {"b"}, unclean=False, min_insync=2)
    # Then there is no leader, the epoch grows (fencing a), and a stays in sync for
    # when it comes back
    assert (new.leader, new.leader_epoch, new.in_sync) == ("", 4, ("a",))
    # And electing again with nobody new changes nothing
    assert elect_leader(new, {"b"}, unclean=False, min_insync=2) is new
    # And when a comes back, it leads
    assert elect_leader(new, {"a", "b"}, unclean=False, min_insync=2).leader == "a"


def test_an_unclean_election_takes_any_alive_replica():
    new = elect_leader(record(in_sync=("a",)), {"c"}, unclean=True, min_insync=2)
    assert (new.leader, new.in_sync, new.eligible) == ("c", ("c",), ())


def test_a_replica_that_needs_repair_is_never_elected_and_leaves_the_in_sync_set():
    new = elect_leader(record(), {"b", "c"}, unclean=False, min_insync=1, needs_repair={"b"})
    assert (new.leader, new.in_sync) == ("c", ("c",))
    offline = elect_leader(record(in_sync=("a", "b")), {"b"}, unclean=True,
                           needs_repair={"b"})
    assert (offline.leader, offline.in_sync) == ("", ("a",))


def test_a_change_stamps_the_controller_epoch_and_refuses_an_older_one():
    assert elect_leader(record(), {"b"}, unclean=False, controller_epoch=5).controller_epoch == 5
    with pytest.raises(FencedLeaderEpochError, match="controller epoch 1 is older than"):
        elect_leader(record(), {"b"}, unclean=False, controller_epoch=1)


# --- mark_needs_repair ---------------------------------------------------------------------

def test_a_replica_that_lost_data_leaves_the_in_sync_and_eligible_sets_at_once():
    # Given b in sync and c eligible
    current = record(in_sync=("a", "b"), eligible=("c",))
    # When each comes back without its data
    without_b = mark_needs_repair(current, "b")
    without_c = mark_needs_repair(without_b, "c")
    # Then each leaves its set, the partition epoch grows, the leader stays
    assert (without_b.in_sync, without_b.eligible, without_b.partition_epoch) == \
        (("a",), ("c",), 8)
    assert (without_c.leader, without_c.leader_epoch, without_c.eligible) == ("a", 3, ())
    # And a replica in neither set changes nothing
    assert mark_needs_repair(without_c, "c") is without_c


def test_a_leader_that_lost_data_leaves_the_partition_without_a_leader_until_an_election():
    new = mark_needs_repair(record(), "a")
    assert (new.leader, new.leader_epoch, new.in_sync) == ("", 4, ("b", "c"))
    assert elect_leader(new, {"a", "b", "c"}, unclean=False, needs_repair={"a"}).leader == "b"


# --- preferred_refusal and elect_preferred: an election asked for ------------------------

def test_the_preferred_leader_takes_the_lead_in_a_new_epoch_with_the_same_in_sync_set():
    moved = record(leader="b", in_sync=("a", "b"), eligible=("c",))
    assert preferred_refusal(moved, alive=ALL) is None
    after = elect_preferred(moved)
    assert (after.leader, after.leader_epoch, after.partition_epoch) == ("a", 4, 8)
    assert (after.in_sync, after.eligible) == (("a", "b"), ("c",))


@pytest.mark.parametrize("moved,alive,repairing,error,reason", [
    (record(leader="a"), ALL, (), ElectionNotNeededError, "a leads it already"),
    (record(leader="b"), ("b", "c"), (), PreferredLeaderNotAvailableError, "a does not answer"),
    (record(leader="b"), ALL, ("a",), PreferredLeaderNotAvailableError, "a needs repair"),
    (record(leader="b", in_sync=("b", "c")), ALL, (), PreferredLeaderNotAvailableError,
     "a is not in sync .in sync: b, c."),
])
def test_a_preferred_leader_that_may_not_lead_now_is_refused_saying_why(moved, alive, repairing,
                                                                       error, reason):
    refusal = preferred_refusal(moved, alive, needs_repair=repairing, where="t-0")
    assert isinstance(refusal, error)
    assert re.search(f"t-0: its preferred leader {reason}", str(refusal))


def test_electing_a_preferred_leader_out_of_sync_is_a_programmer_error():
    with pytest.raises(AssertionError, match="cannot take"):
        elect_preferred(record(leader="b", in_sync=("b", "c")))


# --- replica_refusal and elect_replica: a leader whose disk refuses writes hands over ----

def test_any_in_sync_replica_takes_the_lead_in_a_new_epoch_with_the_same_in_sync_set():
    # Given a partition led by its preferred leader a, b and c in sync
    led = record(leader="a")
    # When c may take it and takes it / Then c leads in a new leader epoch, nothing else
    # changes
    assert replica_refusal(led, "c", alive=ALL, where="t-0") is None
    after = elect_replica(led, "c")
    assert (after.leader, after.leader_epoch, after.partition_epoch) == ("c", 4, 8)
    assert (after.in_sync, after.eligible) == (led.in_sync, led.eligible)


@pytest.mark.parametrize("led,replica,alive,repairing,error,reason", [
    (record(leader="c"), "c", ALL, (), ElectionNotNeededError, "its replica c leads it already"),
    (record(leader="a"), "c", ("a", "b"), (), PreferredLeaderNotAvailableError,
     "its replica c does not answer"),
    (record(leader="a"), "c", ALL, ("c",), PreferredLeaderNotAvailableError,
     "its replica c needs repair"),
    (record(leader="a", in_sync=("a", "b")), "c", ALL, (), PreferredLeaderNotAvailableError,
     "its replica c is not in sync .in sync: a, b."),
    (record(leader="a"), "d", ALL + ("d",), (), PreferredLeaderNotAvailableError,
     "its replica d is not one of its replicas"),
])
def test_a_replica_that_may_not_lead_now_is_refused_saying_why(led, replica, alive, repairing,
                                                             error, reason):
    refusal = replica_refusal(led, replica, alive, needs_repair=repairing, where="t-0")
    assert isinstance(refusal, error)
    assert re.search(f"t-0: {reason}", str(refusal))
