"""Storage bounds through a real ``plinth serve`` and the official clients (issue 11,
findings 3 and 7): a record's timestamp outside its topic's window is refused and
cannot wedge the partition's readers; segment sizes a user could turn into a
weapon are refused when the topic is created."""

from __future__ import annotations

import time

import pytest

from plinth import Admin, Consumer, Producer
from plinth.errors import InvalidConfigError, InvalidTimestampError
from tests.support import unique_topic

HOUR_MS = 3_600_000


def read_values(url: str, topic: str, count: int) -> list[bytes]:
    """The first ``count`` values of partition 0 (and any more that arrive within 3 s)."""
    with Consumer(broker=url, auto_offset_reset="earliest", consumer_timeout_ms=3_000) as consumer:
        consumer.assign([(topic, 0)])
        values = []
        for record in consumer:
            values.append(record.value)
            if len(values) > count:
                break
    return values


def test_a_record_stamped_with_the_largest_int64_is_refused_and_the_records_after_it_read(
        shared_broker):
    # Given a topic with the default timestamp window (an hour ahead at most)
    topic = unique_topic("ts")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=shared_broker.url, linger_ms=0) as producer:
        producer.send(topic, b"before", partition=0).get(30)
        # When the official producer sends a record stamped 2**63 - 1 ms (issue 11: it
        # was stored, every consumer's poll then raised CorruptDataError at it forever,
        # and retention of its segment and every later one stopped)
        far = producer.send(topic, b"far", partition=0, timestamp_ms=2**63 - 1)
        # Then it is refused, naming the window's key
        with pytest.raises(InvalidTimestampError, match="message.timestamp.after.max.ms=3600000"):
            far.get(30)
        producer.send(topic, b"after", partition=0).get(30)
    # And a consumer reads every record around it
    assert read_values(shared_broker.url, topic, 2) == [b"before", b"after"]


def test_a_topic_window_refuses_records_older_than_its_before_max(shared_broker):
    # Given a topic that takes records at most an hour old
    topic = unique_topic("ts")
    with Admin(broker=shared_broker.url) as admin:
        info = admin.create_topic(topic, 1, config={"message.timestamp.before.max.ms": HOUR_MS})
        assert info.config["message.timestamp.before.max.ms"] == str(HOUR_MS)
    now_ms = time.time_ns() // 1_000_000
    with Producer(broker=shared_broker.url, linger_ms=0) as producer:
        # When a record two hours old is sent / Then it is refused; one a minute old is stored
        with pytest.raises(InvalidTimestampError, match="message.timestamp.before.max.ms=3600000"):
            producer.send(topic, b"old", partition=0, timestamp_ms=now_ms - 2 * HOUR_MS).get(30)
        assert producer.send(topic, b"recent", partition=0,
                             timestamp_ms=now_ms - 60_000).get(30).offset == 0


@pytest.mark.parametrize("config, bounds", [
    ({"segment.bytes": 4096}, "segment.bytes=4096 is outside 1048576.."),
    ({"segment.ms": 1}, "segment.ms=1 is outside 60000.."),
])
def test_segments_smaller_than_1_mib_or_a_minute_are_refused_at_creation(shared_broker, config,
                                                                          bounds):
    # Given a topic config that made one segment, so three files, per produce (issue 11)
    # When the topic is created / Then it is refused, naming the key and its bounds
    topic = unique_topic("seg")
    with Admin(broker=shared_broker.url) as admin:
        with pytest.raises(InvalidConfigError, match=bounds):
            admin.create_topic(topic, 1, config=config)
        assert topic not in admin.list_topics()
