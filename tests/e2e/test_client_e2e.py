"""End to end through the Python client: a real ``plinth serve`` (real Ray, ZeroMQ, disk)."""

from __future__ import annotations

import random
import time

import pytest
import zmq

from plinth import Admin, Consumer, Producer, protocol
from plinth.client.consumer import TopicPartition
from plinth.client.partitioner import partition_for_key
from plinth.errors import (InvalidConfigError, InvalidPartitionsError, InvalidTopicError,
                           OffsetOutOfRangeError, PartitionOutOfRangeError, RecordTooLargeError,
                           TopicExistsError, UnknownTopicError)
from plinth import limits
from tests.support import unique_topic


@pytest.fixture
def admin(shared_broker):
    with Admin(broker=shared_broker.url, request_timeout_ms=60_000) as a:
        yield a


def consume_all(url, topic, expected, **kw):
    with Consumer(topic, broker=url, auto_offset_reset="earliest", consumer_timeout_ms=10_000, **kw) as c:
        out = []
        for record in c:
            out.append(record)
            if len(out) == expected:
                break
        return out


def test_records_come_back_with_key_value_headers_timestamp_and_offset(shared_broker, admin):
    # Given a topic with 3 partitions
    topic = unique_topic()
    admin.create_topic(topic, 3)
    # When 300 keyed records with headers are produced
    with Producer(broker=shared_broker.url, linger_ms=2) as producer:
        futures = [producer.send(topic, b"value-%d" % i, key=b"key-%d" % (i % 7),
                                 headers=[("h", b"%d" % i)], timestamp_ms=1_000 + i)
                   for i in range(300)]
        metas = [f.get(timeout=30) for f in futures]
    # Then each key went to Kafka's partition for it, and offsets count up per partition
    for i, meta in enumerate(metas):
        assert meta.partition == partition_for_key(b"key-%d" % (i % 7), 3)
    per_partition = {}
    for meta in metas:
        per_partition.setdefault(meta.partition, []).append(meta.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in per_partition.values())
    # And a consumer from the beginning reads every record back as sent
    records = consume_all(shared_broker.url, topic, 300)
    by_value = {r.value: r for r in records}
    assert len(by_value) == 300
    for i, meta in enumerate(metas):
        r = by_value[b"value-%d" % i]
        assert (r.key, r.headers, r.timestamp_ms) == (b"key-%d" % (i % 7), [("h", b"%d" % i)], 1_000 + i)
        assert (r.topic, r.partition, r.offset) == (topic, meta.partition, meta.offset)


def test_a_consumer_at_the_log_end_receives_a_record_produced_later(shared_broker, admin):
    topic = unique_topic()
    admin.create_topic(topic, 1)
    with Consumer(topic, broker=shared_broker.url, auto_offset_reset="latest",
                  fetch_max_wait_ms=5_000) as consumer:
        assert consumer.poll(timeout_ms=200) == {}
        with Producer(broker=shared_broker.url) as producer:
            producer.send(topic, b"late").get(timeout=30)
        got = consumer.poll(timeout_ms=10_000)
    assert [r.value for rs in got.values() for r in rs] == [b"late"]


def test_seek_and_assign_read_one_partition_from_any_offset(shared_broker, admin):
    topic = unique_topic()
    admin.create_topic(topic, 2)
    with Producer(broker=shared_broker.url) as producer:
        for i in range(20):
            producer.send(topic, b"%d" % i, partition=1)
    with Consumer(broker=shared_broker.url, consumer_timeout_ms=5_000) as consumer:
        consumer.assign([(topic, 1)])
        consumer.seek(topic, 1, 15)
        values = [r.value for _, r in zip(range(5), consumer)]
    assert values == [b"15", b"16", b"17", b"18", b"19"]


def test_records_without_a_key_stick_to_one_partition_per_batch(shared_broker, admin):
    topic = unique_topic()
    admin.create_topic(topic, 4)
    with Producer(broker=shared_broker.url, linger_ms=50) as producer:
        metas = [f.get(30) for f in [producer.send(topic, b"x") for _ in range(10)]]
    assert len({m.partition for m in metas}) == 1


def test_acks_zero_sends_without_waiting_and_the_records_arrive(shared_broker, admin):
    topic = unique_topic()
    admin.create_topic(topic, 1)
    with Producer(broker=shared_broker.url, acks=0) as producer:
        futures = [producer.send(topic, b"%d" % i) for i in range(100)]
        producer.flush()
    assert {f.get(1).offset for f in futures} == {-1}
    assert len(consume_all(shared_broker.url, topic, 100)) == 100


def test_admin_lists_describes_and_deletes_topics(shared_broker, admin):
    topic = unique_topic()
    info = admin.create_topic(topic, 3, config={"segment.bytes": 1048576})
    assert (info.partitions, info.config["segment.bytes"]) == (3, "1048576")
    assert topic in admin.list_topics()
    with Producer(broker=shared_broker.url) as producer:
        producer.send(topic, b"x" * 100, partition=2).get(30)
    described = admin.describe_topic(topic)
    assert [p.partition for p in described.partition_info] == [0, 1, 2]
    assert [p.end_offset for p in described.partition_info] == [0, 0, 1]
    assert described.partition_info[2].size_bytes > 100
    assert all(p.shard.startswith("shard-") for p in described.partition_info)
    admin.delete_topic(topic)
    assert topic not in admin.list_topics()
    with pytest.raises(UnknownTopicError, match=topic):
        admin.describe_topic(topic)


def test_user_errors_get_clear_typed_errors(shared_broker, admin):
    topic = unique_topic()
    admin.create_topic(topic, 2)
    with pytest.raises(TopicExistsError, match=topic):
        admin.create_topic(topic, 2)
    with pytest.raises(InvalidTopicError, match="only ASCII"):
        admin.create_topic("bad/name", 1)
    with pytest.raises(InvalidPartitionsError, match=str(limits.PARTITIONS_PER_TOPIC_MAX)):
        admin.create_topic(unique_topic(), limits.PARTITIONS_PER_TOPIC_MAX + 1)
    with pytest.raises(InvalidConfigError, match="segment.bytes"):
        admin.create_topic(unique_topic(), 1, config={"segment.bytes": "1"})
    with pytest.raises(UnknownTopicError, match="no-such-topic"):
        admin.partition_count("no-such-topic")
    with Producer(broker=shared_broker.url) as producer:
        with pytest.raises(PartitionOutOfRangeError, match="0 to 1"):
            producer.send(topic, b"x", partition=2)
        with pytest.raises(RecordTooLargeError, match=str(limits.BATCH_BYTES_MAX)):
            producer.send(topic, b"x" * limits.BATCH_BYTES_MAX)
    with Consumer(broker=shared_broker.url, auto_offset_reset="none") as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek(topic, 0, 42)
        with pytest.raises(OffsetOutOfRangeError, match="0 to 0"):
            consumer.poll(timeout_ms=5_000)


def raw_request(url: str, frames: list[bytes], timeout_ms: int = 10_000):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    try:
        sock.send_multipart(frames)
        if not sock.poll(timeout_ms):
            return None
        frames = sock.recv_multipart()
        return protocol.decode_reply(frames[0]), frames[1:]
    finally:
        sock.close()


def test_the_router_answers_garbage_with_an_error_and_keeps_serving(shared_broker, admin):
    topic = unique_topic()
    admin.create_topic(topic, 1)
    rng = random.Random(3)
    header = protocol.encode_produce(9, topic, 0, 1)
    cases = [[b""], [bytes(rng.randrange(256) for _ in range(40))], [header[:-8]],
             [header], [header, b"garbage batch"],
             [protocol.encode_produce(9, topic, 5, 1), b"x"],
             [protocol.encode_fetch(9, "missing-topic", 0, 0, 100, 0)]]
    for frames in cases:
        got = raw_request(shared_broker.url, frames)
        assert got is not None, f"no reply to {frames!r}"
        assert got[0].error is not None, frames
    too_big = raw_request(shared_broker.url, [header, b"x" * (limits.BATCH_BYTES_MAX + 1)])
    assert isinstance(too_big[0].error, RecordTooLargeError)
    assert str(limits.BATCH_BYTES_MAX) in str(too_big[0].error)
    with Producer(broker=shared_broker.url) as producer:
        assert producer.send(topic, b"ok").get(30).offset == 0


def test_topics_and_records_survive_a_clean_restart(broker_factory):
    broker = broker_factory(shards=2)
    topic = unique_topic()
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 4)
    with Producer(broker=broker.url) as producer:
        for i in range(100):
            producer.send(topic, b"%d" % i, key=b"%d" % i)
    assert broker.stop() == 0
    broker.restart()
    records = consume_all(broker.url, topic, 100)
    assert sorted(int(r.value) for r in records) == list(range(100))


def test_a_client_with_too_many_requests_in_flight_gets_too_many_requests(shared_broker, admin):
    # Given a client that sends more long-polling fetches than the router lets one client have
    topic = unique_topic()
    admin.create_topic(topic, 1)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(shared_broker.url)
    try:
        extra = 5
        for i in range(limits.CLIENT_REQUESTS_IN_FLIGHT_MAX + extra):
            sock.send_multipart([protocol.encode_fetch(i, topic, 0, 0, 1000, 10_000)])
        # Then exactly the extra ones are refused at once, naming the limit
        refused = []
        while len(refused) < extra and sock.poll(5_000):
            reply = protocol.decode_reply(sock.recv_multipart()[0])
            refused.append(reply)
        assert len(refused) == extra
        assert all(type(r.error).__name__ == "TooManyRequestsError" for r in refused)
        assert str(limits.CLIENT_REQUESTS_IN_FLIGHT_MAX) in str(refused[0].error)
    finally:
        sock.close()


def test_code_written_with_kafka_pythons_option_names_produces_and_consumes_in_a_group(
        shared_broker):
    # Given code written for kafka-python: a list of host:port and a group_id
    bootstrap = [shared_broker.url.removeprefix("tcp://")]
    topic, group = unique_topic(), unique_topic("ported")
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topic(topic, 1)
    with Producer(bootstrap_servers=bootstrap) as producer:
        producer.send(topic, b"ported").get(timeout=30)
    # When a consumer in that group reads and commits
    with Consumer(topic, bootstrap_servers=bootstrap, group_id=group,
                  auto_offset_reset="earliest", enable_auto_commit=False,
                  consumer_timeout_ms=30_000) as consumer:
        record = next(iter(consumer))
        consumer.commit()
    # Then it read the record, and the broker holds the group's offset past it
    assert record.value == b"ported"
    with Admin(bootstrap_servers=bootstrap) as admin:
        assert [(t, p, committed) for t, p, committed, *_ in admin.group_lag(group)] \
            == [(topic, 0, 1)]


def test_a_consumer_given_two_different_group_names_is_refused_naming_both():
    with pytest.raises(ValueError, match="group='a' and group_id='b' both name the consumer "
                                         "group; give one"):
        Consumer("t", broker="tcp://127.0.0.1:1", group="a", group_id="b")


def polled(consumer: Consumer, count: int, timeout_s: float = 30) -> list:
    """Records polled until ``count`` came or ``timeout_s`` passed."""
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        records += [r for rs in consumer.poll(timeout_ms=200).values() for r in rs]
    return records


def test_a_paused_partition_hands_out_nothing_until_resumed_then_reads_on_from_its_position(
        shared_broker, admin):
    # Given 10 records in each of two partitions, and a consumer of both from the start
    topic = unique_topic()
    admin.create_topic(topic, 2)
    with Producer(broker=shared_broker.url) as producer:
        for i in range(20):
            producer.send(topic, b"%d" % i, partition=i % 2)
    with Consumer(topic, broker=shared_broker.url, auto_offset_reset="earliest") as consumer:
        # When partition 1 is paused before the first poll
        consumer.pause(TopicPartition(topic, 1))
        got = polled(consumer, 10)
        got += [r for rs in consumer.poll(timeout_ms=1_000).values() for r in rs]
        # Then only partition 0's records came, and partition 1's position did not move
        assert [r.value for r in got] == [b"%d" % i for i in range(0, 20, 2)]
        assert consumer.position(topic, 1) == 0
        # And once resumed, partition 1's records come, from its first
        consumer.resume(TopicPartition(topic, 1))
        assert [r.value for r in polled(consumer, 10)] == [b"%d" % i for i in range(1, 20, 2)]


def test_a_consumer_lists_the_topics_and_a_topics_partitions_as_kafka_pythons_does(
        shared_broker, admin):
    # Given a topic of 3 partitions
    topic = unique_topic()
    admin.create_topic(topic, 3)
    # When a consumer of it asks / Then it answers with sets, None for an unknown topic
    with Consumer(topic, broker=shared_broker.url) as consumer:
        assert consumer.subscription() == {topic}
        assert topic in consumer.topics()
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
        assert consumer.partitions_for_topic(unique_topic()) is None


def test_beginning_and_end_offsets_and_highwater_follow_the_log_as_kafka_pythons_do(
        shared_broker, admin):
    # Given a partition of 5 records whose first 2 were deleted, and an empty one
    topic = unique_topic()
    admin.create_topic(topic, 2)
    with Producer(broker=shared_broker.url) as producer:
        for i in range(5):
            producer.send(topic, b"%d" % i, partition=0).get(timeout=30)
    admin.delete_records({(topic, 0): 2})
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    with Consumer(broker=shared_broker.url, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, 0)])
        # When asked / Then each partition's first and end offsets come back by partition
        assert consumer.beginning_offsets(parts) == {parts[0]: 2, parts[1]: 0}
        assert consumer.end_offsets(parts) == {parts[0]: 5, parts[1]: 0}
        # And the high watermark is known once a fetch reply brought it
        assert consumer.highwater(parts[0]) is None
        assert [r.offset for r in polled(consumer, 3)] == [2, 3, 4]
        assert consumer.highwater(parts[0]) == 5
