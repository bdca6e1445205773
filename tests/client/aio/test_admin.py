"""AIOAdmin against a scripted broker (tests/client/scripted_broker.py): its calls
check their arguments as the sync Admin's do, before anything is sent."""

from __future__ import annotations

import asyncio

import pytest

from plinth.client.aio.admin import AIOAdmin
from plinth.errors import WrongEventLoopError
from tests.client.test_admin import (BAD_ADMIN_OPTIONS, BAD_CALLS, DELETE_OFFSETS_SCRIPT,
                                     LAG_SCRIPT, SLOW_STORE_LOOK_UP_SCRIPT, SUBSCRIBED_SAID,
                                     described)


@pytest.mark.parametrize("call, error, message", BAD_CALLS)
def test_an_argument_of_the_wrong_type_or_range_is_refused_naming_it_before_anything_is_sent(
        scripted, call, error, message):
    broker = scripted([])

    async def scenario():
        async with AIOAdmin(broker=broker.url, request_timeout_ms=1_000) as admin:
            with pytest.raises(error, match=message):
                await call(admin)

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert broker.requests == []


def test_group_lag_leaves_out_a_topic_deleted_since_the_group_committed_and_shows_the_rest(
        scripted):
    broker = scripted(LAG_SCRIPT)

    async def scenario():
        async with AIOAdmin(broker=broker.url, request_timeout_ms=2_000) as admin:
            return await admin.group_lag("g")

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [("t", 0, 3, 10, 7)]


def test_a_look_up_by_time_the_store_is_slow_to_answer_is_retried_until_found(scripted):
    broker = scripted(SLOW_STORE_LOOK_UP_SCRIPT)

    async def scenario():
        async with AIOAdmin(broker=broker.url, request_timeout_ms=5_000) as admin:
            return await admin.list_offsets("t", 0, 5)

    assert asyncio.run(asyncio.wait_for(scenario(), 10)).found_offset == 7
    assert [view.kind for _, view in broker.requests] == ["listOffsets"] * 3


def test_deleting_group_offsets_asks_a_topic_at_a_time_and_answers_each_partition(scripted):
    broker = scripted(DELETE_OFFSETS_SCRIPT)

    async def scenario():
        async with AIOAdmin(broker=broker.url, request_timeout_ms=5_000) as admin:
            return await admin.delete_group_offsets("g", [("b", 2), ("a", 1), ("a", 0)])

    outcomes = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert described(outcomes) == {("a", 0): SUBSCRIBED_SAID, ("a", 1): None, ("b", 2): None}
    assert broker.requests[0][1].kind == "metadata"
    assert [view.partitions for _, view in broker.requests[1:]] == [
        {("a", 0), ("a", 1)}] * 2 + [{("b", 2)}]


def test_an_admin_awaited_on_another_loop_than_its_first_call_raises_at_once_naming_the_call(
        scripted):
    # Given an admin first used under one asyncio.run
    broker = scripted([])
    admin = AIOAdmin(broker=broker.url, request_timeout_ms=1_000)
    asyncio.run(admin.__aenter__())

    # When a second asyncio.run calls it, then closes it
    async def second():
        with pytest.raises(WrongEventLoopError, match=r"AIOAdmin\.list_topics\(\) was awaited on "
                                                      r"an event loop other than the one this "
                                                      r"AIOAdmin was first used on, which is "
                                                      r"closed: .* create the AIOAdmin inside"):
            await admin.list_topics()
        # (a call of several requests too, refused before any)
        with pytest.raises(WrongEventLoopError, match=r"AIOAdmin\.group_lag\(\) was awaited"):
            await admin.group_lag("g")
        with pytest.raises(WrongEventLoopError, match=r"AIOAdmin\.close\(\) .* Its socket is "
                                                      r"closed; nothing was lost"):
            await admin.close()

    asyncio.run(asyncio.wait_for(second(), 10))
    # Then nothing was asked of the broker, and the socket is closed
    assert broker.requests == [] and admin._conn.closed


@pytest.mark.parametrize("options, error, message", BAD_ADMIN_OPTIONS)
def test_a_request_timeout_out_of_range_is_refused_in_the_constructor_as_the_producers_is(
        options, error, message):
    with pytest.raises(error, match=message):
        AIOAdmin(broker="tcp://127.0.0.1:1", **options)
