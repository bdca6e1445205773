"""AIOConnection: the sync Connection's replies, awaited on an event loop, against a
scripted broker (a real ROUTER socket on loopback, tests/client/scripted_broker.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from plinth import limits, protocol
from plinth.client.aio.connection import AIOConnection
from plinth.errors import (PlinthTimeoutError, RequestTooLargeError, UnavailableError,
                           UnknownTopicError)
from tests.client.scripted_broker import Replies
from tests.client.test_connection import LOST, THERE_AND_SLOW


AT_ONCE_S = 5   # far less than the 10 s timeouts, far more than a loopback reply takes


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def test_a_request_is_answered_with_the_brokers_error(scripted):
    broker = scripted([UnknownTopicError("no such topic 'x'")])

    async def scenario():
        conn = AIOConnection(broker.url)
        try:
            request_id = conn.next_request_id()
            with pytest.raises(UnknownTopicError, match="no such topic"):
                await conn.request_async(protocol.encode_metadata(request_id, ["x"]), request_id,
                                         5_000)
        finally:
            conn.close()

    run(scenario())


def test_a_header_over_the_limit_is_refused_at_once_and_never_sent(scripted):
    # Given a broker that answers every request
    broker = scripted([UnknownTopicError("no such topic 'x'")] * 2)

    async def scenario():
        conn = AIOConnection(broker.url)
        try:
            # When a request whose header is over HEADER_BYTES_MAX is sent
            header = protocol.encode_topic_request(1, "describeTopic",
                                                   "t" * limits.HEADER_BYTES_MAX)
            with pytest.raises(RequestTooLargeError) as refused:
                await conn.request_async(header, 1, 5_000)
            # Then it is refused, naming its size and the limit, and never sent: the
            # broker's first request is the next one
            assert f"request header is {len(header)} bytes, over the limit of " \
                   f"{limits.HEADER_BYTES_MAX} bytes (64 KiB)" in str(refused.value)
            with pytest.raises(UnknownTopicError):
                await conn.request_async(protocol.encode_metadata(2, ["x"]), 2, 5_000)
            assert [r.request_id for r in broker.wait_for_requests(1)] == [2]
        finally:
            conn.close()

    run(scenario())


def test_no_reply_in_time_raises_plinth_timeout_and_the_loop_runs_other_tasks_meanwhile(
        scripted):
    broker = scripted([lambda request: None])
    ticks = []

    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    async def scenario():
        conn = AIOConnection(broker.url)
        task = asyncio.get_running_loop().create_task(ticker())
        try:
            request_id = conn.next_request_id()
            started_s = time.monotonic()
            with pytest.raises(PlinthTimeoutError, match=f"request {request_id} within 300 ms"):
                await conn.request_async(protocol.encode_metadata(request_id, ["x"]), request_id,
                                         300)
            return time.monotonic() - started_s
        finally:
            task.cancel()
            conn.close()

    assert 0.29 <= run(scenario()) < 3
    assert len(ticks) >= 10   # the wait awaited: it did not block the loop for 300 ms


def test_replies_that_arrive_out_of_order_each_reach_their_own_request(scripted):
    # The broker holds the first request and answers both with the second, in reverse
    first_request = []

    def hold(request):
        first_request.append(request)
        return None

    def both(request):
        return Replies([[error_frame(request.request_id)],
                        [error_frame(first_request[0].request_id)]])

    def error_frame(request_id):
        return protocol.encode_error(request_id, UnknownTopicError(f"r{request_id}"))

    broker = scripted([hold, both])

    async def scenario():
        conn = AIOConnection(broker.url)
        try:
            ids = [conn.next_request_id(), conn.next_request_id()]
            for request_id in ids:
                conn.send(protocol.encode_metadata(request_id, ["x"]))
            outcomes = []
            for request_id in ids:
                with pytest.raises(UnknownTopicError) as raised:
                    await conn.wait_for_async(request_id, 5_000)
                outcomes.append(str(raised.value))
            return ids, outcomes
        finally:
            conn.close()

    ids, outcomes = run(scenario())
    assert outcomes == [f"r{ids[0]}", f"r{ids[1]}"]


def test_unavailable_is_retried_with_backoff_until_an_answer_comes(scripted):
    broker = scripted([UnavailableError("shard restarting"), UnavailableError("still"),
                       UnknownTopicError("answered")])

    async def scenario():
        conn = AIOConnection(broker.url)
        try:
            with pytest.raises(UnknownTopicError, match="answered"):
                await conn.request_retrying_async(
                    lambda request_id: protocol.encode_metadata(request_id, ["x"]), 10_000)
        finally:
            conn.close()

    run(scenario())
    assert len(broker.requests) == 3


def answered_late(error, delay_s: float):
    """A script step: ``error``, ``delay_s`` after the request came (a slow broker), so that
    the reply arrives while the client awaits it rather than before it begins to."""
    def step(request):
        time.sleep(delay_s)
        return [protocol.encode_error(request.request_id, error)]
    return step


def test_a_wait_in_the_task_whose_earlier_wait_was_cancelled_is_woken_by_its_reply(scripted):
    # Given a connection with a first reply (settled: its waits no longer wake to look at
    # the handshakes), to a broker that never answers the next request and answers the
    # one after it late
    broker = scripted([UnknownTopicError("settled"), lambda request: None,
                       answered_late(UnknownTopicError("answered"), 0.05)])

    async def scenario():
        conn = AIOConnection(broker.url)
        try:
            first = conn.next_request_id()
            with pytest.raises(UnknownTopicError, match="settled"):
                await conn.request_async(protocol.encode_metadata(first, ["x"]), first, 10_000)
            # When a wait for a reply is cancelled (asyncio.timeout cancels the task)
            unanswered = conn.next_request_id()
            conn.send(protocol.encode_metadata(unanswered, ["x"]))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await conn.wait_for_async(unanswered, 10_000)
            # and the same task then asks again
            again = conn.next_request_id()
            started_s = time.monotonic()
            with pytest.raises(UnknownTopicError, match="answered"):
                await conn.request_async(protocol.encode_metadata(again, ["x"]), again, 10_000)
            # Then the reply ends that wait when it comes, not the request's timeout
            return time.monotonic() - started_s
        finally:
            conn.close()

    assert run(scenario()) < AT_ONCE_S


def test_a_caller_that_leaves_a_reply_unread_and_waits_again_lets_other_tasks_run(scripted):
    # Given a connection with a reply it has not read (readable at once, every time)
    broker = scripted([UnknownTopicError("left unread")])
    ran = asyncio.Event()

    async def other():
        ran.set()

    async def scenario():
        conn = AIOConnection(broker.url)
        try:
            request_id = conn.next_request_id()
            conn.send(protocol.encode_metadata(request_id, ["x"]))
            await conn.wait_async(10_000)
            # When a loop waits again and again without reading it (as the producer's idle
            # sender leaves a direct socket's monitor events), bounded here
            asyncio.get_running_loop().create_task(other())
            for _ in range(1_000):
                if ran.is_set():
                    break
                await conn.wait_async(10_000)
            # Then the other task ran: each wait let the loop run
            return ran.is_set()
        finally:
            conn.close()

    assert run(scenario())


def test_a_timeout_says_the_broker_is_there_only_while_its_connection_lasts(scripted):
    # Given a broker that answered the client's first request, then answers nothing
    broker = scripted([lambda r: [protocol.encode_offsets_reply(
        r.request_id, protocol.PartitionInfo(0))]])

    async def request(conn, request_id: int, timeout_ms: int):
        await conn.request_async(protocol.encode_list_offsets(request_id, "t", 0), request_id,
                                 timeout_ms)

    async def scenario():
        conn = AIOConnection(broker.url)
        try:
            await request(conn, 1, 5_000)
            # When a request times out while it is still connected / Then the broker is
            # there and slow
            with pytest.raises(PlinthTimeoutError, match=THERE_AND_SLOW):
                await request(conn, 2, 200)
            # When the broker goes away and a request times out / Then the connection
            # was lost, and the broker is not said to be there
            broker.close()
            with pytest.raises(PlinthTimeoutError, match=LOST) as err:
                await request(conn, 3, 500)
            assert "is there and admitted" not in str(err.value)
        finally:
            conn.close()

    run(scenario())
