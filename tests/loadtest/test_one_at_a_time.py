"""loadtest/one_at_a_time.py's table: medians over rounds, and Plinth ÷ Redis beside each
figure. (The measurements themselves need redis-server, which CI does not install; the
Plinth side is tested in tests/plinth/test_bench.py against a real broker.)"""

from __future__ import annotations

from types import SimpleNamespace

from loadtest import one_at_a_time


def report(p50, p90, p99, p999, top):
    return {"latency_us": {"p50": p50, "p90": p90, "p95": 0, "p99": p99, "p99.9": p999,
                           "max": top}}


def test_each_plinth_figure_is_the_median_over_rounds_with_its_ratio_to_redis():
    # Given three rounds of each system, Plinth's ack p50 being 2.0, 3.0 and 9.0 ms
    runs = {"plinth": {"ack": [report(2000, 4000, 8000, 9000, 9000),
                               report(3000, 5000, 9000, 9500, 9900),
                               report(9000, 9000, 9000, 9900, 9900)],
                       "e2e": [report(1000, 1000, 1000, 1000, 1000)] * 3},
            "redis": {"ack": [report(1000, 2000, 4000, 5000, 6000)] * 3,
                      "e2e": [report(500, 500, 500, 500, 0)] * 3}}
    args = SimpleNamespace(rate=200.0, messages=3000, value_bytes=100, key_bytes=0, acks="all",
                           replication_factor=1)
    # When the table is made
    lines = one_at_a_time.format_table(runs, args).splitlines()
    # Then each Plinth cell is the median in ms with Plinth ÷ Redis beside it
    assert "median of 3 round(s)" in lines[0]
    assert lines[2].split()[2:] == ["3.000", "(3.00x)", "5.000", "(2.50x)", "9.000", "(2.25x)",
                                    "9.500", "(1.90x)", "9.900", "(1.65x)"]
    assert lines[3].split()[2:] == ["1.000", "2.000", "4.000", "5.000", "6.000"]
    # And a Redis figure of 0 gives no ratio rather than a division by zero
    assert lines[4].split()[-1] == "1.000" and lines[4].split()[-2] == "(2.00x)"


def test_a_replicated_run_starts_as_many_shards_as_copies_on_one_machine():
    # Given a run with replication factor 3
    args = SimpleNamespace(fsync_policy="always", replication_factor=3)
    # When the broker's options are made
    serve = one_at_a_time.serve_args(args)
    # Then it runs 3 shards and may put the copies on this one node
    assert serve == ["--fsync-policy", "always", "--shards", "3", "--allow-replicas-on-one-node"]


def test_an_unreplicated_run_leaves_the_shard_count_to_the_broker():
    args = SimpleNamespace(fsync_policy="never", replication_factor=1)
    assert one_at_a_time.serve_args(args) == ["--fsync-policy", "never"]
