"""The replication fault suite (loadtest/replication_faults.py) in CI: three Ray nodes on
127.0.0.1, one shard on each, an idempotent acks="all" workload with a consumer group,
and a fixed seed's schedule of faults on a factor-3 topic with min.insync.replicas=2
(SIGKILL of a leading shard's process, SIGSTOP of one longer than the leader check's
timeout, then SIGCONT: the stopped leader is deposed and must learn it), another of
node faults (a worker node lost and back; one removed, its shard's data directory
deleted, and back), and another of controller kills (alone, and during the election a
leader's kill causes); then the checker (loadtest/fault_checker.py) finds no violation,
and every partition is fully in sync again. The consumer group's coordinator (the
leader of its slot of the replicated __consumer_offsets) is on a worker node, so the
node faults take it.

Marked ``faults``, as tests/faults/ (it runs in CI; ``-m "not faults"`` skips it).
About two minutes each. The longer runs, with any seed and every fault kind, are
``python -m loadtest.replication_faults`` (its docstring says how).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from loadtest.replication_faults import (FAULTS_DEFAULT, PARTITIONS, SHARDS, Setting, Workload,
                                         create_topic, fault_schedule, non_loopback_addresses,
                                         run_faults)
from loadtest.replication_faults import group_coordinated_on_a_worker
from tests.conftest import Broker
from tests.support import unique_topic
from tests.three_node_cluster import NODE_NAMES, three_node_cluster  # noqa: F401 (a fixture)

SEED = 12
DURATION_S = 50
FAULT_COUNT = 4
STOP_S = 4              # longer than the producer's request timeout (2 s): it retries meanwhile
ACKNOWLEDGED_MIN = 5_000   # 2 producers at 300 records/s for 50 s, less the faults' stalls
# Node faults: one node-loss, one replica-wipe, at factor 3.
NODE_SEED = 5
NODE_FAULTS = ("node-loss", "replica-wipe")
NODE_DURATION_S = 90
NODE_DOWN_S = 8
NODE_ACKNOWLEDGED_MIN = 5_000   # 2 producers at 300 records/s for 90 s, less the nodes' stalls


@pytest.mark.faults
def test_no_acknowledged_record_is_lost_duplicated_or_moved_under_seeded_shard_faults(
        three_node_cluster, tmp_path):
    run_and_check(three_node_cluster, tmp_path, SEED, FAULTS_DEFAULT, DURATION_S, FAULT_COUNT,
                  ACKNOWLEDGED_MIN, stop_s=STOP_S)


@pytest.mark.faults
def test_no_acknowledged_record_is_lost_and_every_replica_is_rebuilt_under_node_faults(
        three_node_cluster, tmp_path):
    # (a whole worker node lost, then back; a worker node removed, its shard's data
    # directory deleted, then back: the shard rebuilds its replicas from the leaders)
    run_and_check(three_node_cluster, tmp_path, NODE_SEED, NODE_FAULTS, NODE_DURATION_S,
                  len(NODE_FAULTS), NODE_ACKNOWLEDGED_MIN, node_down_s=NODE_DOWN_S)


CONTROLLER_SEED = 7
CONTROLLER_FAULTS = ("controller-kill", "controller-kill-in-election")
CONTROLLER_DURATION_S = 60
CONTROLLER_FAULT_COUNT = 3


@pytest.mark.faults
def test_no_acknowledged_record_is_lost_duplicated_or_moved_under_seeded_controller_kills(
        three_node_cluster, tmp_path):
    # (the controller SIGKILLed alone, and a seeded moment after a leading shard, during
    # the election that causes: Ray restarts it, and it adopts the running shards)
    run_and_check(three_node_cluster, tmp_path, CONTROLLER_SEED, CONTROLLER_FAULTS,
                  CONTROLLER_DURATION_S, CONTROLLER_FAULT_COUNT, ACKNOWLEDGED_MIN, stop_s=STOP_S)


def run_and_check(cluster, tmp_path, seed: int, kinds: tuple[str, ...], duration_s: float,
                  fault_count: int, acknowledged_min: int, **setting_options) -> None:
    # Given a broker with one shard on each of three loopback nodes
    broker = Broker(tmp_path / "data", cluster.address, shards=SHARDS).start()
    try:
        rng = random.Random(seed)
        topic = unique_topic("faults")
        create_topic(broker.url, topic, PARTITIONS, replication_factor=3, min_insync=2)
        setting = Setting(cluster, broker, topic, PARTITIONS, rng, **setting_options)
        # Then every address it reports is on loopback, and the shards are spread over the nodes
        assert non_loopback_addresses(broker.url) == []
        assert sorted(setting.shard_nodes().values()) == sorted(NODE_NAMES)
        # When producers and a consumer group run through the seeded faults
        schedule = fault_schedule(rng, kinds, duration_s, fault_count)
        workload = Workload(broker.url, topic, group_coordinated_on_a_worker(setting))
        report = run_faults(setting, workload, schedule, duration_s)
        print("\n".join(report.lines()))
        # Then every fault ran and was recovered from, and the checker finds nothing wrong
        assert report.not_recovered == []
        assert Counter(kind for kind, _ in report.faults) == Counter(kind for _, kind in schedule)
        assert report.violations == [], report.lines()
        assert report.not_acknowledged == [], report.not_acknowledged[:3]
        # And the checks had something to check: records, reads, commits, every partition
        history = report.history
        assert len(history.acks) >= acknowledged_min
        assert history.reads and history.commits
        assert sorted(history.replication) == list(range(PARTITIONS))
        assert {a.partition for a in history.acks} == set(range(PARTITIONS))
    finally:
        broker.stop()

