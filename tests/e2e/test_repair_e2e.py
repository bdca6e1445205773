"""Repair through a real ``plinth serve`` on real Ray (issue 12): a follower whose data
directory was deleted while it was down is rebuilt from its leader, byte for byte, and
is back in sync with nothing acknowledged lost (three shards on the session's one node,
replicas allowed to share it); and after a node is lost for good, ``plinth shards move``
re-creates its shard on a new node and the factor is restored (three loopback nodes and
a fourth, spare one: tests/three_node_cluster.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from loadtest.replication_faults import read_every_partition, wait_for_full_replication
from plinth import Admin, Producer
from plinth.control.nodes import NODE_RESOURCE_PREFIX
from tests.conftest import Broker
from tests.replication_state import replication_report
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until
from tests.three_node_cluster import SPARE, three_node_cluster  # noqa: F401 (a fixture)

PARTITIONS = 3
SHARDS = 3   # one per node (and a slot of the committed offsets each)
RECORDS = 300
RESTART_WAIT_S = 60
REPAIR_WAIT_S = 90


def plinth(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plinth.cli", *args], capture_output=True,
                          text=True, env=dict(os.environ, PLINTH_BROKER=url), timeout=180)


def produce_numbered(url: str, topic: str) -> set[bytes]:
    """RECORDS records, acks="all", spread over every partition; returns their values."""
    values = {f"v{n}".encode() for n in range(RECORDS)}
    with Producer(broker=url, acks="all") as producer:
        futures = [producer.send(topic, value, key=value) for value in sorted(values)]
        for future in futures:
            future.get(timeout=120)
    return values


def in_sync_everywhere(url: str, topic: str) -> bool:
    with Admin(broker=url) as admin:
        return all(sorted(p.in_sync_replicas) == sorted(p.replicas)
                   for p in admin.describe_topic(topic).partition_info)


def log_bytes(partition_dir: Path) -> int:
    return sum(segment.stat().st_size for segment in partition_dir.glob("*.log"))


def test_a_follower_whose_data_directory_was_deleted_while_down_is_rebuilt_from_its_leader(
        broker_factory):
    # Given three shards on one node, and a factor-3 topic holding acknowledged records
    broker = broker_factory(shards=3, extra_args=("--allow-replicas-on-one-node",))
    topic = unique_topic("wipe")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS, replication_factor=3,
                           config={"min.insync.replicas": "2"})
        leader = admin.describe_topic(topic).partition_info[0].shard
    values = produce_numbered(broker.url, topic)
    follower = next(s for s in ("shard-0", "shard-1", "shard-2") if s != leader)
    shards_dir = broker.data_dir / "shards"
    # When the follower's process is stopped, its whole data directory deleted, and the
    # process killed (Ray starts it again, on an empty directory: no manifest, no logs)
    pid = shard_pids(broker.data_dir)[follower]
    os.kill(pid, signal.SIGSTOP)
    shutil.rmtree(shards_dir / follower)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: shard_pids(broker.data_dir).get(follower, pid) != pid,
               timeout_s=RESTART_WAIT_S)
    # Then the controller opens its partitions again (its manifest has them), it fetches
    # them from their leaders until its logs are the leader's, byte for byte
    wait_until(lambda: (shards_dir / follower / "manifest.json").exists(),
               timeout_s=REPAIR_WAIT_S)
    partition_dir = f"{topic}-0"
    explain = lambda: replication_report(broker.data_dir)   # noqa: E731 (on timeout)
    wait_until(lambda: log_bytes(shards_dir / follower / partition_dir)
               == log_bytes(shards_dir / leader / partition_dir) > 0, timeout_s=REPAIR_WAIT_S,
               explain=explain)
    # And every partition is fully in sync again
    wait_until(lambda: in_sync_everywhere(broker.url, topic), timeout_s=REPAIR_WAIT_S,
               explain=explain)
    # And nothing acknowledged was lost
    reads = read_every_partition(broker.url, topic, PARTITIONS)
    assert {read.value for read in reads} == values and len(reads) == RECORDS


def test_a_shard_of_a_node_lost_for_good_moves_to_a_new_node_and_the_factor_comes_back(
        three_node_cluster, tmp_path):
    # Given one shard on each of three nodes and a factor-3 topic with acknowledged records
    broker = Broker(tmp_path / "data", three_node_cluster.address, shards=SHARDS).start()
    try:
        topic = unique_topic("move")
        with Admin(broker=broker.url) as admin:
            admin.create_topic(topic, PARTITIONS, replication_factor=3,
                               config={"min.insync.replicas": "2"})
        values = produce_numbered(broker.url, topic)
        # When node b is lost for good (its processes and its disk)
        pins = json.loads((broker.data_dir / "metadata.json").read_text())["shard_nodes"]
        [lost] = [shard for shard, pin in pins.items() if pin == f"{NODE_RESOURCE_PREFIX}b"]
        three_node_cluster.remove_node("b")
        shutil.rmtree(broker.data_dir / "shards" / lost)
        # And a new node d joins: plinth status names it, and shows b dead under its name
        # (not its address: every node is on 127.0.0.1)
        three_node_cluster.add_node(SPARE)
        wait_until(lambda: " d " in (out := plinth(broker.url, "status").stdout)
                   and re.search(r"^  b +\w{12}  127\.0\.0\.1 +DEAD$", out, re.M),
                   timeout_s=RESTART_WAIT_S)
        # And moving the shard back to b is refused, b being dead; to x, there being no x
        refused = plinth(broker.url, "shards", "move", lost, "--node", "b")
        assert refused.returncode != 0
        assert f"cannot move {lost} to node b: it is dead" in refused.stderr
        refused = plinth(broker.url, "shards", "move", lost, "--node", "x")
        assert "no node is named 'x'; the nodes are: " in refused.stderr
        assert re.search(r"b \(\w{12}, dead\)", refused.stderr), refused.stderr
        # And the lost node's shard is moved to it on the command line
        moved = plinth(broker.url, "shards", "move", lost, "--node", SPARE)
        # Then it moved, its replicas being rebuilt from their leaders
        assert moved.returncode == 0, moved.stderr
        assert f"moved {lost} from node b to node d" in moved.stdout
        # (the topic's and the committed offsets' three slots: one per shard)
        assert f"{PARTITIONS + SHARDS} replicas rebuilding from their leaders" in moved.stdout
        # And every partition is fully replicated again, on three nodes
        replication = wait_for_full_replication(broker.url, topic, broker.data_dir)
        assert all(sorted(r.in_sync) == sorted(r.replicas) for r in replication.values()), \
            replication
        assert f"{lost:<10} up" in plinth(broker.url, "status").stdout
        # And nothing acknowledged was lost
        reads = read_every_partition(broker.url, topic, PARTITIONS)
        assert {read.value for read in reads} == values and len(reads) == RECORDS
    finally:
        broker.stop()
