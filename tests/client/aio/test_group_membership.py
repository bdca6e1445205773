"""client/aio/group_membership.py: the heartbeat task against a scripted coordinator
(tests/client/scripted_broker.py), with the sync membership's script steps. The
task's state is read as the AIOConsumer reads it, through take_target() and
identity(), polled on the loop with a bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from plinth import limits
from plinth.client.aio.group_membership import AIOGroupMembership
from plinth.errors import InvalidConfigError, InvalidGroupError, UnknownMemberIdError
from plinth.protocol import LEAVE_EPOCH
from tests.client.test_group_membership import T0, T1, heartbeat, left, steady, unanswered

BOUND_S = 10


async def until(predicate):
    """The predicate's first truthy value, polled on the loop (bounded by the caller)."""
    while not (value := predicate()):
        await asyncio.sleep(0.01)
    return value


def run(scripted, script, scenario, **options):
    broker = scripted(script)

    async def main():
        member = AIOGroupMembership(broker.url, "g", ["t"], assignor="",
                                    **{"session_timeout_ms": 10_000, "request_timeout_ms": 5_000,
                                       **options})
        member.start()
        try:
            return await asyncio.wait_for(scenario(member, broker), BOUND_S)
        finally:
            await member.close()

    return asyncio.run(main()), broker


def test_the_target_comes_from_the_coordinator_and_owning_it_heartbeats_at_once(scripted):
    async def scenario(member, broker):
        target = await until(member.take_target)
        reported_s = time.monotonic()
        member.set_owned(target)
        assert member.take_target() is None
        await until(lambda: len(broker.requests) >= 2)
        return target, broker.requests[1][0] - reported_s, member.identity()

    (target, delay_s, identity), broker = run(
        scripted, steady("m-1", 1, {T0, T1}, interval_ms=3_000), scenario)
    first, second = broker.requests[0][1], broker.requests[1][1]
    assert (first.member_id, first.member_epoch, first.topics) == ("", 0, ("t",))
    assert target == {T0, T1} and identity == ("m-1", 1)
    assert (second.member_id, second.owned) == ("m-1", {T0, T1})
    assert delay_s < 1.5   # woken by set_owned, not after the 3 s interval


def test_a_member_the_coordinator_does_not_know_drops_its_partitions_and_rejoins(scripted):
    async def scenario(member, broker):
        member.set_owned(await until(member.take_target))
        await until(lambda: member.take_target() == set())
        member.set_owned(set())
        return await until(member.take_target), member.identity()

    (target, identity), broker = run(
        scripted, [heartbeat("m-1", 1, {T0}), UnknownMemberIdError("member m-1 is not in g"),
                   *steady("m-2", 1, {T1})], scenario)
    third = broker.requests[2][1]
    assert (third.member_id, third.member_epoch) == ("", 0)
    assert target == {T1} and identity == ("m-2", 1)


def test_a_refusal_no_retry_can_change_ends_the_membership_and_is_raised_to_the_consumer(
        scripted):
    async def scenario(member, broker):
        await until(lambda: member._fatal is not None)
        with pytest.raises(InvalidGroupError, match="Kafka"):
            member.raise_if_refused()

    run(scripted, [InvalidGroupError("group g is a Kafka client's")], scenario)


def test_close_leaves_the_group_at_once(scripted):
    async def scenario(member, broker):
        await until(member.take_target)
        started_s = time.monotonic()
        await member.close()
        return time.monotonic() - started_s

    took_s, broker = run(scripted, steady("m-1", 4, {T0}, interval_ms=3_000), scenario)
    leave = broker.requests[1][1]
    assert (leave.member_id, leave.member_epoch, leave.owned) == ("m-1", LEAVE_EPOCH, frozenset())
    assert took_s < 1.5


def test_close_gives_up_a_members_heartbeat_in_flight_at_once_and_leaves(scripted):
    # Given a member owning t-0 whose second heartbeat is never answered
    async def scenario(member, broker):
        member.set_owned(await until(member.take_target))
        await until(lambda: len(broker.requests) >= 2)
        started_s = time.monotonic()
        await member.close()
        return time.monotonic() - started_s

    # When it is closed, with a request timeout of 10 s
    took_s, broker = run(scripted, [heartbeat("m-1", 1, {T0}, interval_ms=100), unanswered,
                                    left], scenario, request_timeout_ms=10_000)
    # Then close() did not wait out the heartbeat's request timeout, and the leave went
    assert took_s < 3
    leave = broker.requests[2][1]
    assert (leave.member_id, leave.member_epoch) == ("m-1", LEAVE_EPOCH)


def test_close_gives_up_a_join_in_flight_after_the_leave_bound(scripted, monkeypatch):
    monkeypatch.setattr(limits, "GROUP_LEAVE_TIMEOUT_MS_MAX", 500)

    async def scenario(member, broker):
        await until(lambda: broker.requests)
        started_s = time.monotonic()
        await member.close()
        return time.monotonic() - started_s

    # Given a member whose join is never answered, with a request timeout of 30 s
    took_s, _ = run(scripted, [unanswered], scenario, request_timeout_ms=30_000)
    # When it is closed / Then it waited about the leave's bound, not the request timeout
    assert 0.5 <= took_s < 3


def test_a_refused_session_timeout_or_assignor_ends_the_membership_and_is_raised_not_retried(
        scripted):
    async def scenario(member, broker):
        await until(lambda: member._fatal is not None)
        with pytest.raises(InvalidConfigError, match="session_timeout_ms=400"):
            member.raise_if_refused()

    _, broker = run(scripted, [InvalidConfigError("session_timeout_ms=400 is outside 500..300000"),
                               *steady("m-1", 1, {T0})], scenario)
    assert len(broker.requests) == 1


def test_heartbeat_now_gives_up_the_members_heartbeat_in_flight_and_the_rejoin_follows(
        scripted):
    async def scenario(member, broker):
        # Given a member owning t-0 whose next heartbeat went with a coordinator that
        # restarted (never answered; the request times out after 5 s)
        member.set_owned(await until(member.take_target))
        await until(lambda: len(broker.requests) >= 2)
        # When a commit is refused as an unknown member's
        asked_s = time.monotonic()
        member.heartbeat_now()
        # Then its partitions are lost at once (the new heartbeat is refused), and
        # once dropped, it joins again
        await until(lambda: member.take_target() == set())
        lost = member.target_lost
        member.set_owned(set())
        await until(lambda: len(broker.requests) >= 4)
        return lost, broker.requests[3][0] - asked_s

    (lost, rejoined_s), broker = run(
        scripted, [heartbeat("m-1", 1, {T0}, interval_ms=30_000), unanswered,
                   UnknownMemberIdError("member m-1 is not in group 'g'"),
                   *steady("m-2", 1, {T0})], scenario)
    third, fourth = broker.requests[2][1], broker.requests[3][1]
    assert third.member_id == "m-1" and (fourth.member_id, fourth.member_epoch) == ("", 0)
    assert lost and rejoined_s < 3.0


def test_a_cancelled_close_ends_the_heartbeat_task_and_its_socket_at_once(scripted):
    async def scenario(member, broker):
        # Given a member whose leave goes unanswered (it would wait 5 s for the answer)
        await until(member.take_target)
        closing = asyncio.get_running_loop().create_task(member.close())
        await until(lambda: len(broker.requests) >= 2)
        # When the close() is cancelled while it awaits the leave's answer
        closing.cancel()
        await asyncio.wait({closing})
        # Then the heartbeat task ends at once all the same, and closes its socket
        ended, _ = await asyncio.wait({member._task}, timeout=1.5)
        return closing.cancelled(), bool(ended), member._conn.closed

    (cancelled, ended, closed), broker = run(
        scripted, [heartbeat("m-1", 1, {T0}, interval_ms=30_000), unanswered], scenario,
        request_timeout_ms=10_000)
    assert broker.requests[1][1].member_epoch == LEAVE_EPOCH
    assert cancelled and ended and closed
