"""The overview's sampler: it asks the broker only while someone watches, and keeps a
bounded window of samples."""

from __future__ import annotations

import asyncio
import logging
import threading

from plinth.client.admin import Admin
from plinth.client.console.sampler import Sampler, sample_of
from plinth.protocol import ShardStatus, StatusInfo
from tests.support import free_port


class CountingBroker:
    """Answers status() like a broker with two shards, one of them down; counts calls."""

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def status(self) -> StatusInfo:
        with self.lock:
            self.calls += 1
        return StatusInfo(nodes=[("n1", "127.0.0.1", True)], routers=[("tcp://x", "127.0.0.1")],
                          shards=[ShardStatus("s0", "a", True, 2, 100, 10.0, 1000.0),
                                  ShardStatus("s1", "b", False, 1, 50, 99.0, 9900.0)])


def test_a_sample_sums_the_rates_of_the_live_shards_only():
    sample = sample_of(CountingBroker().status(), 5.0)
    assert (sample.records_in_per_s, sample.bytes_in_per_s) == (10.0, 1000.0)


def test_rates_out_are_none_until_the_shards_report_them():
    from types import SimpleNamespace

    # Given shards from before fetched rates existed (no such fields), then with them
    before = SimpleNamespace(shards=[SimpleNamespace(alive=True, records_per_s=1.0,
                                                     bytes_per_s=10.0)])
    assert sample_of(before, 0).records_out_per_s is None
    after = SimpleNamespace(shards=[SimpleNamespace(alive=True, records_per_s=1.0, bytes_per_s=10.0,
                                                    records_out_per_s=4.0, bytes_out_per_s=400.0)
                                    for _ in range(2)])
    sample = sample_of(after, 0)
    assert (sample.records_out_per_s, sample.bytes_out_per_s) == (8.0, 800.0)


def test_the_sampler_asks_nothing_without_subscribers_and_stops_when_the_last_leaves():
    broker = CountingBroker()

    async def scenario():
        sampler = Sampler(broker, interval_s=0.01, samples_max=5)
        # Given nobody watching: no call
        await asyncio.sleep(0.1)
        assert broker.calls == 0
        # When one subscribes: samples arrive, bounded by the ring
        sampler.subscribe()
        sampler.subscribe()
        seen = 0
        while seen < 8:
            seen = await sampler.wait_for_change(seen, timeout_s=10)
        assert len(sampler.samples) == 5
        # When both leave: the calls stop
        sampler.unsubscribe()
        sampler.unsubscribe()
        await asyncio.sleep(0.05)
        stopped_at = broker.calls
        await asyncio.sleep(0.2)
        assert broker.calls == stopped_at
        assert sampler.subscribers == 0

    asyncio.run(scenario())


def test_a_failing_broker_is_reported_and_the_sampler_keeps_asking():
    class Down:
        calls = 0

        def status(self):
            Down.calls += 1
            raise TimeoutError("no answer within 10 ms")

    async def scenario():
        sampler = Sampler(Down(), interval_s=0.01)
        sampler.subscribe()
        seen = 0
        while seen < 3:
            seen = await sampler.wait_for_change(seen, timeout_s=10)
        sampler.unsubscribe()
        return sampler

    sampler = asyncio.run(scenario())
    assert "no answer within 10 ms" in sampler.error and not sampler.samples


def polled(sampler: Sampler, polls: int) -> Sampler:
    """Run ``sampler`` for ``polls`` polls of one subscriber, then stop it."""
    async def scenario():
        sampler.subscribe()
        seen = 0
        while seen < polls:
            seen = await sampler.wait_for_change(seen, timeout_s=30)
        sampler.unsubscribe()

    asyncio.run(scenario())
    return sampler


def sampler_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "plinth.client.console.sampler"]


def test_a_broker_that_does_not_answer_is_logged_once_with_its_address_not_every_poll(caplog):
    # Given a console sampler asking a real address where no broker listens
    url = f"tcp://127.0.0.1:{free_port()}"
    with Admin(broker=url, request_timeout_ms=50) as admin, \
            caplog.at_level(logging.INFO, logger="plinth.client.console.sampler"):
        # When it polls four times, failing each time
        sampler = polled(Sampler(admin, interval_s=0.01, broker_url=url), 4)
    # Then the page has the error, and the log says once that the broker is unreachable
    assert "no reply from" in sampler.error and not sampler.samples
    lines = sampler_lines(caplog)
    assert [r.levelno for r in lines] == [logging.WARNING], caplog.text
    message = lines[0].getMessage()
    assert f"the broker at {url} is unreachable" in message and "no reply from" in message


def test_a_broker_that_answers_again_is_logged_once_and_the_next_failure_once_more(caplog):
    class DownThenUp(CountingBroker):
        """Fails the first three status calls and the sixth, answers the others."""

        def status(self):
            answer = super().status()
            if self.calls <= 3 or self.calls == 6:
                raise TimeoutError(f"no answer to call {self.calls}")
            return answer

    # Given a broker down for three polls, up for two, down for one, then up
    with caplog.at_level(logging.INFO, logger="plinth.client.console.sampler"):
        sampler = polled(Sampler(DownThenUp(), interval_s=0.01, broker_url="tcp://127.0.0.1:1"), 9)
    # Then each change is logged once: down, up after 3, down, up after 1
    messages = [r.getMessage() for r in sampler_lines(caplog)]
    assert len(messages) == 4, caplog.text
    assert "unreachable (TimeoutError: no answer to call 1)" in messages[0]
    assert "reachable again (failed polls: 3)" in messages[1]
    assert "unreachable (TimeoutError: no answer to call 6)" in messages[2]
    assert "reachable again (failed polls: 1)" in messages[3]
    assert sampler.error == "" and sampler.samples
