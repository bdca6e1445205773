"""The leader's and a follower's replication state machines (shards/replication.py)."""

import pytest

from plinth.errors import FencedLeaderEpochError, NotEnoughReplicasBeforeWriteError, NotLeaderError
from plinth.shards.leader_epochs import NO_EPOCH, NO_OFFSET, EpochEntry, LeaderEpochs
from plinth.shards.replication import (FollowerReplication, LeaderReplication, divergence,
                                       epoch_starts_between)
from plinth.shards.shard_calls import Leadership

LAG_S = 10.0
ALL = ("a", "b", "c")


def record(in_sync=ALL, leader="a", leader_epoch=3, partition_epoch=7, controller_epoch=1):
    return Leadership(replicas=ALL, leader=leader, leader_epoch=leader_epoch, in_sync=in_sync,
                      partition_epoch=partition_epoch, controller_epoch=controller_epoch)


def leader(in_sync=ALL, min_insync=2, high_watermark=0, log_end_offset=0, now_s=0.0):
    return LeaderReplication("orders-0", "a", record(in_sync), min_insync, high_watermark,
                             log_end_offset, LAG_S, now_s, in_sync_retry_s=2.0)


def epochs(*entries):
    return LeaderEpochs([EpochEntry(e, s) for e, s in entries])


EPOCHS = epochs((3, 0))


def fetch(replication, replica_id, offset, log_end_offset, now_s=1.0, last_epoch=3,
          leader_epochs=EPOCHS):
    return replication.on_follower_fetch(replica_id, offset, last_epoch, leader_epochs,
                                         log_end_offset, now_s)


# --- The high watermark ---------------------------------------------------------------

def test_the_high_watermark_is_the_smallest_durable_log_end_of_the_in_sync_set():
    # Given a leader durable up to 10 and followers at 7 and 9
    replication = leader()
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "b", 7, 10)
    # When the last follower reports
    answer = fetch(replication, "c", 9, 10)
    # Then the HW is 7, and the answer says it moved
    assert (replication.high_watermark, answer.high_watermark, answer.high_watermark_moved) \
        == (7, 7, True)


def test_the_high_watermark_waits_for_every_in_sync_follower_to_fetch_in_the_epoch():
    # Given a new leader durable up to 10, one follower that has not fetched yet
    replication = leader(log_end_offset=10)
    # When the other reports 10
    answer = fetch(replication, "b", 10, 10)
    # Then the HW does not move
    assert (replication.high_watermark, answer.high_watermark_moved) == (0, False)


def test_the_high_watermark_only_grows_when_a_follower_reports_less():
    # Given a HW of 8
    replication = leader()
    replication.on_leader_durable(8, 1.0)
    fetch(replication, "b", 8, 8)
    fetch(replication, "c", 8, 8)
    # When a follower reports 5 (it lost data, or the fetch is an old one)
    fetch(replication, "b", 5, 8)
    # Then the HW stays 8
    assert replication.high_watermark == 8


def test_the_high_watermark_does_not_move_while_the_in_sync_set_is_below_min_insync():
    # Given min.insync.replicas 2 and the leader alone in sync
    replication = leader(in_sync=("a",))
    # When it is durable up to 5
    moved = replication.on_leader_durable(5, 1.0)
    # Then the HW stays at 0 (KIP-966)
    assert (moved, replication.high_watermark) == (False, 0)


def test_a_pending_shrink_does_not_let_the_high_watermark_move_early():
    # Given in-sync a, b, c and a proposal to drop c, which lags
    replication = leader()
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "b", 10, 10, now_s=1.0)
    fetch(replication, "c", 4, 10, now_s=1.0)
    assert replication.in_sync_change(10.5) == ("a", "b")
    # When the leader and b are durable further
    replication.on_leader_durable(12, 10.5)
    fetch(replication, "b", 12, 12, now_s=10.5)
    # Then the HW still counts c (KIP-497) until the controller commits the change
    assert replication.high_watermark == 4
    replication.on_leadership(record(in_sync=("a", "b"), partition_epoch=8))
    assert replication.high_watermark == 12


def test_a_pending_expansion_already_counts_its_new_member():
    # Given in-sync a, b and c catching up to the HW
    replication = leader(in_sync=("a", "b"))
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "b", 10, 10)
    fetch(replication, "c", 10, 10)
    assert replication.high_watermark == 10
    assert replication.in_sync_change(1.0) == ("a", "b", "c")
    # When the leader and b go further, but not c
    replication.on_leader_durable(14, 2.0)
    fetch(replication, "b", 14, 14, now_s=2.0)
    # Then the HW waits for c: the controller may already hold it in sync
    assert replication.high_watermark == 10


def test_the_leader_does_not_count_past_its_own_durable_log_end():
    # Given followers durable at 10 and a leader durable at 6 (its fsync lags)
    replication = leader()
    replication.on_leader_durable(6, 1.0)
    fetch(replication, "b", 10, 10)
    fetch(replication, "c", 10, 10)
    # Then the HW is 6
    assert replication.high_watermark == 6


def test_the_leaders_durable_log_end_going_back_is_a_programmer_error():
    replication = leader()
    replication.on_leader_durable(6, 1.0)
    with pytest.raises(AssertionError, match="went back from 6 to 5"):
        replication.on_leader_durable(5, 1.0)


def test_a_leader_must_be_in_its_in_sync_set():
    with pytest.raises(AssertionError, match="invariant 1"):
        leader(in_sync=("b", "c"))


# --- acks="all" and fencing ---------------------------------------------------------------

def test_acks_all_is_refused_with_the_partition_the_in_sync_set_and_the_minimum():
    # Given min.insync.replicas 2 and only the leader in sync
    replication = leader(in_sync=("a",))
    # When an acks="all" produce arrives / Then it is refused at once, retriably, as
    # refused before anything was written (a client counts it as not stored)
    with pytest.raises(NotEnoughReplicasBeforeWriteError,
                       match=r"orders-0: 1 in-sync replicas \['a'\], fewer than "
                             r"min.insync.replicas 2"):
        replication.check_acks_all()
    leader(in_sync=("a", "b")).check_acks_all()


def test_a_fetch_from_an_older_leader_epoch_is_fenced_and_a_newer_one_is_not_led_here():
    replication = leader()
    with pytest.raises(FencedLeaderEpochError, match="leader epoch 2, older than the leader's 3"):
        replication.check_fetch_epoch("b", 2)
    with pytest.raises(NotLeaderError, match="leader epoch 4"):
        replication.check_fetch_epoch("b", 4)
    with pytest.raises(NotLeaderError, match="for x"):
        replication.check_fetch_epoch("x", 3)
    replication.check_fetch_epoch("b", 3)


def test_a_leader_that_learns_of_a_newer_epoch_stops_serving_and_acknowledging():
    # Given a leader with a pending in-sync change
    replication = leader()
    replication.on_leader_durable(3, 1.0)
    # When the controller's record names b leader of epoch 4
    replication.on_leadership(record(leader="b", leader_epoch=4, partition_epoch=8))
    # Then it refuses fetches and acks="all", and its HW never moves again
    assert replication.leading is False
    with pytest.raises(NotLeaderError):
        fetch(replication, "b", 3, 3)
    with pytest.raises(NotLeaderError, match="no longer leads"):
        replication.check_acks_all()
    assert replication.on_leader_durable(9, 2.0) is False
    assert replication.in_sync_change(100.0) is None


def test_an_older_record_or_one_from_an_older_controller_is_ignored():
    replication = leader()
    replication.on_leadership(record(in_sync=("a", "b"), partition_epoch=6))
    replication.on_leadership(record(in_sync=("a", "b"), partition_epoch=9, controller_epoch=0))
    assert replication.leadership.in_sync == ALL


# --- The epoch lookup ---------------------------------------------------------------------

def test_a_follower_whose_log_is_a_prefix_of_the_leaders_is_served_from_its_fetch_offset():
    # Given a leader log with epochs 1 from 0, 3 from 5, ending at 9
    leader_epochs = epochs((1, 0), (3, 5))
    # Then a follower at 4 in epoch 1, at 7 in epoch 3, and an empty one, are served
    assert divergence(leader_epochs, 4, 1, 9) is None
    assert divergence(leader_epochs, 5, 1, 9) is None
    assert divergence(leader_epochs, 7, 3, 9) is None
    assert divergence(leader_epochs, 0, NO_EPOCH, 9) is None


def test_a_follower_ahead_in_an_epoch_or_in_an_epoch_the_leader_lacks_diverges():
    leader_epochs = epochs((1, 0), (3, 5))
    # A follower with epoch 1 up to 7: the leader's epoch 1 ends at 5
    assert divergence(leader_epochs, 7, 1, 9) == EpochEntry(1, 5)
    # A follower whose last epoch 2 the leader never had: epoch 1, ending at 5
    assert divergence(leader_epochs, 6, 2, 9) == EpochEntry(1, 5)
    # A follower beyond the leader's log end in the leader's own epoch
    assert divergence(leader_epochs, 11, 3, 9) == EpochEntry(3, 9)
    # A follower whose epochs are all older than the leader's first one
    assert divergence(epochs((4, 3)), 5, 2, 9) == EpochEntry(2, 3)


def test_a_follower_restarted_empty_at_a_tiered_leaders_local_start_does_not_diverge():
    # Given a leader whose epochs began long before its local log start 13288 (tiered:
    # the older segments are in object storage), and a follower that restarted its
    # log empty there, so it has no epoch
    leader_epochs = epochs((0, 4036), (1, 6000))
    # Then its fetch from 13288 is served (it was told to truncate to 6000, below the
    # leader's start, and restarted again: for ever)
    assert divergence(leader_epochs, 13288, NO_EPOCH, 20000, log_start_offset=13288) is None
    # But a follower without epochs fetching past the leader's start (it holds entries
    # from before it) still diverges
    assert divergence(leader_epochs, 13300, NO_EPOCH, 20000, log_start_offset=13288) == \
        EpochEntry(0, 4036)


def test_a_diverging_fetch_answers_the_epoch_and_counts_nothing():
    # Given a leader with epoch 3 up to 10
    replication = leader()
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "c", 10, 10)
    # When b fetches at 12 in epoch 3
    answer = fetch(replication, "b", 12, 10)
    # Then it must truncate against (3, 10) and its offset does not count
    assert (answer.diverged, answer.diverging_epoch, answer.diverging_end_offset) == (True, 3, 10)
    assert replication.follower_fetch_offset("b") == NO_OFFSET
    assert replication.high_watermark == 0


def test_epoch_starts_between_lists_the_epochs_starting_inside_the_entries_sent():
    leader_epochs = epochs((1, 0), (3, 5), (4, 9))
    assert epoch_starts_between(leader_epochs, 4, 9) == [EpochEntry(3, 5)]
    assert epoch_starts_between(leader_epochs, 0, 12) == list(leader_epochs.entries)
    assert epoch_starts_between(leader_epochs, 6, 9) == []


# --- The in-sync set ------------------------------------------------------------------------

def test_a_follower_that_lags_longer_than_the_lag_time_leaves_the_in_sync_set():
    # Given b caught up at time 1 and c never caught up
    replication = leader()
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "b", 10, 10, now_s=1.0)
    fetch(replication, "c", 3, 10, now_s=1.0)
    # When the lag time has not passed / has passed
    assert replication.in_sync_change(LAG_S) is None
    proposal = replication.in_sync_change(LAG_S + 0.5)
    # Then c leaves once it has, and only one proposal is out at a time
    assert proposal == ("a", "b")
    assert replication.pending_in_sync == ("a", "b")
    assert replication.in_sync_change(LAG_S + 1.0) is None


def test_a_follower_keeping_pace_with_a_steady_stream_is_not_lagging():
    # Given b always fetches what the log end was at its previous fetch
    replication = leader()
    for second in range(1, 30):
        replication.on_leader_durable(second * 10, float(second))
        fetch(replication, "b", (second - 1) * 10, second * 10, now_s=float(second))
        fetch(replication, "c", (second - 1) * 10, second * 10, now_s=float(second))
    # Then it never leaves the in-sync set
    assert replication.in_sync_change(30.0) is None


def test_an_unsettled_proposal_is_offered_again_after_the_retry_time():
    replication = leader()
    fetch(replication, "b", 0, 0, now_s=1.0)
    assert replication.in_sync_change(LAG_S + 1) == ("a", "b")
    assert replication.in_sync_change(LAG_S + 2) is None
    assert replication.in_sync_change(LAG_S + 3.5) == ("a", "b")


def test_a_follower_rejoins_at_the_high_watermark_and_the_leaders_epoch_start():
    # Given a leader that took over at 8 (HW 5), with c out of sync
    replication = leader(in_sync=("a", "b"), high_watermark=5, log_end_offset=8)
    # When c reaches the HW but not the epoch start / then the epoch start
    fetch(replication, "c", 6, 8, now_s=1.0)
    assert replication.in_sync_change(1.0) is None
    fetch(replication, "c", 8, 8, now_s=2.0)
    # Then it is proposed back only then (KAFKA-7128: it holds every acknowledged record)
    assert replication.in_sync_change(2.0) == ("a", "b", "c")


def test_an_in_sync_follower_that_reports_less_than_the_high_watermark_leaves_at_once():
    # Given a HW of 10 with every follower at 10
    replication = leader()
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "b", 10, 10)
    fetch(replication, "c", 10, 10)
    # When c comes back with 4 (its disk lost data: needs repair)
    fetch(replication, "c", 4, 10, now_s=2.0)
    # Then the leader proposes it out without waiting for the lag time
    assert replication.in_sync_change(2.0) == ("a", "b")


def test_a_replica_the_controller_took_out_rejoins_only_after_a_fetch_that_catches_up():
    # Given a HW of 10 with every follower caught up at 10
    replication = leader()
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "b", 10, 10)
    fetch(replication, "c", 10, 10)
    # When the controller takes c out (it restarted on a wiped disk: needs repair), a
    # record this leader did not ask for
    replication.on_leadership(record(in_sync=("a", "b"), partition_epoch=8))
    # Then c's fetch before it left, of its previous process, does not bring it back
    assert replication.in_sync_change(2.0) is None
    # And neither does a fetch below the HW (it is being rebuilt)
    fetch(replication, "c", 0, 10, now_s=2.5)
    assert replication.in_sync_change(2.5) is None
    # But a fetch that reached the HW does
    fetch(replication, "c", 10, 10, now_s=3.0)
    assert replication.in_sync_change(3.0) == ("a", "b", "c")


def test_followers_stuck_at_the_high_watermark_below_the_log_end_stay_out_of_the_in_sync_set():
    # Given a HW of 10 on every replica, then 5 more records on the leader's disk only
    replication = leader()
    replication.on_leader_durable(10, 0.5)
    fetch(replication, "b", 10, 10, now_s=1.0)
    fetch(replication, "c", 10, 10, now_s=1.0)
    replication.on_leader_durable(15, 1.5)
    # When both followers' disks are full: they fetch at 10 again and again, lag, and
    # are taken out (the HW cannot move: fewer than min.insync.replicas are in sync)
    now_s = 1.0
    while now_s < 1.0 + LAG_S + 1.0:
        now_s += 0.5
        fetch(replication, "b", 10, 15, now_s=now_s)
        fetch(replication, "c", 10, 15, now_s=now_s)
    assert replication.in_sync_change(now_s) == ("a",)
    replication.on_leadership(record(in_sync=("a",), partition_epoch=8))
    # Then their fetches at the HW, still short of the leader's log end, do not bring
    # them back: they never caught up since they left (session 45's tester saw the
    # in-sync set shrink and grow again every lag time while the disks stayed full)
    for _ in range(3 * int(LAG_S)):
        now_s += 0.5
        fetch(replication, "b", 10, 15, now_s=now_s)
        fetch(replication, "c", 10, 15, now_s=now_s)
        assert replication.in_sync_change(now_s) is None, now_s
    # And a follower that can write again rejoins once it reaches the log end
    now_s += 0.5
    fetch(replication, "b", 15, 15, now_s=now_s)
    assert replication.in_sync_change(now_s) == ("a", "b")


def test_a_follower_whose_disk_refused_an_append_leaves_at_once_and_rejoins_once_it_appends():
    # Given a HW of 10 with every follower at 10
    replication = leader()
    replication.on_leader_durable(10, 1.0)
    fetch(replication, "b", 10, 10)
    fetch(replication, "c", 10, 10)
    # When c's next fetch says its disk refused the entries it fetched (full)
    replication.on_leader_durable(15, 1.5)
    replication.on_follower_fetch("c", 10, 3, EPOCHS, 15, 2.0, append_failed=True)
    # Then the leader proposes it out at once, well within the lag time
    assert replication.in_sync_change(2.0) == ("a", "b")
    replication.on_leadership(record(in_sync=("a", "b"), partition_epoch=8))
    # And while it says so, even at the log end, it is not proposed back
    replication.on_follower_fetch("c", 15, 3, EPOCHS, 15, 2.5, append_failed=True)
    assert replication.in_sync_change(2.5) is None
    # But once it appended again and reached the log end, it is
    fetch(replication, "c", 15, 15, now_s=3.0)
    assert replication.in_sync_change(3.0) == ("a", "b", "c")


def test_a_newer_record_settles_the_pending_proposal():
    replication = leader()
    fetch(replication, "b", 0, 0, now_s=1.0)
    assert replication.in_sync_change(LAG_S + 1) == ("a", "b")
    replication.on_leadership(record(in_sync=("a", "b"), partition_epoch=8))
    assert replication.pending_in_sync is None
    assert replication.leadership.in_sync == ("a", "b")


# --- The follower -------------------------------------------------------------------------

def follower(log_end_offset=10, high_watermark=0, needs_repair=False, follower_epochs=None):
    return FollowerReplication("orders-0", "b", record(), log_end_offset,
                               follower_epochs or epochs((1, 0), (3, 5)),
                               high_watermark=high_watermark, needs_repair=needs_repair)


def test_a_follower_fetches_from_its_durable_log_end_with_its_last_entrys_epoch():
    follower_epochs = epochs((1, 0), (3, 5), (4, 10))      # epoch 4 wrote nothing yet
    assert follower(follower_epochs=follower_epochs).next_fetch(10, follower_epochs) == (10, 3)
    assert follower().next_fetch(0, LeaderEpochs()) == (0, NO_EPOCH)


def test_a_follower_truncates_to_the_end_of_the_diverging_epoch_in_both_logs():
    replication = follower()
    follower_epochs = epochs((1, 0), (3, 5))
    # The leader's epoch 1 ends at 4, this log's at 5: cut at 4
    assert replication.truncation_for(1, 4, follower_epochs, 10) == 4
    # The leader's epoch 3 ends at 12, beyond this log: nothing to cut
    assert replication.truncation_for(3, 12, follower_epochs, 10) == 10
    # The leader's epoch 2, which this log lacks: cut at the end of its epoch 1 (5)
    assert replication.truncation_for(2, 8, follower_epochs, 10) == 5
    # The leader's epoch 0, older than all of this log's: cut at its first epoch's start
    assert replication.truncation_for(0, 3, epochs((1, 1)), 10) == 1
    # No epochs here at all: the leader's end
    assert replication.truncation_for(0, 3, LeaderEpochs(), 10) == 3


def test_a_follower_truncates_below_its_high_watermark_only_to_follow_the_cut():
    # Given a follower with HW 8 (after an unclean election, the leader lacks it)
    replication = follower(high_watermark=8)
    # When it truncates to 6 / Then its HW follows the cut
    assert replication.truncation_for(1, 6, epochs((1, 0)), 10) == 6
    assert replication.high_watermark == 6


def test_a_followers_high_watermark_is_the_leaders_capped_by_its_own_durable_log_end():
    replication = follower()
    assert replication.on_entries_durable(10, 7) == 7
    assert replication.on_entries_durable(12, 15) == 12
    # A leader with a stale, lower HW does not lower it
    assert replication.on_entries_durable(12, 3) == 12


def test_a_needs_repair_follower_is_repaired_once_it_reaches_the_leaders_high_watermark():
    replication = follower(needs_repair=True)
    replication.on_entries_durable(10, 15)
    assert replication.needs_repair is True
    replication.on_entries_durable(15, 15)
    assert replication.needs_repair is False


def test_a_follower_whose_log_end_fell_below_its_high_watermark_needs_repair():
    # Given a follower with HW 9 whose disk now ends at 4
    replication = follower(high_watermark=9)
    replication.next_fetch(4, epochs((1, 0)))
    # Then it marks itself needs-repair, and its HW is its log end
    assert (replication.needs_repair, replication.high_watermark) == (True, 4)


def test_a_follower_cannot_follow_itself():
    with pytest.raises(AssertionError, match="follow itself"):
        FollowerReplication("orders-0", "a", record(), 0, LeaderEpochs())
