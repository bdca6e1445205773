"""Scaling without moving data: `plinth shards add` sends new writes of the
partitions the new shards win there at once; older records stay on their old
shard, are read from there, and nothing is copied. `plinth shards remove` sends
them back, with the consumer groups' committed offsets; a removed shard serves
its older ranges until none is left, then retires."""

from __future__ import annotations

import json
from pathlib import Path

from plinth import Admin, Consumer, Producer
from plinth.control import placement
from tests.support import topic_that_moves, unique_topic, wait_until

PARTITIONS = 8
TWO, THREE, FOUR = (["shard-%d" % i for i in range(n)] for n in (2, 3, 4))


def group_that_moves(shards_before: list[str], shards_after: list[str]) -> str:
    while True:
        group = unique_topic("group")
        if placement.shard_for_group(group, shards_before) != placement.shard_for_group(group, shards_after):
            return group


def log_bytes(data_dir: Path, shard: str, topic: str, partition: int) -> int:
    return sum(f.stat().st_size for f in (data_dir / "shards" / shard / f"{topic}-{partition}").glob("*.log"))


def test_adding_shards_moves_writes_not_data_and_every_record_stays_readable(broker_factory):
    broker = broker_factory(shards=2)
    topic = topic_that_moves(PARTITIONS, TWO, FOUR)
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


def consume_all(url: str, topic: str, **options) -> list:
    with Consumer(topic, broker=url, auto_offset_reset="earliest", consumer_timeout_ms=5_000,
                  **options) as consumer:
        records = list(consumer)
        if "group" in options:
            consumer.commit()
    return records


def test_removing_a_shard_sends_writes_and_groups_back_and_it_retires_once_it_holds_nothing(broker_factory):
    broker = broker_factory(shards=2)
    topic, group = topic_that_moves(PARTITIONS, TWO, THREE), group_that_moves(TWO, THREE)
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    with Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
        for n in range(80):
            producer.send(topic, b"first-%d" % n, partition=n % PARTITIONS)
    # Given a group that committed every record so far
    assert len(consume_all(broker.url, topic, group=group)) == 80
    # And a third shard that took some partitions' writes and the group's coordination
    with Admin(broker=broker.url) as admin:
        added = {p: dst for t, p, _, dst, _ in admin.add_shards(1) if t == topic}
        assert admin.describe_group(group).committed == {(topic, p): 10 for p in range(PARTITIONS)}
    with Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
        for n in range(80):
            producer.send(topic, b"second-%d" % n, partition=n % PARTITIONS).get(60)
    # When that shard is removed
    with Admin(broker=broker.url) as admin:
        removed = {p: (src, dst, offset) for t, p, src, dst, offset in admin.remove_shards(1) if t == topic}
        status = admin.status()
        committed = admin.describe_group(group).committed
    # Then the partitions it owned go back to their old shards, at their end offsets
    assert set(removed) == set(added) and all(offset == 20 for _, _, offset in removed.values())
    assert all(src == "shard-2" and dst == placement.shard_for(topic, p, TWO)
               for p, (src, dst, _) in removed.items())
    # And the group kept its committed offsets through both moves
    assert committed == {(topic, p): 10 for p in range(PARTITIONS)}
    # And the removed shard still runs, draining: serving its older range, while writes land elsewhere
    assert {s.shard_id: s.draining for s in status.shards} == {
        "shard-0": False, "shard-1": False, "shard-2": True}
    with Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
        metas = [producer.send(topic, b"third-%d" % n, partition=n % PARTITIONS).get(60)
                 for n in range(80)]
    assert sorted(m.offset for m in metas if m.partition == 0) == list(range(20, 30))
    # And every record is read in order, each partition's offsets contiguous across three ranges
    records = consume_all(broker.url, topic)
    for p in range(PARTITIONS):
        mine = [r for r in records if r.partition == p]
        assert [r.offset for r in mine] == list(range(30))
        assert [r.value.split(b"-")[0] for r in mine] == [b"first"] * 10 + [b"second"] * 10 + [b"third"] * 10
    # And the group resumes where it committed: only the records after its commit
    assert sorted(r.offset for r in consume_all(broker.url, topic, group=group)) == \
        sorted(list(range(10, 30)) * PARTITIONS)
    # And once no range is left on it (the topic is deleted), the removed shard retires
    with Admin(broker=broker.url) as admin:
        admin.delete_topic(topic)
        assert {s.shard_id for s in admin.status().shards} == {"shard-0", "shard-1"}


def test_a_removed_shard_retires_once_retention_has_deleted_its_last_range(broker_factory):
    broker = broker_factory(shards=2)
    topic = topic_that_moves(PARTITIONS, TWO, THREE)
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
        moved = {p for t, p, *_ in admin.add_shards(1) if t == topic}
    # Given records written to the third shard, which is then removed (draining)
    with Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
        for n in range(40):
            producer.send(topic, b"on-shard-2-%d" % n, partition=n % PARTITIONS).get(60)
    with Admin(broker=broker.url) as admin:
        admin.remove_shards(1)
        with Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
            for n in range(40):
                producer.send(topic, b"kept-%d" % n, partition=n % PARTITIONS).get(60)
        assert "shard-2" in {s.shard_id for s in admin.status().shards}
        # When retention deletes every record older than a millisecond
        admin.alter_topic(topic, {"retention.ms": 1})
        # Then the removed shard retires (checked by the next status call)
        wait_until(lambda: "shard-2" not in {s.shard_id for s in admin.status().shards}, timeout_s=60)
        starts = {p.partition: p.start_offset for p in admin.describe_topic(topic).partition_info}
    # And the moved partitions start where their writes came back; the rest are readable
    assert all(starts[p] == 5 for p in moved)
    records = consume_all(broker.url, topic)
    assert {r.value for r in records if r.partition in moved} == \
        {b"kept-%d" % n for n in range(40) if n % PARTITIONS in moved}


def test_a_grown_broker_restarted_with_its_original_command_line_keeps_its_shards(broker_factory):
    # Given a broker started with --shards 2 that grew to 3
    broker = broker_factory(shards=2)
    topic = topic_that_moves(PARTITIONS, TWO, THREE)
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
        admin.add_shards(1)
    with Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
        for n in range(40):
            producer.send(topic, b"%d" % n, partition=n % PARTITIONS).get(60)
    # When it restarts with the same command line (--shards 2)
    broker.stop()
    broker.start()
    # Then it runs the three shards and serves every record
    with Admin(broker=broker.url) as admin:
        assert {s.shard_id for s in admin.status().shards} == set(THREE)
    assert len(consume_all(broker.url, topic)) == 40


def test_a_restart_finishes_a_change_of_shards_a_crash_interrupted(broker_factory):
    broker = broker_factory(shards=2)
    topic, group = topic_that_moves(2, TWO, THREE), group_that_moves(TWO, THREE)
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 2)
    with Producer(broker=broker.url) as producer:
        for n in range(10):
            producer.send(topic, b"%d" % n, partition=n % 2)
    assert len(consume_all(broker.url, topic, group=group)) == 10
    # Given a crash right after a third shard was recorded, before the group and the
    # partitions moved
    broker.stop()
    metadata_path = broker.data_dir / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata.update(shards=THREE, groups_moving_from=TWO)
    metadata_path.write_text(json.dumps(metadata))
    # When the broker starts again
    broker.start()
    # Then the group is coordinated by the shard its name now hashes to, offsets intact,
    # and each partition is owned by the shard it now hashes to, from its end offset
    with Admin(broker=broker.url) as admin:
        assert admin.describe_group(group).committed == {(topic, 0): 5, (topic, 1): 5}
        owners = [p.shard for p in admin.describe_topic(topic).partition_info]
    assert owners == placement.place_topic(topic, 2, THREE)
    with Producer(broker=broker.url) as producer:
        assert [producer.send(topic, b"new", partition=p).get(30).offset for p in (0, 1)] == [5, 5]
    assert "groups_moving_from" not in json.loads(metadata_path.read_text())
    # And the group resumes after its commits: only the two new records
    assert sorted((r.partition, r.offset) for r in consume_all(broker.url, topic, group=group)) \
        == [(0, 5), (1, 5)]


def test_a_group_member_keeps_its_partitions_and_consuming_while_its_group_moves_to_a_new_shard(broker_factory):
    broker = broker_factory(shards=2)
    topic, group = topic_that_moves(PARTITIONS, TWO, THREE), group_that_moves(TWO, THREE)
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, PARTITIONS)
    seen: list[bytes] = []
    revoked: list = []
    with Consumer(topic, broker=broker.url, group=group, auto_offset_reset="earliest",
                  auto_commit_interval_ms=200, request_timeout_ms=5_000,
                  on_revoke=revoked.append) as consumer, \
            Producer(broker=broker.url, request_timeout_ms=5_000) as producer:
        def produce_and_read(first: int, count: int) -> None:
            for n in range(first, first + count):
                producer.send(topic, b"%d" % n, partition=n % PARTITIONS).get(30)
            wait_until(lambda: seen.extend(r.value for rs in consumer.poll(100).values() for r in rs)
                       or {b"%d" % n for n in range(first + count)} <= set(seen), timeout_s=60)
        # Given a member that has read what was written so far
        produce_and_read(0, 80)
        # When a shard is added, moving the group's coordination (and some partitions)
        with Admin(broker=broker.url) as admin:
            admin.add_shards(1)
        # Then the member goes on reading new records without an error, none missing
        produce_and_read(80, 80)
        # And it is a member of the new coordinator, which holds the group's commits,
        # with the same partitions: none was revoked
        with Admin(broker=broker.url) as admin:
            info = admin.describe_group(group)
        assert [m.assignment for m in info.members] == [set(consumer.assignment())]
        assert len(info.committed) == PARTITIONS and revoked == []
