"""Tiered storage end to end (issue 14): a real ``plinth serve --tier-url``, real shard
processes, a real store (a directory, or moto's S3 server on 127.0.0.1), the official clients.

Hundreds of MB go into topics of small segments with a small local retention; every
acknowledged record is read back from offset 0, byte for byte, most of it from object
storage; the shards' disks stay within local retention; and that holds across a
restart, a shard SIGKILLed while it uploads, and an S3 server that is down for 30 s.

Records name themselves (numbered_records.py), so every byte read back is checked.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plinth import Admin, Consumer
from plinth.errors import CorruptDataError
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import list_remote_segments
from tests.conftest import Broker
from tests.shard_processes import shard_pids
from tests.e2e.numbered_records import (
    MiB, VALUE_BYTES, check_everything_reads_back, produce, value)
from tests.support import topic_id_in, topic_that_moves, unique_topic, wait_until

SEGMENT_BYTES = 1 * MiB                 # the smallest segment.bytes a topic may set
LOCAL_RETENTION_BYTES = 4 * MiB
PARTITIONS = 2


def tiered_topic(url: str, topic: str | None = None,
                 local_retention_bytes: int = LOCAL_RETENTION_BYTES) -> str:
    topic = topic or unique_topic("tier")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, PARTITIONS, config={
            "remote.storage.enable": "true", "segment.bytes": str(SEGMENT_BYTES),
            "local.retention.bytes": str(local_retention_bytes)})
    return topic


def file_bytes(path: Path) -> int:
    """Its size, or 0 if retention deleted it since it was listed."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def local_log_bytes(data_dir: Path, topic: str) -> dict[str, int]:
    """Partition dir name -> bytes of its .log files, over every shard's directory."""
    sizes: dict[str, int] = {}
    for path in data_dir.glob(f"shards/*/{topic}-*/*.log"):
        sizes[path.parent.name] = sizes.get(path.parent.name, 0) + file_bytes(path)
    return sizes


def wait_for_local_retention(data_dir: Path, topic: str) -> dict[str, int]:
    """Until each partition's disk holds at most local retention plus two segments (the
    active one, and the one that cannot go without dropping below the retention)."""
    bound = LOCAL_RETENTION_BYTES + 2 * SEGMENT_BYTES
    return wait_until(
        lambda: (sizes := local_log_bytes(data_dir, topic)) and len(sizes) == PARTITIONS
        and all(size <= bound for size in sizes.values()) and sizes,
        timeout_s=180, interval_s=0.5,
        explain=lambda: f"local .log bytes {local_log_bytes(data_dir, topic)}, bound {bound}")


def check_remote_segments_whole(store_url: str, topic: str, topic_id: str) -> int:
    """Every visible remote segment has each of its objects, at its recorded size;
    how many there are."""
    store = open_remote_store(store_url)
    visible = 0
    for partition in range(PARTITIONS):
        for segment in list_remote_segments(store, topic, topic_id, partition):
            for kind, digest in segment.objects.items():
                assert store.head(segment.object_key(kind)).size_bytes == digest.size_bytes, \
                    f"{segment.object_key(kind)}: not the size its manifest says"
            visible += 1
    return visible


def unreferenced_objects(store_url: str, topic: str, topic_id: str) -> list[str]:
    """Objects of the topic in the store that no visible segment owns (a copy that
    started and never finished, not yet cleaned up)."""
    store = open_remote_store(store_url)
    owned = set()
    for partition in range(PARTITIONS):
        for segment in list_remote_segments(store, topic, topic_id, partition):
            owned |= {segment.object_key(kind) for kind in segment.objects}
            owned.add(segment.manifest_key)
    return [info.key for info in store.list(f"{topic}-{topic_id}/") if info.key not in owned]


def test_hundreds_of_mb_read_back_from_offset_0_through_object_storage_and_after_a_restart(
        broker_factory, tmp_path):
    # Given a broker tiering to a directory, and a topic of 1 MiB segments keeping 4 MiB locally
    (tmp_path / "tier").mkdir()
    store_url = f"file://{tmp_path}/tier"
    broker = broker_factory(shards=2, extra_args=(
        "--tier-url", store_url, "--tier-cache-bytes", str(64 * MiB)))
    topic = tiered_topic(broker.url)
    # When 300 MB are produced
    acknowledged = produce(broker.url, topic, 0, 300_000, PARTITIONS)
    # Then the disks shrink to local retention, the rest being in the store
    sizes = wait_for_local_retention(broker.data_dir, topic)
    assert sum(sizes.values()) < 300_000 * VALUE_BYTES / 10
    assert check_remote_segments_whole(store_url, topic, topic_id_in(broker.data_dir, topic)) > 250
    # And status shows what the shards hold remotely, and the upload backlog
    with Admin(broker=broker.url) as admin:
        shards = admin.status().shards
    assert sum(shard.remote_bytes for shard in shards) > 250 * MiB
    assert sum(shard.upload_errors for shard in shards) == 0
    assert [shard.remote_partitions_not_listed for shard in shards] == [0, 0]   # all listed
    shown = subprocess.run([sys.executable, "-m", "plinth.cli", "status"], text=True,
                           capture_output=True, env=dict(os.environ, PLINTH_BROKER=broker.url),
                           timeout=60)
    assert "tiered storage" in shown.stdout and "upload lag bytes" in shown.stdout, shown
    # And every record reads back from offset 0, byte for byte
    check_everything_reads_back(broker.url, topic, acknowledged)
    # And again after the broker restarts
    assert broker.stop() == 0
    broker.start()
    check_everything_reads_back(broker.url, topic, acknowledged)


def test_a_shard_killed_while_it_uploads_leaves_no_half_segment_and_loses_nothing(
        broker_factory, moto_s3):
    # Given a broker tiering to moto's S3 server, and a topic with a backlog of uploads
    store_url = moto_s3.url()
    broker = broker_factory(shards=1, extra_args=("--tier-url", store_url))
    topic = tiered_topic(broker.url)
    acknowledged = produce(broker.url, topic, 0, 150_000, PARTITIONS)
    rolled = 150_000 * VALUE_BYTES // SEGMENT_BYTES - 2 * PARTITIONS   # segments, about
    pids = wait_until(lambda: shard_pids(broker.data_dir), timeout_s=60)
    topic_id = topic_id_in(broker.data_dir, topic)
    visible = wait_until(lambda: check_remote_segments_whole(store_url, topic, topic_id) >= 3
                         and check_remote_segments_whole(store_url, topic, topic_id), timeout_s=120,
                         interval_s=0.05)
    # When its shard process is SIGKILLed in the middle of the uploads
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    assert visible < rolled, f"all {visible} segments were up before the kill"
    # Then (Ray restarts the shard) the uploads finish, every visible segment is whole,
    # and every acknowledged record reads back, with the records produced since
    acknowledged |= produce(broker.url, topic, 150_000, 20_000, PARTITIONS)
    wait_for_local_retention(broker.data_dir, topic)
    assert check_remote_segments_whole(store_url, topic, topic_id) > rolled
    # And whatever the killed upload had written is cleaned up
    wait_until(lambda: not unreferenced_objects(store_url, topic, topic_id), timeout_s=60,
               explain=lambda: unreferenced_objects(store_url, topic, topic_id))
    check_everything_reads_back(broker.url, topic, acknowledged)


def test_an_s3_server_down_for_30_s_delays_uploads_but_not_produce_or_local_reads(
        broker_factory, moto_s3):
    # Given a broker tiering to moto's S3 server, with part of a topic already uploaded
    store_url = moto_s3.url()
    broker = broker_factory(shards=1, extra_args=("--tier-url", store_url))
    topic = tiered_topic(broker.url)
    acknowledged = produce(broker.url, topic, 0, 30_000, PARTITIONS)
    wait_for_local_retention(broker.data_dir, topic)
    # When the S3 server stops for 30 s while records are produced and read
    moto_s3.stop()
    try:
        stopped_s = time.monotonic()
        produced = produce(broker.url, topic, 30_000, 20_000, PARTITIONS)
        # Then produce is unaffected, and the tail reads back from the local disk
        acknowledged |= produced
        check_everything_reads_back(broker.url, topic, produced)
        # And local retention waits: the disk holds what is not uploaded
        assert sum(local_log_bytes(broker.data_dir, topic).values()) >= 20_000 * VALUE_BYTES
        # And a read of remote-only offsets fails retriably, never with wrong data
        with Consumer(broker=broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=2_000) as consumer:
            consumer.assign([(topic, 0)])
            assert list(consumer) == []
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped_s)))   # the outage lasts 30 s
    finally:
        moto_s3.start()
    # And once it is back the backlog uploads, the disk shrinks, and everything reads back
    wait_for_local_retention(broker.data_dir, topic)
    check_everything_reads_back(broker.url, topic, acknowledged)


def test_plinth_consume_of_remote_only_offsets_while_s3_is_down_says_so_and_exits_1(
        broker_factory, moto_s3):
    # Given a tiered topic whose first records are only in moto's S3 server
    broker = broker_factory(shards=1, extra_args=("--tier-url", moto_s3.url()))
    topic = tiered_topic(broker.url)
    produce(broker.url, topic, 0, 20_000, PARTITIONS)
    wait_for_local_retention(broker.data_dir, topic)
    env = dict(os.environ, PLINTH_BROKER=broker.url)
    consume = [sys.executable, "-m", "plinth.cli", "consume", topic, "--partition", "0",
               "--offset", "100", "--max-messages", "1", "--timeout-ms", "3000"]
    # When the S3 server is down while offset 100 is consumed
    moto_s3.stop()
    try:
        down = subprocess.run(consume, text=True, capture_output=True, env=env, timeout=60)
    finally:
        moto_s3.start()
    # Then the consume warns as soon as the fetch fails, and ends in an error line naming
    # the partition, the offset and the store's error, with status 1, printing no record
    assert (down.returncode, down.stdout) == (1, ""), down
    assert (f"fetch of {topic}-0 at offset 100 failed: RemoteStorageUnavailableError: "
            in down.stderr), down
    assert "retrying until it succeeds" in down.stderr, down
    last = down.stderr.splitlines()[-1]
    assert last.startswith(f"error: RemoteStorageUnavailableError: {topic}-0: fetches at "
                           f"offset 100 were still failing when --timeout-ms 3000 ended: "
                           ), down.stderr
    assert "object storage" in last or "s3://" in last, down.stderr
    # And with the server back, the same consume prints the record, with status 0
    up = subprocess.run(consume, text=True, capture_output=True, env=env, timeout=60)
    assert (up.returncode, up.stderr) == (0, ""), up
    assert up.stdout.splitlines() == [value(100 * PARTITIONS).decode()]


def test_a_corrupt_remote_object_gives_the_consumer_corrupt_data_naming_the_partition_and_offset(
        broker_factory, tmp_path):
    # Given a tiered topic whose first segments are only in a directory store
    (tmp_path / "tier").mkdir()
    store_url = f"file://{tmp_path}/tier"
    broker = broker_factory(shards=1, extra_args=("--tier-url", store_url))
    topic = tiered_topic(broker.url)
    produce(broker.url, topic, 0, 20_000, PARTITIONS)
    wait_for_local_retention(broker.data_dir, topic)
    first = list_remote_segments(open_remote_store(store_url), topic,
                                 topic_id_in(broker.data_dir, topic), 0)[0]
    # When one byte of its first segment's .log object flips in the store (inside the
    # records of its first entry, so only the entry's CRC can tell)
    log_object = tmp_path / "tier" / first.object_key("log")
    data = bytearray(log_object.read_bytes())
    data[200] ^= 0x10
    log_object.write_bytes(bytes(data))
    # Then a consumer reading partition 0 from offset 0 gets CorruptDataError naming
    # the partition and the offset, and no record
    with Consumer(broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=30_000) as consumer:
        consumer.assign([(topic, 0)])
        with pytest.raises(CorruptDataError,
                           match=rf"partition {topic}/0, offset 0: .*CRC mismatch"):
            records = list(consumer)
            raise AssertionError(f"{len(records)} records read, no error")


def test_a_tiered_range_left_on_an_old_shard_keeps_its_records_once_its_local_copy_is_empty(
        broker_factory, tmp_path):
    # Given a tiered topic keeping nothing locally, some of whose partitions move when a
    # shard is added
    (tmp_path / "tier").mkdir()
    store_url = f"file://{tmp_path}/tier"
    broker = broker_factory(shards=1, extra_args=("--tier-url", store_url))
    topic = tiered_topic(broker.url, topic_that_moves(PARTITIONS, ["shard-0"],
                                                      ["shard-0", "shard-1"]), 0)
    acknowledged = produce(broker.url, topic, 0, 10_000, PARTITIONS)
    # When a shard is added (a moved partition's writes go there; its sealed range stays
    # on shard-0), more is produced, and shard-0's copy of the moved range is uploaded
    # and dropped locally by local retention
    with Admin(broker=broker.url) as admin:
        moved = [p for t, p, _, _, _ in admin.add_shards(1) if t == topic]
    assert moved
    acknowledged |= produce(broker.url, topic, 10_000, 4_000, PARTITIONS)
    old_copy = broker.data_dir / "shards" / "shard-0" / f"{topic}-{moved[0]}"
    wait_until(lambda: sum(file_bytes(f) for f in old_copy.glob("*.log")) == 0,
               timeout_s=120, explain=lambda: sorted(f.name for f in old_copy.glob("*.log")))
    # And the controller looks for ranges to prune (it does at every status)
    with Admin(broker=broker.url) as admin:
        admin.status()
    # Then the range's remote segments are still in the store, and every record reads back
    assert list_remote_segments(open_remote_store(store_url), topic,
                                topic_id_in(broker.data_dir, topic), moved[0])
    check_everything_reads_back(broker.url, topic, acknowledged)


def cached_segment_ids(data_dir: Path) -> set[str]:
    """The segment ids of the chunks in every shard's tier cache (chunk_cache.py: files
    named ``<segment id>-<chunk number>``)."""
    return {path.name.rpartition("-")[0] for path in data_dir.glob("shards/*/tier-cache/*")}


def test_deleting_a_tiered_topic_read_through_the_cache_leaves_none_of_its_chunks_on_disk(
        broker_factory, moto_s3):
    # Given a broker tiering to moto's S3 server, and two tiered topics keeping nothing
    # locally, each read from offset 0 through the shard's chunk cache
    store_url = moto_s3.url()
    broker = broker_factory(shards=1, extra_args=(
        "--tier-url", store_url, "--tier-cache-bytes", str(64 * MiB)))
    doomed, kept = (tiered_topic(broker.url, local_retention_bytes=0) for _ in range(2))
    segment_ids = {}
    for topic in (doomed, kept):
        acknowledged = produce(broker.url, topic, 0, 6_000, PARTITIONS)
        wait_until(lambda: sum(local_log_bytes(broker.data_dir, topic).values())
                   < 6_000 * VALUE_BYTES // 2, timeout_s=120, interval_s=0.5,
                   explain=lambda: f"local .log bytes {local_log_bytes(broker.data_dir, topic)}")
        check_everything_reads_back(broker.url, topic, acknowledged)
        store = open_remote_store(store_url)
        segment_ids[topic] = {segment.segment_id for partition in range(PARTITIONS)
                              for segment in list_remote_segments(
                                  store, topic, topic_id_in(broker.data_dir, topic), partition)}
    cached = cached_segment_ids(broker.data_dir)
    assert cached & segment_ids[doomed] and cached & segment_ids[kept]
    # When one of them is deleted
    doomed_id = topic_id_in(broker.data_dir, doomed)
    with Admin(broker=broker.url) as admin:
        admin.delete_topic(doomed)
    # Then its remote objects go, and no chunk of it stays in the cache; the other's stay
    wait_until(lambda: not store.list(f"{doomed}-{doomed_id}/"), timeout_s=60,
               explain=lambda: [info.key for info in store.list(f"{doomed}-{doomed_id}/")])
    wait_until(lambda: not cached_segment_ids(broker.data_dir) & segment_ids[doomed],
               timeout_s=60, explain=lambda: sorted(cached_segment_ids(broker.data_dir)
                                                    & segment_ids[doomed]))
    assert cached_segment_ids(broker.data_dir) & segment_ids[kept]


def test_a_topic_deleted_while_s3_is_down_keeps_the_restart_to_its_store_until_its_objects_go(
        broker_factory, ray_cluster, moto_s3):
    # Given a broker tiering to moto's S3 server, with a tiered topic partly uploaded
    store_url = moto_s3.url()
    broker = broker_factory(shards=1, extra_args=("--tier-url", store_url))
    topic = tiered_topic(broker.url, local_retention_bytes=0)
    produce(broker.url, topic, 0, 6_000, PARTITIONS)
    store = open_remote_store(store_url)
    prefix = f"{topic}-{topic_id_in(broker.data_dir, topic)}/"
    wait_until(lambda: len(store.list(prefix)) >= 2 * 6, timeout_s=120, interval_s=0.5)
    # When the topic is deleted while S3 is down, and the broker stops before S3 is back
    pending = broker.data_dir / "shards" / "shard-0" / "remote-deletions"
    moto_s3.stop()
    try:
        with Admin(broker=broker.url) as admin:
            admin.delete_topic(topic)
        wait_until(lambda: len(list(pending.glob("*/deletion.json"))) == PARTITIONS,
                   timeout_s=60, interval_s=0.2)
        assert broker.stop() == 0
    finally:
        moto_s3.start()
    objects = store.list(prefix)
    assert objects
    # Then a restart without --tier-url exits at once, naming the deletions, their store
    # and the way out, before serving anything
    refusal = (f"error: InvalidConfigError: {PARTITIONS} deleted partition(s) of tiered "
               f"topics ({topic}-0, {topic}-1) still have remote segments to delete in "
               f"{store_url}, but the server was started {{}}: start it with --tier-url "
               f"{store_url} to finish their deletion (or, to leave those objects in the store "
               f"for good, remove {pending} (shard-0))")
    for tier_args, started in (((), "without --tier-url"),
                               (("--tier-url", moto_s3.url("other")),
                                f"with --tier-url {moto_s3.url('other')}")):
        again = Broker(broker.data_dir, ray_cluster, shards=1, extra_args=tier_args)
        served = subprocess.run(again.command(), capture_output=True, text=True, timeout=180)
        assert served.returncode == 1, served.stdout + served.stderr
        assert refusal.format(started) in served.stderr, served.stderr
        assert "ready" not in served.stdout
        # And nothing of the deletion was dropped: it waits, every object still there
        assert len(list(pending.glob("*/deletion.json"))) == PARTITIONS
        assert store.list(prefix) == objects
    # And a restart with its store starts and deletes every object of the topic
    broker_factory(shards=1, data_dir=broker.data_dir, extra_args=("--tier-url", store_url))
    wait_until(lambda: not store.list(prefix), timeout_s=60,
               explain=lambda: [info.key for info in store.list(prefix)])
    wait_until(lambda: not any(pending.iterdir()), timeout_s=60)


def test_kafka_clients_reading_remote_offsets_while_the_store_is_gone_are_told_of_an_error(
        broker_factory, tmp_path, caplog):
    from confluent_kafka import Consumer as ConfluentConsumer
    from confluent_kafka import TopicPartition as ConfluentTopicPartition
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaTimeoutError

    from tests.support import free_port

    # Given a Kafka listener, and a tiered topic whose first segments are only in a
    # directory store
    (tmp_path / "tier").mkdir()
    kafka_address = f"127.0.0.1:{free_port()}"
    broker = broker_factory(shards=1, extra_args=(
        "--tier-url", f"file://{tmp_path}/tier", "--kafka-listen", kafka_address))
    topic = tiered_topic(broker.url)
    produce(broker.url, topic, 0, 20_000, PARTITIONS)
    wait_for_local_retention(broker.data_dir, topic)
    # When the store's directory goes away (every call of the store is unavailable)
    (tmp_path / "tier").rename(tmp_path / "tier-away")
    # Then kafka-python's look-up of the first record's time warns of the error Kafka
    # gives a failed remote read (UNKNOWN_SERVER_ERROR), not of a leader change
    consumer = KafkaConsumer(bootstrap_servers=kafka_address)
    try:
        with caplog.at_level(logging.WARNING, logger="kafka"):
            with pytest.raises(KafkaTimeoutError):
                consumer.offsets_for_times({TopicPartition(topic, 0): 0}, timeout_ms=3_000)
        warned = [r.getMessage() for r in caplog.records
                  if r.name.startswith("kafka") and "Attempt to fetch offsets" in r.getMessage()]
        assert warned and all(m.endswith("failed due to: UnknownError") for m in warned), warned
    finally:
        consumer.close()
    # And librdkafka's consumer reading from the beginning hands it to the application
    confluent = ConfluentConsumer({"bootstrap.servers": kafka_address, "group.id": "g",
                                   "auto.offset.reset": "earliest"})
    try:
        confluent.assign([ConfluentTopicPartition(topic, 0, 0)])
        errors = wait_until(lambda: [m.error() for m in [confluent.poll(1.0)]
                                     if m is not None and m.error() is not None],
                            timeout_s=30, explain=lambda: "no error polled")
        assert "Unknown broker error" in str(errors[0]), errors
    finally:
        confluent.close()
