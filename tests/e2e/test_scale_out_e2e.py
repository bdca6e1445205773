"""Scaling out without moving data: `plinth shards add` sends new writes of the
partitions the new shards win there at once; older records stay on their old
shard, are read from there, and nothing is copied."""

from __future__ import annotations

from pathlib import Path

from plinth import Admin, Consumer, Producer
from tests.support import unique_topic

PARTITIONS = 8


def log_bytes(data_dir: Path, shard: str, topic: str, partition: int) -> int:
    return sum(f.stat().st_size for f in (data_dir / "shards" / shard / f"{topic}-{partition}").glob("*.log"))


def test_adding_shards_moves_writes_not_data_and_every_record_stays_readable(broker_factory):
    broker = broker_factory(shards=2)
    topic = unique_topic("scale")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
        before = {p.partition: p for p in admin.describe_topic(topic).partition_info}
    with Producer(broker=broker.url) as producer:
        for n in range(400):
            producer.send(topic, b"old-%d" % n, partition=n % PARTITIONS)
    old_bytes = {p: log_bytes(broker.data_dir, before[p].shard, topic, p) for p in range(PARTITIONS)}
    # When two shards are added
    with Admin(broker=broker.url) as admin:
        moves = admin.add_shards(2)
    moved = {partition: (src, dst, offset) for t, partition, src, dst, offset in moves if t == topic}
    assert moved and all(dst in ("shard-2", "shard-3") for _, dst, _ in moved.values())
    assert all(offset == 50 for _, _, offset in moved.values())
    # Then new writes to moved partitions land on the new shards at once, continuing the offsets
    with Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
        metas = [producer.send(topic, b"new-%d" % n, partition=n % PARTITIONS).get(60)
                 for n in range(400)]
    assert all(m.offset >= 50 for m in metas)
    with Admin(broker=broker.url) as admin:
        after = {p.partition: p for p in admin.describe_topic(topic).partition_info}
        status = admin.status()
    for p in range(PARTITIONS):
        assert after[p].shard == (moved[p][1] if p in moved else before[p].shard)
        assert (after[p].start_offset, after[p].end_offset) == (0, 100)
    assert {s.shard_id for s in status.shards} == {"shard-0", "shard-1", "shard-2", "shard-3"}
    # And nothing was copied: the old shard's log of a moved partition is unchanged,
    # and the new shard's log starts at the move (its first segment is named 50)
    for p, (src, dst, _) in moved.items():
        assert log_bytes(broker.data_dir, src, topic, p) == old_bytes[p]
        new_logs = sorted((broker.data_dir / "shards" / dst / f"{topic}-{p}").glob("*.log"))
        assert new_logs[0].name == f"{50:020d}.log"
    # And a consumer from the beginning reads every record, old then new, per partition
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=5_000) as consumer:
        records = list(consumer)
    for p in range(PARTITIONS):
        values = [r.value for r in records if r.partition == p]
        assert [r.offset for r in records if r.partition == p] == list(range(100))
        assert all(v.startswith(b"old-") for v in values[:50])
        assert all(v.startswith(b"new-") for v in values[50:])
