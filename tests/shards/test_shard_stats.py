"""ShardStats (shards/shard_stats.py): rates in and out, of the shard and per partition."""

from __future__ import annotations

import pytest

from plinth.limits import SHARD_STATS_RATE_WINDOW_SAMPLES
from plinth.shards.shard_stats import ShardStats

A, B = ("a", 0), ("b", 0)


def test_rates_in_and_out_are_the_change_over_the_window_per_second():
    # Given a shard that takes 10 records (1000 bytes) and hands out 20 (3000 bytes) a second
    stats = ShardStats()
    for second in range(5):
        stats.sample(float(second))
        stats.produced(A, 10, 1000)
        stats.fetched(A, 3000, 20)
    stats.sample(5.0)
    # Then its rates are those, in and out
    assert stats.rates() == pytest.approx((10.0, 1000.0, 20.0, 3000.0))
    snapshot = stats.snapshot()
    assert (snapshot["records_out_per_s"], snapshot["bytes_out_per_s"]) == pytest.approx((20.0, 3000.0))
    assert snapshot["partitions"][A]["records_out"] == 100


def test_partition_rates_count_only_that_partitions_moves_within_the_window():
    # Given partition A busy at first, then idle for longer than the window, and B busy
    stats = ShardStats()
    stats.sample(0.0)
    stats.produced(A, 50, 5000)
    stats.sample(1.0)
    assert stats.partition_rates(A) == pytest.approx((50.0, 5000.0, 0.0, 0.0))
    for second in range(2, SHARD_STATS_RATE_WINDOW_SAMPLES + 3):
        stats.produced(B, 4, 400)
        stats.fetched(B, 800, 8)
        stats.sample(float(second))
    # Then A's moves left the window and B's rates are its own
    assert stats.partition_rates(A) == (0.0, 0.0, 0.0, 0.0)
    assert stats.partition_rates(B) == pytest.approx((4.0, 400.0, 8.0, 800.0))
    # And the shard's rates are B's, the only partition moving in the window
    assert stats.rates() == pytest.approx((4.0, 400.0, 8.0, 800.0))


def test_a_forgotten_partition_counted_again_never_moves_backwards():
    stats = ShardStats()
    stats.sample(0.0)
    stats.produced(A, 5, 50)
    stats.sample(1.0)
    stats.forget(A)
    stats.produced(A, 2, 20)
    stats.sample(2.0)
    # The window holds 5 then 2 records: never a negative move after the forget
    assert stats.partition_rates(A) == pytest.approx((7 / 2, 70 / 2, 0.0, 0.0))


def test_no_rates_before_two_samples():
    stats = ShardStats()
    stats.produced(A, 5, 50)
    assert stats.rates() == stats.partition_rates(A) == (0.0, 0.0, 0.0, 0.0)
