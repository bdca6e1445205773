"""Specification of plinth.client.producer.Producer.send, against a scripted broker.

send() is C (plinth.client._producer.ProducerBase) for the common call and Python
(Producer._send) for the rest; these tests hold both to the same contract.
"""

import inspect
import struct
import time

import pytest

from plinth import protocol
from plinth.client.partitioner import partition_for_key
from plinth.client.producer import Producer
from plinth.format.record_batch import decode_records
from plinth.errors import ClosedError, PartitionOutOfRangeError

PARTITIONS = 4


class Broker:
    """Answers metadata with PARTITIONS partitions and acknowledges every produce,
    keeping the batches it got per partition."""

    def __init__(self, scripted):
        self.batches: dict[int, list] = {}
        self.scripted = scripted([self.answer] * 1000)
        self.url = self.scripted.url
        self._payloads = []

    def answer(self, view):
        if view.kind == "metadata":
            return [protocol.encode_topics_reply(
                view.request_id, [protocol.TopicInfo(t, PARTITIONS) for t in view.topics])]
        # The batch being acknowledged is the partition's last (one in flight at a time).
        batches = self.batches[view.partition]
        base = sum(len(records) for records in batches) - len(batches[-1])
        return [protocol.encode_produce_reply(view.request_id, base)]

    def records(self, partition):
        return [r for batch in self.batches.get(partition, []) for r in batch]


@pytest.fixture
def broker(scripted, monkeypatch):
    # The scripted broker sees only the request header; keep each batch's records
    # by decoding what the producer's connection sends.
    broker = Broker(scripted)
    from plinth.client import connection
    original = connection.Connection.send

    def send(conn, header, payload=None):
        if payload is not None:
            view = protocol.decode_request(header)
            broker.batches.setdefault(view.partition, []).append(
                decode_records(view.topic, view.partition, 0, payload))
        return original(conn, header, payload)

    monkeypatch.setattr(connection.Connection, "send", send)
    return broker


def test_send_keeps_its_public_signature():
    parameters = list(inspect.signature(Producer.send).parameters.values())[1:]   # after self
    keyword_only, positional = inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert [(p.name, p.kind, p.default) for p in parameters] == [
        ("topic", positional, inspect.Parameter.empty), ("value", positional, None),
        ("key", keyword_only, None), ("partition", keyword_only, None),
        ("headers", keyword_only, None), ("timestamp_ms", keyword_only, None)]


def test_every_way_of_calling_send_queues_the_record_it_describes(broker):
    # Given a producer, and a timestamp a minute ago
    stamp_ms = time.time_ns() // 1_000_000 - 60_000
    with Producer(broker=broker.url, linger_ms=1) as producer:
        # When records are sent in each form the API allows
        futures = [
            producer.send("t", b"positional", key=b"k", partition=0),
            producer.send("t", value=b"by keyword", partition=0, timestamp_ms=stamp_ms),
            producer.send("t", partition=0),
            producer.send("t", b"headers", partition=0, headers=[("h", b"1")]),
            producer.send("t", bytearray(b"bytearray"), key=memoryview(b"mv"), partition=0),
            producer.send(topic="t", value=b"topic by keyword", partition=0),
        ]
        metadata = [f.get(10) for f in futures]
    # Then each arrives as sent, at consecutive offsets of partition 0
    records = broker.records(0)
    assert [(r.key, r.value) for r in records] == [
        (b"k", b"positional"), (None, b"by keyword"), (None, None), (None, b"headers"),
        (b"mv", b"bytearray"), (None, b"topic by keyword")]
    assert records[1].timestamp_ms == stamp_ms and records[3].headers == [("h", b"1")]
    assert [(m.partition, m.offset) for m in metadata] == [(0, i) for i in range(6)]


def test_keyed_records_go_where_kafkas_partitioner_sends_them_with_or_without_serializers(
        broker):
    with Producer(broker=broker.url) as plain, \
            Producer(broker=broker.url, key_serializer=str.encode,
                     value_serializer=lambda v: struct.pack("<q", v)) as serializing:
        for i in range(40):
            key = "key-%d" % i
            expected = partition_for_key(key.encode(), PARTITIONS)
            assert plain.send("t", b"v", key=key.encode()).get(10).partition == expected
            assert serializing.send("t", i, key=key).get(10).partition == expected
    assert struct.pack("<q", 39) in {r.value for p in range(PARTITIONS)
                                     for r in broker.records(p)}


@pytest.mark.parametrize("call, error", [
    (lambda p: p.send("t", b"v", partition=PARTITIONS), PartitionOutOfRangeError),
    (lambda p: p.send("t", b"v", partition=-1), PartitionOutOfRangeError),
    (lambda p: p.send("t", "text"), TypeError),
    (lambda p: p.send("t", b"v", key=3), TypeError),
    (lambda p: p.send("t", b"v", colour="red"), TypeError),
    (lambda p: p.send("t", b"v", b"extra"), TypeError),
    (lambda p: p.send("t", b"v", value=b"twice"), TypeError),
    (lambda p: p.send(), TypeError),
])
def test_send_rejects_what_it_cannot_queue_with_the_right_error(broker, call, error):
    with Producer(broker=broker.url) as producer:
        producer.send("t", b"first", partition=0).get(10)   # an open batch: the fast path is live
        with pytest.raises(error):
            call(producer)


def test_send_after_close_raises_closed_error_on_the_fast_path_too(broker):
    producer = Producer(broker=broker.url, linger_ms=60_000)
    producer.send("t", b"open a batch", partition=0)
    producer.close()
    with pytest.raises(ClosedError):
        producer.send("t", b"late", partition=0)


def test_records_whose_timestamps_are_far_apart_are_all_delivered(broker):
    # Given records for one partition 50 days apart (more than a UInt32 of ms)
    now_ms = time.time_ns() // 1_000_000
    with Producer(broker=broker.url, linger_ms=50) as producer:
        futures = [producer.send("t", b"%d" % i, partition=0,
                                 timestamp_ms=now_ms - (i % 2) * 50 * 86_400_000)
                   for i in range(4)]
        # Then every one is acknowledged (the sender is not brought down by one batch)
        assert all(f.get(10).partition == 0 for f in futures)
