"""A leader whose disk fills hands its partition to an in-sync replica with room
(control/disk_moves.py), through a real ``plinth serve`` on the session's Ray cluster:
three shards, each on its own small tmpfs (mounted on ``<data-dir>/shards/shard-N``
before the first start), a factor-3 topic written by an acks="all" producer. When the
leader's disk is filled to its last byte by another process, produces go on at the
new leader, and every acknowledged record is read back at its offset."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from plinth import Admin, Consumer, Producer
from plinth.errors import PlinthError
from tests.support import fill_file_system, unique_topic, wait_until

SHARDS = 3
TMPFS_SIZE = "48m"
RESERVE_BYTES = 4_000_000   # --produce-free-bytes-min: well under each tmpfs


@pytest.fixture
def shard_disks(tmp_path):
    """``tmp_path/data``, each shard's directory a tmpfs of its own; unmounted after the
    broker (requested before ``broker_factory``, so torn down after it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    data_dir = tmp_path / "data"
    mounted: list[Path] = []
    try:
        for n in range(SHARDS):
            disk = data_dir / "shards" / f"shard-{n}"
            disk.mkdir(parents=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=700", "tmpfs",
                            str(disk)], check=True)
            mounted.append(disk)
        yield data_dir
    finally:
        for disk in mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


class Writer:
    """A producer thread (acks="all", idempotent) writing numbered 1 KB values to
    partition 0 until stopped; keeps each acknowledged one's offset."""

    def __init__(self, url: str, topic: str):
        self.acknowledged: dict[int, bytes] = {}   # offset -> value
        self._stop = threading.Event()
        self._producer = Producer(broker=url, acks="all", linger_ms=1,
                                  delivery_timeout_ms=120_000)
        self._topic = topic
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            value = f"{n:08d}".encode().ljust(1024, b".")
            n += 1
            try:
                metadata = self._producer.send(self._topic, value, partition=0).get(timeout=150)
                self.acknowledged[metadata.offset] = value
            except PlinthError:
                pass   # not acknowledged: it need not be there

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=180)
        self._producer.close()


def stored_by_offset(url: str, topic: str) -> dict[int, bytes]:
    """Every record of partition 0 below its high watermark, by offset."""
    with Admin(broker=url) as admin:
        [info] = admin.describe_topic(topic).partition_info
    stored: dict[int, bytes] = {}
    with Consumer(broker=url, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, 0)])
        while consumer.position(topic, 0) < info.high_watermark:
            for records in consumer.poll(timeout_ms=1000).values():
                stored.update((r.offset, r.value) for r in records)
    return stored


def test_a_leader_whose_disk_fills_hands_over_and_producers_go_on_losing_nothing(
        shard_disks, broker_factory):
    # Given three shards on disks of their own, a factor-3 topic (min.insync.replicas
    # 2) written by an acks="all" producer
    broker = broker_factory(shards=SHARDS, data_dir=shard_disks, extra_args=(
        "--allow-replicas-on-one-node", "--produce-free-bytes-min", str(RESERVE_BYTES)))
    topic = unique_topic("fullleader")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1, replication_factor=3,
                           config={"min.insync.replicas": "2"})
        writer = Writer(broker.url, topic)
        wait_until(lambda: len(writer.acknowledged) > 100, timeout_s=60)
        [info] = admin.describe_topic(topic).partition_info
        full = info.shard
        # When the leader's disk is filled to its last byte by another process
        fill_file_system(shard_disks / "shards" / full)
        # Then another in-sync replica leads it
        wait_until(lambda: admin.describe_topic(topic).partition_info[0].shard != full,
                   timeout_s=60, explain=lambda: admin.describe_topic(topic).partition_info)
        [moved] = admin.describe_topic(topic).partition_info
        assert moved.shard in info.in_sync_replicas
        # And produces go on there
        acked_at_move = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > acked_at_move + 200, timeout_s=60)
    writer.stop()
    # And every acknowledged record is read back, at its offset
    stored = stored_by_offset(broker.url, topic)
    lost = {o: v for o, v in writer.acknowledged.items() if stored.get(o) != v}
    assert not lost, f"{len(lost)} of {len(writer.acknowledged)} acknowledged records lost " \
                     f"or moved, e.g. offsets {sorted(lost)[:5]}"
