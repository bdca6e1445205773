"""The overview's sampler: it asks the broker only while someone watches, and keeps a
bounded window of samples."""

from __future__ import annotations

import asyncio
import threading

from plinth.client.console.sampler import Sampler, sample_of
from plinth.protocol import ShardStatus, StatusInfo


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
