"""client/group_membership.py: the heartbeat thread against a scripted coordinator
(tests/client/scripted_broker.py). The thread's state is read as the consumer reads
it, through take_target() and identity(), polled with a bound."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from plinth import limits, protocol
from plinth.client.group_membership import GroupMembership
from plinth.protocol import LEAVE_EPOCH
from plinth.errors import (CommitFailedError, InvalidConfigError, NotAuthorizedError,
                           StaleMemberEpochError, UnavailableError, UnknownMemberIdError)
from tests.support import wait_until

T0, T1 = ("t", 0), ("t", 1)


def heartbeat(member_id: str, epoch: int, assignment: set, interval_ms: int = 100):
    """A script step: the coordinator's answer to a heartbeat."""
    return lambda request: [protocol.encode_heartbeat_reply(
        request.request_id, member_id, epoch, interval_ms, assignment)]


def left(request):
    """A script step: the coordinator's answer to a leave heartbeat."""
    return [protocol.encode_heartbeat_reply(request.request_id, request.member_id, LEAVE_EPOCH,
                                            100, set())]


def steady(member_id: str, epoch: int, assignment: set, interval_ms: int = 100) -> list:
    """Script steps from here on: the same answer to every heartbeat, and to a leave."""
    answer = heartbeat(member_id, epoch, assignment, interval_ms)
    return [lambda request: left(request) if request.member_epoch == LEAVE_EPOCH
            else answer(request)] * 200


@pytest.fixture
def member_of(scripted):
    """``member_of(script, session_timeout_ms=10_000, request_timeout_ms=5_000,
    max_poll_interval_ms=300_000)``: a
    started GroupMembership of group g on topic t, closed at the end."""
    members = []

    def make(script, session_timeout_ms: int = 10_000, request_timeout_ms: int = 5_000,
             max_poll_interval_ms: int = limits.MAX_POLL_INTERVAL_MS_DEFAULT):
        broker = scripted(script)
        member = GroupMembership(broker.url, "g", ["t"], session_timeout_ms=session_timeout_ms,
                                 assignor="", request_timeout_ms=request_timeout_ms,
                                 max_poll_interval_ms=max_poll_interval_ms)
        member.start()
        members.append(member)
        return member, broker

    yield make
    for member in members:
        member.close()


def test_the_target_comes_from_the_coordinator_and_is_offered_until_owned(member_of):
    # Given a coordinator that assigns t-0 and t-1, asking for a heartbeat every 3 s
    member, broker = member_of(steady("m-1", 1, {T0, T1}, interval_ms=3_000))
    # Then the first heartbeat joins as a new member with the subscription
    first = broker.wait_for_requests(1)[0]
    assert (first.group, first.member_id, first.member_epoch, first.topics) == ("g", "", 0, ("t",))
    # And the consumer is offered the target until it owns it
    target = wait_until(member.take_target, timeout_s=10)
    assert target == {T0, T1} and member.identity() == ("m-1", 1)
    # When it reports owning them
    reported_s = time.monotonic()
    member.set_owned(target)
    # Then nothing more is offered, and a heartbeat carries them at once (not after 3 s)
    assert member.take_target() is None
    second = broker.wait_for_requests(2)[1]
    assert (second.member_id, second.member_epoch, second.owned) == ("m-1", 1, {T0, T1})
    assert broker.requests[1][0] - reported_s < 1.5


def test_heartbeats_report_the_target_being_applied_until_the_consumer_says_what_it_owns(
        member_of):
    # Given a coordinator that assigns t-0 and t-1, then takes t-1 away
    member, broker = member_of([heartbeat("m-1", 1, {T0, T1}), *steady("m-1", 2, {T0})])
    # When the consumer takes the first target and is still applying it (on_assign)
    assert wait_until(member.take_target, timeout_s=10) == {T0, T1}
    # Then the heartbeats meanwhile report both as owned: a report without t-1 would
    # free it for another member while this one is adding it
    later = broker.wait_for_requests(4)[2:]
    assert [request.owned for request in later] == [{T0, T1}, {T0, T1}]
    # And once the consumer has applied it, and then the newer one, only t-0
    member.set_owned({T0, T1})
    assert member.take_target() == {T0}
    member.set_owned({T0})
    wait_until(lambda: broker.requests[-1][1].owned == {T0}, timeout_s=10)


@pytest.mark.parametrize("error", [UnknownMemberIdError("member m-1 is not in group g"),
                                   StaleMemberEpochError("epoch 1 is older than 2")])
def test_a_member_the_coordinator_does_not_know_drops_its_partitions_and_rejoins(member_of, error):
    # Given a member that owns t-0, then hears that the coordinator does not know it
    member, broker = member_of([heartbeat("m-1", 1, {T0}), error, *steady("m-2", 1, {T1})])
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    # Then its target becomes empty: the consumer drops every partition
    wait_until(lambda: member.take_target() == set(), timeout_s=10)
    member.set_owned(set())
    # And it joins again as a new member
    third = broker.wait_for_requests(3)[2]
    assert (third.member_id, third.member_epoch, third.owned) == ("", 0, frozenset())
    assert wait_until(member.take_target, timeout_s=10) == {T1}
    assert member.identity() == ("m-2", 1)


def test_a_failed_heartbeat_within_the_session_timeout_keeps_the_membership(member_of):
    member, broker = member_of([heartbeat("m-1", 1, {T0}),
                                UnavailableError("shard-0 is restarting"),
                                *steady("m-1", 2, {T0})])
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    # Then the heartbeat after the failure is still the same member's
    third = broker.wait_for_requests(3)[2]
    assert (third.member_id, third.member_epoch, third.owned) == ("m-1", 1, {T0})
    assert member.take_target() is None


def test_the_heartbeat_error_is_the_last_failures_until_a_heartbeat_is_answered(member_of):
    # Given a coordinator whose first heartbeat fails, and which answers the next only
    # when the test lets it
    answer_now = threading.Event()

    def answered_when_let(request):
        answer_now.wait(10)
        return heartbeat("m-1", 1, {T0})(request)

    member, broker = member_of([UnavailableError("shard-0 is restarting"), answered_when_let,
                                *steady("m-1", 1, {T0})])
    # When the first heartbeat has failed / Then it is the error, while the retry waits
    error = wait_until(member.heartbeat_error, timeout_s=10)
    assert (type(error), str(error)) == (UnavailableError, "shard-0 is restarting")
    broker.wait_for_requests(2)
    assert member.heartbeat_error() is error
    # And once a heartbeat is answered, there is none
    answer_now.set()
    wait_until(lambda: member.heartbeat_error() is None, timeout_s=10)
    assert member.identity() == ("m-1", 1)


def test_a_member_whose_heartbeats_go_unanswered_for_a_session_timeout_drops_its_partitions(
        member_of):
    # Given a member with a 1 s session and 200 ms requests, whose coordinator answers
    # for longer than a session (12 heartbeats, 100 ms apart), then stops
    answered = 12
    member, broker = member_of(steady("m-1", 1, {T0})[:answered], session_timeout_ms=1_000,
                               request_timeout_ms=200)
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    # Then its target becomes empty once a whole session passed since the last answer
    wait_until(lambda: member.take_target() == set(), timeout_s=10)
    lost_s = time.monotonic()
    last_answered_s = broker.requests[answered - 1][0]
    assert lost_s - last_answered_s >= 1.0 * 0.9
    assert member.identity() == ("", 0)


def test_close_leaves_the_group_at_once(member_of):
    # Given a member asked to heartbeat only every 3 s
    member, broker = member_of(steady("m-1", 4, {T0}, interval_ms=3_000))
    wait_until(member.take_target, timeout_s=10)
    # When it is closed
    started = time.monotonic()
    member.close()
    # Then it has sent a leave heartbeat (the leave epoch, nothing owned) without waiting
    leave = broker.wait_for_requests(2)[1]
    assert (leave.member_id, leave.member_epoch, leave.owned) == ("m-1", LEAVE_EPOCH, frozenset())
    assert time.monotonic() - started < 1.5


def test_close_without_having_joined_sends_no_leave(member_of):
    member, broker = member_of([], request_timeout_ms=300)
    broker.wait_for_requests(1)
    member.close()
    assert all(request.member_epoch == 0 for _, request in broker.requests)


def arrivals(broker, count: int) -> list[float]:
    """When each of the first ``count`` heartbeats arrived (monotonic seconds)."""
    broker.wait_for_requests(count)
    return [arrived for arrived, _ in broker.requests[:count]]


def test_a_failed_heartbeat_is_retried_after_a_backoff_not_a_whole_interval(member_of):
    # Given a member told to heartbeat every 3 s, whose second heartbeat (sent at once:
    # it reports what it owns) finds its coordinator moving
    member, broker = member_of([heartbeat("m-1", 1, {T0}, interval_ms=3_000),
                                UnavailableError("group g: its shard shard-0 is unavailable"),
                                *steady("m-1", 1, {T0}, interval_ms=3_000)])
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    # Then the next heartbeat comes after the retry backoff, well within the interval
    _, failed_s, retried_s = arrivals(broker, 3)
    assert retried_s - failed_s < 1.5
    # And once answered, the member waits its interval again: no fourth heartbeat yet
    assert len(broker.requests) == 3 and member.identity() == ("m-1", 1)


def test_a_member_that_owns_nothing_rejoins_at_once_when_the_coordinator_does_not_know_it(
        member_of):
    # Given a member assigned nothing, told to heartbeat every 3 s, whose next heartbeat
    # reaches a new coordinator that does not know it
    member, broker = member_of([heartbeat("m-1", 1, set(), interval_ms=3_000),
                                UnknownMemberIdError("member m-1 is not in group g"),
                                *steady("m-2", 1, {T1}, interval_ms=3_000)])
    broker.wait_for_requests(1)
    wait_until(lambda: member.identity() == ("m-1", 1), timeout_s=10)
    member.heartbeat_now()
    # Then it joins again at once, not an interval later, and gets its partition
    _, refused_s, joined_s = arrivals(broker, 3)
    assert joined_s - refused_s < 1.5
    assert broker.requests[2][1].member_id == ""
    assert wait_until(member.take_target, timeout_s=10) == {T1}


def test_heartbeat_now_sends_a_heartbeat_before_the_interval(member_of):
    # Given a member told to heartbeat every 3 s
    member, broker = member_of(steady("m-1", 1, set(), interval_ms=3_000))
    first_s, = arrivals(broker, 1)
    wait_until(lambda: member.identity() == ("m-1", 1), timeout_s=10)
    # When the consumer asks for one (a commit was refused: member unknown)
    member.heartbeat_now()
    # Then it comes at once
    _, second_s = arrivals(broker, 2)
    assert second_s - first_s < 1.5


def unanswered(request):
    """A script step: no answer (the coordinator went away with the request)."""
    return None


def test_heartbeat_now_gives_up_the_members_heartbeat_in_flight_and_the_rejoin_follows(
        member_of):
    # Given a member owning t-0 whose next heartbeat went with a coordinator that
    # restarted (never answered; the request times out after 5 s), and whose new
    # coordinator does not know it
    member, broker = member_of([heartbeat("m-1", 1, {T0}, interval_ms=30_000), unanswered,
                                UnknownMemberIdError("member m-1 is not in group 'g'"),
                                *steady("m-2", 1, {T0})])
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    broker.wait_for_requests(2)
    # When a commit is refused as an unknown member's (the consumer calls heartbeat_now)
    asked_s = time.monotonic()
    member.heartbeat_now()
    # Then a heartbeat goes at once, not once the lost one times out, and is told the
    # member is unknown: its partitions are lost
    third = broker.wait_for_requests(3)[2]
    assert broker.requests[2][0] - asked_s < 1.5 and third.member_id == "m-1"
    wait_until(lambda: member.take_target() == set(), timeout_s=10)
    assert member.target_lost
    # And once the consumer dropped them, it joins again
    member.set_owned(set())
    fourth = broker.wait_for_requests(4)[3]
    assert (fourth.member_id, fourth.member_epoch) == ("", 0)
    assert broker.requests[3][0] - asked_s < 3.0


def test_close_gives_up_a_members_heartbeat_in_flight_at_once_and_leaves(member_of):
    # Given a member owning t-0 whose second heartbeat is never answered (its
    # coordinator hangs), with a request timeout of 10 s
    member, broker = member_of([heartbeat("m-1", 1, {T0}, interval_ms=100), unanswered, left],
                               request_timeout_ms=10_000)
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    broker.wait_for_requests(2)
    # When it is closed
    started_s = time.monotonic()
    member.close()
    # Then close() does not wait out the heartbeat's request timeout, and the leave goes
    assert time.monotonic() - started_s < 3
    leave = broker.wait_for_requests(3)[2]
    assert (leave.member_id, leave.member_epoch) == ("m-1", LEAVE_EPOCH)


def test_close_gives_up_a_join_in_flight_after_the_leave_bound(member_of, monkeypatch):
    # Given a member whose join is never answered, with a request timeout of 30 s
    monkeypatch.setattr(limits, "GROUP_LEAVE_TIMEOUT_MS_MAX", 500)
    member, broker = member_of([unanswered], request_timeout_ms=30_000)
    broker.wait_for_requests(1)
    # When it is closed / Then it waits for the join's answer (which would name the member
    # to leave) about the leave's bound, not the request timeout
    started_s = time.monotonic()
    member.close()
    assert 0.5 <= time.monotonic() - started_s < 3


def test_heartbeat_now_does_not_give_up_a_join_in_flight(member_of):
    # Given a member whose join is not answered yet
    member, broker = member_of([unanswered, *steady("m-1", 1, set())])
    broker.wait_for_requests(1)
    # When a commit refused as unknown asks for a heartbeat now
    member.heartbeat_now()
    # Then the join is still waited for: giving it up would leave the member it made
    # in the group, assigned partitions, until its session timeout
    time.sleep(10 * limits.CLIENT_GIVE_UP_CHECK_MS / 1000)   # long past a give-up's look
    assert len(broker.requests) == 1


def test_a_refused_session_timeout_or_assignor_ends_the_membership_and_is_raised_not_retried(
        member_of):
    # Given a coordinator that refuses the member's options (invalidConfig), then
    # would answer every heartbeat
    member, broker = member_of([InvalidConfigError("assignor 'roundrobin' for group 'g' is "
                                                   "not one of sticky, range"),
                                *steady("m-1", 1, {T0})])
    # Then the refusal is what the consumer's poll raises
    wait_until(lambda: member._fatal is not None, timeout_s=10)
    with pytest.raises(InvalidConfigError, match="roundrobin"):
        member.raise_if_refused()
    # And no heartbeat follows it (only the one refused was sent)
    assert [type(r) for _, r in broker.requests] == [protocol.GroupHeartbeatRequest]


def test_a_refusal_is_left_to_the_consumers_poll_to_raise_not_logged_as_a_warning_too(
        member_of, caplog):
    # Given a coordinator that refuses the client the group (its ACL)
    caplog.set_level(logging.DEBUG, logger="plinth.client.group_membership")
    member, _ = member_of([NotAuthorizedError("client abc may not consume in group 'g'")])
    wait_until(lambda: member._fatal is not None, timeout_s=10)
    # Then the poll raises it, and nothing is logged at warning or above: the command
    # that polls says it once (it was logged as an error, then said again)
    with pytest.raises(NotAuthorizedError, match="may not consume in group 'g'"):
        member.raise_if_refused()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_error_no_heartbeat_expects_ends_the_membership_and_is_raised_to_the_consumer(
        member_of, scripted):
    # Given a membership whose heartbeat cannot even be encoded (a group that is not a str)
    broker = scripted(steady("m-1", 1, {T0}))
    member = GroupMembership(broker.url, 5, ["t"], session_timeout_ms=10_000, assignor="",
                             request_timeout_ms=5_000)
    member.start()
    try:
        # Then the heartbeat thread does not die silently: the consumer's poll raises it
        wait_until(lambda: member._fatal is not None, timeout_s=10)
        with pytest.raises(Exception, match="[Tt]ype"):
            member.raise_if_refused()
    finally:
        member.close()


@pytest.fixture
def stepped(scripted):
    """``stepped(script, session_timeout_ms=10_000)``: a GroupMembership whose thread is
    not started: the test sends each heartbeat itself (``_heartbeat_once``, the step
    the thread repeats), so that what a heartbeat would carry, or whether one is
    sent at all, is decided by the state alone, not by when the thread runs."""
    members = []

    def make(script, session_timeout_ms: int = 10_000):
        broker = scripted(script)
        member = GroupMembership(broker.url, "g", ["t"], session_timeout_ms=session_timeout_ms,
                                 assignor="", request_timeout_ms=5_000)
        members.append(member)
        return member, broker

    yield make
    for member in members:
        member._conn.close()


def test_a_lost_member_rejoins_only_after_the_consumer_dropped_its_partitions_even_if_woken(
        stepped):
    # Given a member owning t-0 that learns the coordinator does not know it any more
    member, broker = stepped([heartbeat("m-1", 1, {T0}), UnknownMemberIdError("no m-1"),
                              *steady("m-2", 1, {T0})])
    member._heartbeat_once()
    member.set_owned(member.take_target())
    member._heartbeat_once()
    # When a refused commit wakes the heartbeat before the consumer dropped t-0
    member.heartbeat_now()
    member._heartbeat_once()
    # Then no heartbeat rejoins: a new member could be given t-0 while this one reads it
    assert len(broker.requests) == 2
    assert member._next_wait_s() > 0
    # And the consumer is told t-0 is lost, not revoked; once dropped, the member rejoins
    assert member.take_target() == set() and member.target_lost
    member.set_owned(set())
    member._heartbeat_once()
    rejoin = broker.wait_for_requests(3)[2]
    assert (rejoin.member_id, rejoin.member_epoch, rejoin.owned) == ("", 0, frozenset())
    # And what the new member is given, t-0 again, is taken as a plain assignment
    assert member.take_target() == {T0} and not member.target_lost


def test_no_records_are_handed_out_while_the_session_may_have_ended_until_a_heartbeat_says(
        stepped):
    # Given a member with the shortest session, answered once
    session_ms = limits.SESSION_TIMEOUT_MS_MIN
    member, broker = stepped([heartbeat("m-1", 1, {T0}), *steady("m-1", 1, {T0})],
                             session_timeout_ms=session_ms)
    member._heartbeat_once()
    member.set_owned(member.take_target())
    assert member.records_allowed()
    # When no heartbeat is answered for a session timeout (its loop or thread blocked)
    wait_until(lambda: not member.records_allowed(), timeout_s=10, interval_s=0.01)
    # Then it may hand out no records, and the heartbeat is woken to learn whether it
    # is still a member
    assert member._wake.is_set()
    # And once a heartbeat sent after that is answered, it may again
    member._heartbeat_once()
    assert member.records_allowed()


def test_a_member_that_learns_it_was_expelled_hands_out_no_records_until_it_dropped_them(
        stepped):
    # Given a member owning t-0 whose heartbeat finds it expelled
    member, broker = stepped([heartbeat("m-1", 1, {T0}), UnknownMemberIdError("no m-1")])
    member._heartbeat_once()
    member.set_owned(member.take_target())
    member._heartbeat_once()
    # Then records of t-0 may not be handed out until the consumer took the loss
    assert not member.records_allowed()
    assert member.take_target() == set() and member.target_lost
    member.set_owned(set())
    assert member.records_allowed()


def test_a_member_not_polled_within_max_poll_interval_ms_leaves_and_rejoins_at_the_next_poll(
        member_of, caplog):
    # Given a member that owns t-0, polled once, with a max_poll_interval_ms of 1 s
    # (the coordinator asks for a heartbeat only every 3 s: the leave does not wait),
    # whose coordinator makes a member that joins after the leave m-2, owning t-1
    has_left = []

    def coordinator(request):
        if request.member_epoch == LEAVE_EPOCH:
            has_left.append(request)
            return left(request)
        if has_left:
            return heartbeat("m-2", 1, {T1}, interval_ms=3_000)(request)
        return heartbeat("m-1", 1, {T0}, interval_ms=3_000)(request)

    member, broker = member_of([coordinator] * 50, max_poll_interval_ms=1_000)
    polled_s = time.monotonic()
    member.note_poll()
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    # When the application does not poll again
    with caplog.at_level(logging.WARNING, logger="plinth.client.group_membership"):
        leave = wait_until(lambda: next((r for _, r in broker.requests
                                         if r.member_epoch == LEAVE_EPOCH), None), timeout_s=10)
    # Then the heartbeat leaves the group once the interval ran out, not before
    assert (leave.member_id, leave.owned) == ("m-1", frozenset())
    assert time.monotonic() - polled_s >= 1.0
    assert "has not called poll() for" in caplog.text and "max_poll_interval_ms=1000" in caplog.text
    # And the partitions are lost: no record is handed out, the consumer drops them, and
    # it may not commit
    assert not member.records_allowed()
    assert member.take_target() == set() and member.target_lost
    with pytest.raises(CommitFailedError, match=r"group g: cannot commit: this consumer left the "
                                                r"group after \d+ ms without a poll\(\), over "
                                                r"max_poll_interval_ms=1000"):
        member.raise_if_left_unpolled()
    member.set_owned(set())
    # And no heartbeat rejoins before the next poll
    sent = len(broker.requests)
    assert member.take_target() is None and len(broker.requests) == sent
    # When the application polls again
    polled_s = time.monotonic()
    member.note_poll()
    # Then it rejoins as a new member at once (the interval is 3 s), and may commit
    rejoin = broker.wait_for_requests(sent + 1)[sent]
    assert (rejoin.member_id, rejoin.member_epoch) == ("", 0)
    assert broker.requests[sent][0] - polled_s < 1.5
    assert wait_until(member.take_target, timeout_s=10) == {T1}
    member.raise_if_left_unpolled()


def test_a_member_polled_within_max_poll_interval_ms_stays(member_of):
    # Given a member polled every 0.2 s with a max_poll_interval_ms of 1 s
    member, broker = member_of(steady("m-1", 1, {T0}), max_poll_interval_ms=1_000)
    member.set_owned(wait_until(member.take_target, timeout_s=10))
    for _ in range(15):
        member.note_poll()
        # (a real pause between polls: what is measured is the time without one)
        time.sleep(0.2)
    # Then it never left: no leave heartbeat, the same member
    assert all(r.member_epoch != LEAVE_EPOCH for _, r in broker.requests)
    assert member.identity() == ("m-1", 1) and member.take_target() is None
