"""Retention: altering a topic's retention deletes whole old segments on the
shards; a consumer below the new start offset follows its auto_offset_reset."""

from __future__ import annotations

from plinth import Admin, Consumer, Producer
from tests.support import unique_topic, wait_until

MiB = 1 << 20


def test_retention_bytes_deletes_old_segments_and_consumers_skip_to_the_new_start(shared_broker):
    topic = unique_topic("ret")
    with Admin(broker=shared_broker.url) as admin:
        # (segment.bytes' smallest value, 1 MiB: about 33 records of 32 KiB a segment)
        admin.create_topic(topic, 1, config={"segment.bytes": MiB})
        with Producer(broker=shared_broker.url, linger_ms=0) as producer:
            for n in range(200):
                producer.send(topic, b"%04d" % n + b"." * 32_000).get(30)
        before = admin.describe_topic(topic).partition_info[0]
        assert before.start_offset == 0 and before.size_bytes > 6 * MiB
        # When retention.bytes is lowered to 2 MiB
        info = admin.alter_topic(topic, {"retention.bytes": 2 * MiB})
        assert info.config["retention.bytes"] == str(2 * MiB)
        # Then within a retention check the old segments are gone
        after = wait_until(lambda: _started_later(admin, topic), timeout_s=30)
        assert 2 * MiB <= after.size_bytes < 2 * MiB + MiB + 33_000
        assert after.end_offset == 200
    # And a consumer asking for offset 0 is reset to the new start
    with Consumer(broker=shared_broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=3_000) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek(topic, 0, 0)
        first = next(iter(consumer))
    assert first.offset == after.start_offset
    assert first.value.startswith(b"%04d" % after.start_offset)


def _started_later(admin, topic):
    info = admin.describe_topic(topic).partition_info[0]
    return info if info.start_offset > 0 else None
