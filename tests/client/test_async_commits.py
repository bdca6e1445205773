"""Commits sent without waiting (client/async_commits.py), through both consumers
against a scripted coordinator that takes commits and never answers them: each
commit ends, with a timeout once request_timeout_ms passes, and auto-commit sends
one at a time."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from plinth import Consumer, protocol
from plinth.client.aio.consumer import AIOConsumer
from plinth.errors import PlinthTimeoutError
from tests.client.test_consumer import GroupBroker

BOUND_S = 20
REQUEST_TIMEOUT_MS = 1_000
AUTO_COMMIT_INTERVAL_MS = 50   # 20 intervals in one request timeout


class SilentCoordinator(GroupBroker):
    """GroupBroker whose coordinator never answers a commit (it died with them)."""

    def answer(self, request):
        if type(request) is protocol.CommitOffsetsRequest:
            return None
        return super().answer(request)


class AnsweringCoordinator(GroupBroker):
    """GroupBroker whose coordinator takes every commit."""

    def answer(self, request):
        if type(request) is protocol.CommitOffsetsRequest:
            return [protocol.encode_ok(request.request_id)]
        return super().answer(request)


def commits_sent(broker) -> list[float]:
    return [arrived for arrived, request in broker.requests
            if type(request) is protocol.CommitOffsetsRequest]


def auto_commit_failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "auto-commit failed" in r.getMessage()]


def test_a_commit_async_unanswered_within_request_timeout_ms_ends_with_a_timeout_in_a_poll(
        scripted):
    # Given a group member whose coordinator takes commits and never answers them
    broker = scripted([SilentCoordinator().answer] * 50_000)
    consumer = Consumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                        enable_auto_commit=False, fetch_max_wait_ms=100,
                        request_timeout_ms=REQUEST_TIMEOUT_MS, direct_to_shards=False)
    outcomes = []
    try:
        records = []
        while not records:
            records = [r for rs in consumer.poll(100).values() for r in rs]
        # When it commits what it read without waiting, and polls on
        consumer.commit_async(callback=lambda offsets, error: outcomes.append((offsets, error)))
        deadline_s = time.monotonic() + BOUND_S
        while not outcomes and time.monotonic() < deadline_s:
            consumer.poll(100)
        # Then the callback ran with the commit's offsets and a timeout naming the option
        [(offsets, error)] = outcomes
        assert offsets == {("t", 0): records[-1].offset + 1}
        assert isinstance(error, PlinthTimeoutError)
        assert f"request_timeout_ms={REQUEST_TIMEOUT_MS}" in str(error)
        # And once only, though the consumer polls on
        consumer.poll(200)
        assert len(outcomes) == 1
    finally:
        consumer.close()


def first_records(consumer) -> list:
    records = []
    while not records:
        records = [r for rs in consumer.poll(100).values() for r in rs]
    return records


def test_close_waits_for_a_commit_async_in_flight_and_runs_its_callback(scripted):
    # Given a group member whose coordinator answers commits, having read records
    broker = scripted([AnsweringCoordinator().answer] * 50_000)
    consumer = Consumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                        enable_auto_commit=False, fetch_max_wait_ms=100,
                        request_timeout_ms=REQUEST_TIMEOUT_MS, direct_to_shards=False)
    records = first_records(consumer)
    outcomes = []
    # When it commits them without waiting, and closes without polling again
    consumer.commit_async(callback=lambda offsets, error: outcomes.append((offsets, error)))
    consumer.close()
    # Then close waited for the answer and ran the callback, once, with no error
    assert outcomes == [({("t", 0): records[-1].offset + 1}, None)]
    assert [type(r) for _, r in broker.requests].count(protocol.CommitOffsetsRequest) == 1


def test_close_ends_a_commit_async_never_answered_after_its_timeout_ms_with_its_callback(scripted):
    # Given a group member whose coordinator never answers a commit, having read records
    broker = scripted([SilentCoordinator().answer] * 50_000)
    consumer = Consumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                        enable_auto_commit=False, fetch_max_wait_ms=100,
                        request_timeout_ms=REQUEST_TIMEOUT_MS * 10, direct_to_shards=False)
    records = first_records(consumer)
    outcomes = []
    consumer.commit_async(callback=lambda offsets, error: outcomes.append((offsets, error)))
    # When it closes with a timeout shorter than its request timeout
    started_s = time.monotonic()
    consumer.close(timeout_ms=300)
    # Then close returned after about its timeout, not the request timeout, and the
    # callback ran once with an error naming close's timeout
    assert time.monotonic() - started_s < REQUEST_TIMEOUT_MS * 10 / 1000 / 2
    [(offsets, error)] = outcomes
    assert offsets == {("t", 0): records[-1].offset + 1}
    assert isinstance(error, PlinthTimeoutError)
    assert "consumer closed" in str(error) and "timeout_ms=300" in str(error)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"timeout_ms": "1s"}, TypeError, "close timeout_ms must be a number of ms"),
    ({"timeout_ms": -1}, ValueError, "close timeout_ms=-1 is outside"),
    ({"autocommit": "no"}, TypeError, "autocommit")])
def test_close_refuses_a_wrong_timeout_or_autocommit_and_stays_open(kwargs, error, message):
    consumer = Consumer(broker="tcp://127.0.0.1:1", group="g")
    with pytest.raises(error, match=message):
        consumer.close(**kwargs)
    consumer.close(timeout_ms=0)


def test_auto_commit_sends_one_commit_at_a_time_while_the_coordinator_does_not_answer(
        scripted, caplog):
    # Given a group member auto-committing every 50 ms whose coordinator never answers
    broker = scripted([SilentCoordinator().answer] * 50_000)
    consumer = Consumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                        auto_commit_interval_ms=AUTO_COMMIT_INTERVAL_MS, fetch_max_wait_ms=100,
                        request_timeout_ms=REQUEST_TIMEOUT_MS, direct_to_shards=False)
    caplog.set_level(logging.WARNING)
    try:
        # When it polls on, reading a record in each fetch, until a second commit goes
        deadline_s = time.monotonic() + BOUND_S
        while len(commits_sent(broker)) < 2 and time.monotonic() < deadline_s:
            consumer.poll(20)
        # Then the second went only once the first had timed out (request_timeout_ms,
        # 20 intervals), not an interval after the first
        first_s, second_s = commits_sent(broker)
        assert second_s - first_s >= REQUEST_TIMEOUT_MS / 1000 / 2
        [failure] = auto_commit_failures(caplog)
        assert "request_timeout_ms=1000" in failure.getMessage()
    finally:
        consumer.close()


def test_the_aio_consumers_auto_commit_sends_one_at_a_time_while_the_coordinator_does_not_answer(
        scripted, caplog):
    broker = scripted([SilentCoordinator().answer] * 50_000)
    caplog.set_level(logging.WARNING)

    async def main():
        consumer = AIOConsumer("t", broker=broker.url, group="g", auto_offset_reset="earliest",
                               auto_commit_interval_ms=AUTO_COMMIT_INTERVAL_MS,
                               fetch_max_wait_ms=100, request_timeout_ms=REQUEST_TIMEOUT_MS,
                               direct_to_shards=False)
        await consumer.start()
        try:
            while len(commits_sent(broker)) < 2:
                await consumer.getmany(timeout_ms=20)
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(main(), BOUND_S))
    first_s, second_s = commits_sent(broker)[:2]
    assert second_s - first_s >= REQUEST_TIMEOUT_MS / 1000 / 2
    assert auto_commit_failures(caplog)
