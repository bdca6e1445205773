"""Uploading to object storage on a real broker (issue 14): ``plinth serve --tier-url
file://...``, a tiered topic with 1 MiB segments and 1 MiB of local retention; its rolled
segments appear in the store, a whole prefix of the log, the shard's disk shrinks to
the local retention plus the active segment, and the whole log still reads from offset 0.
A tiered topic deleted and created again at once under its name reads only its new
records: its segments are under another topic id."""

from __future__ import annotations

from plinth import Admin, Consumer, Producer
from plinth.shards.tier.remote_segment import partition_prefix
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import list_remote_segments
from tests.support import topic_id_in, unique_topic, wait_until

MiB = 1 << 20
RECORDS = 160
VALUE_BYTES = 32_000   # about 33 records a 1 MiB segment: 5 MB, several segments


def local_log_bytes(data_dir, topic: str) -> int:
    """Bytes of the partition's .log files on every shard's disk."""
    return sum(path.stat().st_size
               for path in (data_dir / "shards").glob(f"*/{topic}-0/*.log"))


def test_a_tiered_topic_uploads_its_rolled_segments_and_its_disk_shrinks_to_local_retention(
        broker_factory, tmp_path):
    # Given a broker with a file:// store and a tiered topic with small segments and
    # 1 MiB of local retention
    tier_dir = tmp_path / "tier"
    tier_dir.mkdir()
    broker = broker_factory(shards=1, extra_args=("--tier-url", f"file://{tier_dir}"))
    topic = unique_topic("tierup")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1, config={
            "segment.bytes": MiB, "remote.storage.enable": "true",
            "local.retention.bytes": MiB})
    # When 5 MB is produced
    values = [b"%04d" % n + b"." * VALUE_BYTES for n in range(RECORDS)]
    with Producer(broker=broker.url, linger_ms=0) as producer:
        for value in values:
            producer.send(topic, value).get(30)
    store = open_remote_store(f"file://{tier_dir}")

    topic_id = topic_id_in(broker.data_dir, topic)

    def remote_ranges():
        return [(s.base_offset, s.end_offset)
                for s in list_remote_segments(store, topic, topic_id, 0)]

    # Then the store holds a whole prefix of the log, from offset 0, several segments long
    wait_until(lambda: len(remote_ranges()) >= 4, timeout_s=60,
               explain=lambda: f"remote {remote_ranges()}")
    ranges = remote_ranges()
    assert ranges[0][0] == 0
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    # And the shard's disk shrinks to the local retention plus the active segment
    wait_until(lambda: local_log_bytes(broker.data_dir, topic) <= 2 * MiB, timeout_s=60,
               explain=lambda: f"{local_log_bytes(broker.data_dir, topic)} bytes local, "
                               f"remote {remote_ranges()}")
    assert local_log_bytes(broker.data_dir, topic) >= MiB   # local retention keeps 1 MiB
    # And the whole log reads from offset 0, record for record: the uploaded part from
    # the store, the tail from the disk
    with Consumer(broker=broker.url, consumer_timeout_ms=10_000) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek(topic, 0, 0)
        read = [record.value for record in consumer]
    assert read == values


def test_a_tiered_topic_deleted_and_created_again_at_once_reads_only_its_new_records(
        broker_factory, tmp_path):
    # Given a broker with a file:// store and a tiered topic whose older segments are
    # only in the store
    tier_dir = tmp_path / "tier"
    tier_dir.mkdir()
    broker = broker_factory(shards=1, extra_args=("--tier-url", f"file://{tier_dir}"))
    topic = unique_topic("tieragain")
    config = {"segment.bytes": MiB, "remote.storage.enable": "true", "local.retention.bytes": MiB}
    store = open_remote_store(f"file://{tier_dir}")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1, config=config)
        produce_tiered(broker, topic, b"old")
        old_id = topic_id_in(broker.data_dir, topic)
        wait_until(lambda: len(list_remote_segments(store, topic, old_id, 0)) >= 4, timeout_s=60)
        # When it is deleted and created again at once under the same name
        admin.delete_topic(topic)
        admin.create_topic(topic, 1, config=config)
    new_id = topic_id_in(broker.data_dir, topic)
    assert new_id != old_id
    # and records are produced into the new one, until its older ones too are only remote
    new_values = produce_tiered(broker, topic, b"new")
    wait_until(lambda: len(list_remote_segments(store, topic, new_id, 0)) >= 4, timeout_s=60)
    wait_until(lambda: local_log_bytes(broker.data_dir, topic) <= 2 * MiB, timeout_s=60)
    # Then reading it from offset 0 gives the new records only, every one of them
    with Consumer(broker=broker.url, consumer_timeout_ms=10_000) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek(topic, 0, 0)
        read = [record.value for record in consumer]
    assert read == new_values
    # And the old topic's objects are gone from the store, the new one's are not
    wait_until(lambda: store.list(partition_prefix(topic, old_id, 0)) == [], timeout_s=60,
               explain=lambda: f"left {[i.key for i in store.list(partition_prefix(topic, old_id, 0))]}")
    assert list_remote_segments(store, topic, new_id, 0)


def produce_tiered(broker, topic: str, tag: bytes) -> list[bytes]:
    """RECORDS values of VALUE_BYTES, each naming ``tag`` and its number; acknowledged."""
    values = [tag + b"%04d" % n + b"." * VALUE_BYTES for n in range(RECORDS)]
    with Producer(broker=broker.url, linger_ms=0) as producer:
        for value in values:
            producer.send(topic, value).get(30)
    return values
