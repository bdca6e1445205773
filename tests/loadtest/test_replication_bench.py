"""loadtest/replication_bench.py, small: three loopback nodes, the three produce runs,
an end-to-end run and one node kill, without the Redis peer (not installed in CI).
A smoke test of the command, and the one CI test that kills a replicated partition's
leader's whole node and requires an acks="all" produce to it to succeed after."""

from __future__ import annotations

from types import SimpleNamespace

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
    assert "until the controller names the new leader" in replication_bench.format_results(results)


def test_a_kill_needs_a_partition_led_on_a_worker_node_and_finds_none_once_all_moved_to_the_head():
    # Given shards pinned to the head "a" and the workers "b" and "c"
    pins = {"shard-0": "node:a", "shard-1": "node:b", "shard-2": "node:c"}

    def admin_with_leaders(*leaders):
        infos = [SimpleNamespace(partition=p, shard=s) for p, s in enumerate(leaders)]
        return SimpleNamespace(describe_topic=lambda topic: SimpleNamespace(partition_info=infos))
    # Then a partition led on a worker is chosen with its node
    assert replication_bench._partition_led_on_a_worker(
        admin_with_leaders("shard-0", "shard-2"), "t", pins) == (1, "c")
    # And once every leader moved to the head (leaders do not move back), there is none:
    # the bench's next kill takes a fresh topic
    assert replication_bench._partition_led_on_a_worker(
        admin_with_leaders("shard-0", "shard-0"), "t", pins) is None
