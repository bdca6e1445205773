"""The replication fault suite (loadtest/replication_faults.py) in CI: three Ray nodes on
127.0.0.1, one shard on each, an idempotent acks="all" workload with a consumer group,
and a fixed seed's schedule of faults on a factor-3 topic with min.insync.replicas=2
(SIGKILL of a leading shard's process, SIGSTOP of one longer than the leader check's
timeout, then SIGCONT: the stopped leader is deposed and must learn it); then the
checker (loadtest/fault_checker.py) finds no violation, and every partition is fully
in sync again.

Marked ``faults``, as tests/faults/ (it runs in CI; ``-m "not faults"`` skips it).
About two minutes. The longer runs, with any seed and every fault kind, are
``python -m loadtest.replication_faults`` (its docstring says how).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from loadtest.replication_faults import (FAULTS_DEFAULT, PARTITIONS, SHARDS, Setting, Workload,
                                         create_topic, fault_schedule, non_loopback_addresses,
                                         run_faults)
from tests.conftest import Broker
from tests.support import unique_topic
from tests.three_node_cluster import NODE_NAMES, three_node_cluster  # noqa: F401 (a fixture)

SEED = 12
DURATION_S = 50
FAULT_COUNT = 4
STOP_S = 4              # longer than the producer's request timeout (2 s): it retries meanwhile
ACKNOWLEDGED_MIN = 5_000   # 2 producers at 300 records/s for 50 s, less the faults' stalls


@pytest.mark.faults
def test_no_acknowledged_record_is_lost_duplicated_or_moved_under_seeded_shard_faults(
        three_node_cluster, tmp_path):
    # Given a broker with one shard on each of three loopback nodes
    broker = Broker(tmp_path / "data", three_node_cluster.address, shards=SHARDS).start()
    try:
        rng = random.Random(SEED)
        topic = unique_topic("faults")
        create_topic(broker.url, topic, PARTITIONS, replication_factor=3, min_insync=2)
        setting = Setting(three_node_cluster, broker, topic, PARTITIONS, rng, stop_s=STOP_S)
        # Then every address it reports is on loopback, and the shards are spread over the nodes
        assert non_loopback_addresses(broker.url) == []
        assert sorted(setting.shard_nodes().values()) == sorted(NODE_NAMES)
        # When producers and a consumer group run through the seeded faults
        schedule = fault_schedule(rng, FAULTS_DEFAULT, DURATION_S, FAULT_COUNT)
        workload = Workload(broker.url, topic, unique_topic("group"))
        report = run_faults(setting, workload, schedule, DURATION_S)
        print("\n".join(report.lines()))
        # Then every fault ran and was recovered from, and the checker finds nothing wrong
        assert report.not_recovered == []
        assert Counter(kind for kind, _ in report.faults) == Counter(kind for _, kind in schedule)
        assert report.violations == [], report.lines()
        assert report.not_acknowledged == [], report.not_acknowledged[:3]
        # And the checks had something to check: records, reads, commits, every partition
        history = report.history
        assert len(history.acks) >= ACKNOWLEDGED_MIN
        assert history.reads and history.commits
        assert sorted(history.replication) == list(range(PARTITIONS))
        assert {a.partition for a in history.acks} == set(range(PARTITIONS))
    finally:
        broker.stop()


CONTROLLER_SEED = 7
CONTROLLER_FAULTS = ("controller-kill", "controller-kill-in-election")
CONTROLLER_DURATION_S = 60
CONTROLLER_FAULT_COUNT = 3


@pytest.mark.faults
def test_no_acknowledged_record_is_lost_duplicated_or_moved_under_seeded_controller_kills(
        three_node_cluster, tmp_path):
    # Given a broker with one shard on each of three loopback nodes, a factor-3 topic
    broker = Broker(tmp_path / "data", three_node_cluster.address, shards=SHARDS).start()
    try:
        rng = random.Random(CONTROLLER_SEED)
        topic = unique_topic("ctrl")
        create_topic(broker.url, topic, PARTITIONS, replication_factor=3, min_insync=2)
        setting = Setting(three_node_cluster, broker, topic, PARTITIONS, rng, stop_s=STOP_S)
        # When producers and a consumer group run while the controller is SIGKILLed, alone
        # and a seeded moment after a leading shard (during the election it causes)
        schedule = fault_schedule(rng, CONTROLLER_FAULTS, CONTROLLER_DURATION_S,
                                  CONTROLLER_FAULT_COUNT)
        workload = Workload(broker.url, topic, unique_topic("group"))
        report = run_faults(setting, workload, schedule, CONTROLLER_DURATION_S)
        print("\n".join(report.lines()))
        # Then every fault ran and was recovered from (Ray restarted the controller, which
        # adopted the shards), and the checker finds nothing wrong
        assert report.not_recovered == []
        assert Counter(kind for kind, _ in report.faults) == Counter(kind for _, kind in schedule)
        assert report.violations == [], report.lines()
        assert report.not_acknowledged == [], report.not_acknowledged[:3]
        # And the checks had something to check, and every partition is in sync again
        history = report.history
        assert len(history.acks) >= ACKNOWLEDGED_MIN
        assert history.reads and history.commits
        assert sorted(history.replication) == list(range(PARTITIONS))
    finally:
        broker.stop()
