"""Scaling replicated topics without moving data (issue 12): on one node with three
shards, `plinth shards add 1` moves the new writes of the factor-3 partitions whose
replica set now includes the new shard while an acks="all" producer keeps writing; a
consumer reads every acknowledged record once, in order; and a sealed range stays
readable after one of the replicas holding it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from plinth import Admin
from plinth.control import placement
from plinth.counted import counted
from tests.shard_processes import shard_pids
from tests.support import NumberedWriter, check_exactly_once_in_order, read_all, unique_topic, \
    wait_until

PARTITIONS = 4
THREE, FOUR = (["shard-%d" % i for i in range(n)] for n in (3, 4))


def replicas(topic: str, partition: int, shard_ids: list[str]) -> tuple[str, ...]:
    return placement.replicas_for(topic, partition, shard_ids, {}, 3, allow_same_node=True)


def topic_whose_replicas_move() -> str:
    """A fresh topic name some (not all) of whose partitions get a new replica set."""
    while True:
        topic = unique_topic("scale")
        moving = sum(replicas(topic, p, THREE) != replicas(topic, p, FOUR)
                     for p in range(PARTITIONS))
        if 1 <= moving < PARTITIONS:
            return topic


def test_adding_a_shard_under_a_factor_3_topic_keeps_acks_all_writes_and_every_record_readable(
        broker_factory):
    # Given three shards on one node and a factor-3 topic, written to with acks="all"
    broker = broker_factory(shards=3, extra_args=("--allow-replicas-on-one-node",))
    topic = topic_whose_replicas_move()
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS, replication_factor=3)
    writer = NumberedWriter(broker.url, topic, PARTITIONS, chunk=50)
    writer.wait_for_more(400)
    # When a shard is added on the command line while the producer writes
    added = subprocess.run([sys.executable, "-m", "plinth.cli", "shards", "add", "1"],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PLINTH_BROKER=broker.url))
    assert added.returncode == 0, added.stderr
    moving = [p for p in range(PARTITIONS) if replicas(topic, p, THREE) != replicas(topic, p, FOUR)]
    assert f"added 1 shard; the writes of {counted(len(moving), 'partition')} moved" in added.stdout
    sealed_at = {int(line.split(":")[0].rsplit("-", 1)[1]): int(line.rsplit(" ", 1)[1])
                 for line in added.stdout.splitlines() if line.startswith(f"{topic}-")}
    assert sorted(sealed_at) == moving
    # Then the producer keeps going, and every record is acknowledged
    writer.wait_for_more(400)
    writer.stop()
    assert writer.errors == []
    # And nothing was copied to the new shard: its log of each moved partition starts
    # where the partition was sealed
    for p, offset in sealed_at.items():
        logs = sorted((broker.data_dir / "shards" / "shard-3" / f"{topic}-{p}").glob("*.log"))
        assert logs[0].name == f"{offset:020d}.log"
    # And the moved partitions are led by their new replica sets, which take the writes
    with Admin(broker=broker.url) as admin:
        described = {p.partition: p for p in admin.describe_topic(topic).partition_info}
    for p in moving:
        assert tuple(described[p].replicas) == replicas(topic, p, FOUR)
        assert described[p].leader_epoch >= 1
    # And each partition's offsets span its sealed and its new range, from 0 to as many
    # records as were acknowledged in it
    with Admin(broker=broker.url) as admin:
        for p in range(PARTITIONS):
            info = admin.list_offsets(topic, p)
            assert (info.start_offset, info.end_offset) == \
                (0, sum(1 for part, _ in writer.acked.values() if part == p))
    # And a consumer from the beginning reads every acknowledged record once, in order,
    # at the offset it was acknowledged with, across the sealed and the new range
    records = read_all(broker.url, topic)
    check_exactly_once_in_order(records, writer.acked, PARTITIONS)
    # When the first replica holding a moved partition's sealed range is killed
    first_holder = replicas(topic, moving[0], THREE)[0]
    pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 4 and found,
                      timeout_s=60)
    os.kill(pids[first_holder], signal.SIGKILL)
    # Then the sealed range is still read whole (from another replica, or the restarted
    # one), and so is everything else
    expected = sorted((r.partition, r.offset, r.value) for r in records)
    wait_until(lambda: sorted((r.partition, r.offset, r.value)
                              for r in read_all(broker.url, topic)) == expected, timeout_s=120)
