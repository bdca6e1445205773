"""loadtest/replication_bench.py, small: three loopback nodes, the three produce runs,
an end-to-end run and one node kill, without the Redis peer (not installed in CI).
A smoke test of the command, and the one CI test that kills a replicated partition's
leader's whole node and requires an acks="all" produce to it to succeed after."""

from __future__ import annotations

from loadtest import replication_bench


def test_the_replication_bench_measures_every_run_and_survives_a_leaders_node_kill():
    # When the bench runs with small numbers and one kill
    results = replication_bench.run(messages=3_000, e2e_messages=1_000, kills=1, peer=False)
    # Then every produce run delivered every record, with no errors
    for name, report in results["throughput"].items():
        assert (report["records"], report["errors"]) == (3_000, 0), name
    assert results["e2e"]["records"] == 1_000
    # And after the leader's node was killed, an acks="all" produce to its partition
    # was acknowledged (within the bench's bound), and the table prints
    assert results["failover"]["kills"] == 1
    assert 0 < results["failover"]["max_s"] < replication_bench.FAILOVER_WAIT_S
    assert "failover over 1 node kills" in replication_bench.format_results(results)
    # And the time until describe named a new leader was measured, and prints too
    (elected_s,) = results["failover"]["elected_s"]
    assert elected_s is not None and 0 < elected_s < replication_bench.FAILOVER_WAIT_S
    assert "until the new leader is elected" in replication_bench.format_results(results)
