"""AIOAdmin against a scripted broker (tests/client/scripted_broker.py): its calls
check their arguments as the sync Admin's do, before anything is sent."""

from __future__ import annotations

import asyncio

import pytest

from plinth.client.aio.admin import AIOAdmin
from tests.client.test_admin import BAD_CALLS, LAG_SCRIPT


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
