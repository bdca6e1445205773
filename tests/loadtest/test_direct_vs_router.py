"""loadtest/direct_vs_router.py's arithmetic: the percentile of the latencies it prints.
(The measurement itself needs a running broker; the direct path is tested end to end in
tests/e2e/test_direct_clients_e2e.py.)"""

from __future__ import annotations

from loadtest import direct_vs_router


def test_a_percentile_is_the_value_at_that_rank_of_the_sorted_latencies():
    latencies_ms = [float(v) for v in (9, 1, 5, 3, 7, 2, 8, 4, 10, 6)]
    assert direct_vs_router.percentile(latencies_ms, 50) == 6.0
    assert direct_vs_router.percentile(latencies_ms, 90) == 10.0
    assert direct_vs_router.percentile(latencies_ms, 99) == 10.0
    assert direct_vs_router.percentile(latencies_ms, 0) == 1.0
