"""Scaling in with tiered storage (issue 14): `plinth shards remove` retires a removed
shard once its ranges of tiered topics are in object storage, with no retention change
and no topic deletion, and their records stay readable through the other shards, which
read them from the store: from offset 0, by a consumer group resuming at its commit, and
after a restart. A real ``plinth serve --tier-url file://...``, real shard processes,
the official clients.

Records name themselves (numbered_records.py), so every byte read back is checked.
"""

from __future__ import annotations

import json

from plinth import Admin, Consumer
from tests.e2e.numbered_records import (
    MiB, check_everything_reads_back, produce)
from tests.support import topic_that_moves, unique_topic, wait_until

SEGMENT_BYTES = 1 * MiB                 # the smallest segment.bytes a topic may set
PARTITIONS = 4
TWO, THREE = ["shard-0", "shard-1"], ["shard-0", "shard-1", "shard-2"]
RETIRE_WAIT_S = 90


def consume_with_group(url: str, topic: str, group: str, count: int) -> list:
    """Read ``count`` records as ``group`` (from its commit, else the earliest), and
    commit them."""
    records = []
    with Consumer(topic, broker=url, group=group, auto_offset_reset="earliest",
                  consumer_timeout_ms=10_000, fetch_max_bytes=4 * MiB) as consumer:
        for record in consumer:
            records.append(record)
            if len(records) == count:
                break
        consumer.commit()
    return records


def shard_ids(url: str) -> set[str]:
    with Admin(broker=url) as admin:
        return {s.shard_id for s in admin.status().shards}


def test_shards_remove_retires_once_tiered_and_reads_go_through_the_others(
        broker_factory, tmp_path):
    # Given a tiered topic keeping nothing locally, some of whose partitions move to an
    # added shard, with a consumer group
    (tmp_path / "tier").mkdir()
    broker = broker_factory(shards=2, extra_args=("--tier-url", f"file://{tmp_path}/tier"))
    topic, group = topic_that_moves(PARTITIONS, TWO, THREE), unique_topic("group")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS, config={
            "remote.storage.enable": "true", "segment.bytes": str(SEGMENT_BYTES),
            "local.retention.bytes": "0"})
        moved = {p for t, p, *_ in admin.add_shards(1) if t == topic}
    assert moved
    # And about 5 MB on it, half of which the group read and committed
    acknowledged = produce(broker.url, topic, 0, 2_500, PARTITIONS)
    assert len(consume_with_group(broker.url, topic, group, 2_500)) == 2_500
    acknowledged |= produce(broker.url, topic, 2_500, 2_500, PARTITIONS)
    # When the added shard is removed
    with Admin(broker=broker.url) as admin:
        removed = {p for t, p, src, *_ in admin.remove_shards(1) if t == topic}
    assert removed == moved
    # Then it retires once its ranges are in object storage (no retention change, no
    # topic deletion)
    wait_until(lambda: "shard-2" not in shard_ids(broker.url), timeout_s=RETIRE_WAIT_S,
               interval_s=1.0)
    metadata = json.loads((broker.data_dir / "metadata.json").read_text())
    assert metadata["draining"] == []
    # (shard-2's ranges are tiered: [start, ""], served by the owner; none names it)
    ranges = metadata["topics"][topic]["ranges"]
    assert {int(p) for p, rs in ranges.items() if [0, ""] in rs} == moved
    assert all(r[1] != "shard-2" for rs in ranges.values() for r in rs), ranges
    # And every acknowledged record reads back from offset 0, byte for byte, through the
    # other shards
    check_everything_reads_back(broker.url, topic, acknowledged)
    # And the group resumes at its commit: exactly the records sent after it
    resumed = consume_with_group(broker.url, topic, group, 2_500)
    assert sorted(value_number(r.value) for r in resumed) == list(range(2_500, 5_000))
    # And each partition still starts at 0
    with Admin(broker=broker.url) as admin:
        assert [p.start_offset for p in admin.describe_topic(topic).partition_info] == \
            [0] * PARTITIONS
    # And after a restart, it stays retired and everything still reads back
    broker.stop()
    broker.start()
    assert shard_ids(broker.url) == set(TWO)
    check_everything_reads_back(broker.url, topic, acknowledged)


def value_number(data: bytes) -> int:
    return int(data[:10])
