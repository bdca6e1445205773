"""The fault runner's pure parts (loadtest/replication_faults.py): its seeded schedule,
how it reads a partition's replication from ``describe``, and which reported addresses
leave loopback. The runner itself runs in tests/e2e/test_replication_faults_e2e.py."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadtest.fault_checker import Replication
from loadtest.replication_faults import (FAULT_KINDS, SCHEDULE_MARGIN_FRACTION,
                                         addresses_outside_loopback, fault_schedule, main,
                                         replication_of, restart_all_nodes)
from plinth.protocol import PartitionInfo, ShardStatus, StatusInfo

ROOT = Path(__file__).resolve().parents[2]


def test_a_schedule_has_every_kind_at_least_once_inside_the_margins_in_time_order():
    # Given seven kinds and ten faults over 100 s
    schedule = fault_schedule(random.Random(3), FAULT_KINDS, 100, 10)
    # Then there are ten, each kind among them, in time order, none in the margins
    assert len(schedule) == 10
    assert set(Counter(kind for _, kind in schedule)) == set(FAULT_KINDS)
    moments = [at_s for at_s, _ in schedule]
    assert moments == sorted(moments)
    assert all(100 * SCHEDULE_MARGIN_FRACTION <= at_s <= 100 * (1 - SCHEDULE_MARGIN_FRACTION)
               for at_s in moments)


def test_a_seed_gives_the_same_schedule_every_time_and_another_seed_another():
    # Given two runs with seed 7 and one with seed 8
    def make(seed):
        return fault_schedule(random.Random(seed), ("shard-kill", "shard-stop"), 60, 6)
    # Then the two with the same seed agree, and the other differs
    assert make(7) == make(7)
    assert make(7) != make(8)


def test_a_schedule_too_short_for_every_kind_is_refused():
    # When fewer faults than kinds are asked for, Then it says so
    with pytest.raises(AssertionError, match="cannot include each"):
        fault_schedule(random.Random(1), FAULT_KINDS, 100, 3)


def test_a_partition_without_replica_fields_is_its_one_shard_in_sync():
    # Given today's describe of a partition (factor 1): a shard, no replica fields
    info = PartitionInfo(partition=2, shard="shard-1")
    # Then its shard is its one replica, in sync
    assert replication_of(info) == Replication(("shard-1",), ("shard-1",))


def test_a_replicated_partition_reports_its_replicas_and_in_sync_set():
    # Given a describe of a factor-3 partition with one replica out of sync
    info = SimpleNamespace(partition=0, shard="shard-0", replicas=["shard-0", "shard-1", "shard-2"],
                           in_sync_replicas=["shard-0", "shard-2"])
    # Then both sets are taken as reported
    assert replication_of(info) == Replication(("shard-0", "shard-1", "shard-2"),
                                               ("shard-0", "shard-2"))


def test_an_address_off_loopback_in_any_part_of_the_status_is_reported():
    # Given a status with a node, a shard and a router's node on the machine's own address
    status = StatusInfo(
        nodes=[("n1", "127.0.0.1", True), ("n2", "10.1.2.3", True)],
        shards=[ShardStatus("shard-0", "tcp://127.0.0.1:4000", True, 1, 0, 0.0, 0.0),
                ShardStatus("shard-1", "tcp://10.1.2.3:4001", True, 1, 0, 0.0, 0.0),
                ShardStatus("shard-2", "ipc:///data/sockets/shard-2", True, 1, 0, 0.0, 0.0),
                ShardStatus("shard-3", "", False, 1, 0, 0.0, 0.0)],
        routers=[("tcp://127.0.0.1:7400", "127.0.0.1"), ("tcp://127.0.0.1:7401", "10.1.2.3")])
    # Then exactly those three are reported (a Unix socket and a down shard are not)
    assert addresses_outside_loopback(status) == ["10.1.2.3", "tcp://10.1.2.3:4001", "10.1.2.3"]


def test_an_unknown_fault_kind_is_refused_before_anything_starts():
    # When the runner is asked for a kind it does not know,
    # Then it exits naming that kind (it checks the kinds before starting a cluster)
    with pytest.raises(SystemExit, match="unknown fault kinds \\['disk-fill'\\]"):
        main(["--faults", "shard-kill,disk-fill"])


def test_the_runner_runs_as_a_module_from_the_repository_root():
    # When ``python -m loadtest.replication_faults --help`` runs where CI runs it
    proc = subprocess.run([sys.executable, "-m", "loadtest.replication_faults", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then it prints its options
    assert proc.returncode == 0, proc.stderr
    assert "--seed" in proc.stdout and "--duration-s" in proc.stdout and "--faults" in proc.stdout


def test_the_all_nodes_fault_kills_the_server_first_then_restarts_it_on_the_new_cluster():
    # Given a fake cluster and server that record what is done to them, in order
    done = []
    cluster = SimpleNamespace(address="127.0.0.1:1000")

    def restart_cluster():
        done.append("cluster restarted")
        cluster.address = "127.0.0.1:2000"
    cluster.restart = restart_cluster
    broker = SimpleNamespace(ray_address=cluster.address, kill=lambda: done.append("server killed"))
    broker.restart = lambda: done.append(f"server restarted on {broker.ray_address}")
    setting = SimpleNamespace(cluster=cluster, broker=broker,
                              wait_until_serving=lambda after: done.append("serving"))
    # When the fault runs
    said = restart_all_nodes(setting)
    # Then the server died with the cluster, came back on the new one, and serves;
    # and the line says how long each step took
    assert done == ["server killed", "cluster restarted", "server restarted on 127.0.0.1:2000",
                    "serving"]
    assert "restarted at 127.0.0.1:2000: new cluster in " in said
    assert "server ready " in said and "every shard serving " in said
