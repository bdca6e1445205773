"""loadtest/aio_bench.py against a real broker, at a size that takes seconds: every
side delivers every record (read back by the sync consumer), and the ratios are
the medians' (the numbers themselves are the benchmark's, not a test's)."""

from __future__ import annotations

from loadtest import aio_bench
from tests.support import read_all


def test_each_side_of_the_bench_delivers_every_record_and_the_ratio_is_of_the_medians(
        shared_broker):
    result = aio_bench.measure(shared_broker.url, records=2_000, value_bytes=10, partitions=2,
                               rounds=1)
    rates = result["records_per_s"]
    assert set(rates) == {"sync", "aio-each", "aio-gather"} and all(r > 0 for r in rates.values())
    assert result["ratio_aio_each_to_sync"] == rates["aio-each"] / rates["sync"]
    # Three rounds' records and their warm-ups, all stored once
    stored = read_all(shared_broker.url, result["topic"])
    assert len(stored) == 3 * (2_000 + 1)
