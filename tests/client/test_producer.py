"""Specification of plinth.client.producer.Producer.send, against an in-process broker.

send() is C (plinth.client._producer.ProducerBase) for the common call and Python
(Producer._send) for the rest; these tests hold both to the same contract. The
broker (tests/client/produce_broker.py) is a real ZeroMQ socket that stores
batches as a shard does.
"""

import inspect
import logging
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plinth import limits
from plinth.client.partitioner import partition_for_key
from plinth.client.producer import Producer
from plinth.errors import (ClosedError, InvalidTopicError, NotEnoughReplicasError, NotLeaderError,
                           PartitionOutOfRangeError, PlinthTimeoutError, StorageError,
                           UnknownTopicError)
from plinth.format import batch_formats
from tests.client import send_calls
from tests.client.produce_broker import DROP, ProduceBroker

PARTITIONS = 4
GET_TIMEOUT_S = 10


@pytest.fixture
def broker():
    broker = ProduceBroker({"t": PARTITIONS})
    yield broker
    broker.close()



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
    records = broker.records("t", 0)
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
                                     for r in broker.records("t", p)}


@pytest.mark.parametrize("options, message", [
    ({"value_serializer": lambda value: str(value)}, r"value_serializer returned str: it must "
                                                     r"return bytes \(or None\)"),
    ({"key_serializer": lambda key: 5}, r"key_serializer returned int: it must return bytes"),
])
def test_a_serializer_that_returns_no_bytes_is_named_not_asked_to_be_set(broker, options, message):
    # "value must be bytes or None (or set value_serializer)" said to set what was set
    with Producer(broker=broker.url, **options) as producer:
        with pytest.raises(TypeError, match=message):
            producer.send("t", {"a": 1}, key="k", partition=0)
        # And a send the serializers take is still stored
        assert producer.send("t", None, partition=0).get(GET_TIMEOUT_S).offset == 0


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


def test_a_negative_timestamp_is_refused_at_send_and_the_records_batched_with_it_are_delivered(
        broker):
    # Given a producer with an open batch for partition 0
    with Producer(broker=broker.url, linger_ms=50) as producer:
        first = producer.send("t", b"first", partition=0)
        # When a record stamped -1 ms is sent to the same partition (a negative timestamp
        # breaks a rule of the batch since issue 11; accepted here, it failed its batch)
        with pytest.raises(ValueError, match="timestamp_ms -1 is negative"):
            producer.send("t", b"bad", partition=0, timestamp_ms=-1)
        last = producer.send("t", b"last", partition=0)
        # Then it leaves no trace: the records around it are stored one after the other
        assert last.get(10).offset == first.get(10).offset + 1


def test_records_whose_timestamps_are_far_apart_are_all_delivered(broker):
    # Given records for one partition 50 days apart (more than a UInt32 of ms)
    now_ms = time.time_ns() // 1_000_000
    with Producer(broker=broker.url, linger_ms=50) as producer:
        futures = [producer.send("t", b"%d" % i, partition=0,
                                 timestamp_ms=now_ms - (i % 2) * 50 * 86_400_000)
                   for i in range(4)]
        # Then every one is acknowledged (the sender is not brought down by one batch)
        assert all(f.get(10).partition == 0 for f in futures)


def test_a_header_that_is_not_bytes_is_refused_and_every_pending_record_is_still_delivered(
        broker):
    # Given a producer with records waiting in open batches on every partition
    # (issue 10: a refused header left an empty batch open, which killed the sender
    # thread at the next flush and failed these futures, though they were stored)
    with Producer(broker=broker.url, linger_ms=60_000) as producer:
        pending = [producer.send("t", b"%d" % p, partition=p) for p in range(PARTITIONS)]
        # When a send with a str header value is refused
        with pytest.raises(TypeError, match=r"\(str, str\)"):
            producer.send("t", b"bad", partition=0, headers=[("h", "text")])
        # Then every pending record is delivered where it was stored, and the
        # producer goes on taking records
        producer.flush(GET_TIMEOUT_S)
        assert [f.get(0).offset for f in pending] == [0] * PARTITIONS
        after = producer.send("t", b"after", partition=0)
        producer.flush(GET_TIMEOUT_S)
        assert after.get(0).offset == 1
    assert [r.value for r in broker.records("t", 0)] == [b"0", b"after"]


TOPICS = {"t": PARTITIONS, "single": 1}


def test_flush_after_close_raises_closed_error_and_writes_to_no_file_that_reused_a_freed_fd(
        broker, tmp_path):
    # Given a closed producer, whose wake-up pipe's fd numbers files opened since took
    producer = Producer(broker=broker.url, linger_ms=0)
    producer.send("t", b"x", partition=0).get(GET_TIMEOUT_S)
    producer.close()
    files = [open(tmp_path / f"victim{i}.txt", "w") for i in range(8)]
    try:
        # When it is flushed / Then ClosedError, and no file got a byte
        with pytest.raises(ClosedError, match="producer is closed"):
            producer.flush(timeout=1)
    finally:
        for f in files:
            f.close()
    assert [(tmp_path / f"victim{i}.txt").stat().st_size for i in range(8)] == [0] * 8


def test_close_with_a_timeout_takes_at_most_that_timeout_in_all_and_fails_what_is_pending(
        broker):
    # Given a producer with a record whose request the broker never answers
    producer = Producer(broker=broker.url, linger_ms=0)
    producer.send("t", b"x", partition=0).get(GET_TIMEOUT_S)   # the topic is known
    broker.hold()
    try:
        future = producer.send("t", b"pending", partition=0)
        # When it is closed with a timeout of 1 s
        started_s = time.monotonic()
        producer.close(timeout=1)
        took_s = time.monotonic() - started_s
    finally:
        broker.release()
    # Then the flush and the sender's end took 1 s together (it was 1 s each), and
    # the record failed
    assert 1.0 <= took_s < 1.6
    with pytest.raises(ClosedError):
        future.get(0)


def test_close_with_a_timeout_says_a_record_in_flight_may_be_stored_and_one_never_sent_was_not(
        broker):
    # Given a producer with one request in flight at most, whose request for
    # partition 0 the broker holds, and a record for partition 1 waiting behind it
    producer = Producer(broker=broker.url, linger_ms=0, max_in_flight_requests_per_connection=1)
    producer.send("t", b"x", partition=0).get(GET_TIMEOUT_S)   # the topic is known
    broker.hold()
    try:
        in_flight = producer.send("t", b"in flight", partition=0)
        wait_until_true(lambda: len(broker.produces()) == 2)
        never_sent = producer.send("t", b"never sent", partition=1)
        # When it is closed with a timeout, and the broker then answers
        producer.close(timeout=0.3)
    finally:
        broker.release()
    # Then the record in flight, which the broker went on to store, fails saying it
    # may have been stored; the one that never left says it was not sent
    wait_until_true(lambda: [r.value for r in broker.records("t", 0)] == [b"x", b"in flight"])
    with pytest.raises(ClosedError, match="before the record was acknowledged; it was sent, "
                                          "so it may have been stored"):
        in_flight.get(0)
    with pytest.raises(ClosedError, match="before the record was sent"):
        never_sent.get(0)
    assert broker.records("t", 1) == []


@pytest.mark.parametrize("kwargs", [{"partition": True}, {"partition": 0, "timestamp_ms": True}])
def test_a_bool_is_refused_where_send_takes_an_int(broker, kwargs):
    with Producer(broker=broker.url, linger_ms=0) as producer:
        with pytest.raises(TypeError, match="must be an int or None, got bool"):
            producer.send("t", b"x", **kwargs)
    assert broker.record_count() == 0


def test_a_send_to_a_topic_not_yet_known_waits_for_its_metadata_at_most_max_block_ms(scripted):
    # Given a broker that never answers, and a request timeout far longer than max_block_ms
    broker = scripted([])
    with Producer(broker=broker.url, max_block_ms=300, request_timeout_ms=10_000) as producer:
        started_s = time.monotonic()
        # When a record is sent to a topic the producer has not seen / Then send() gives
        # up after max_block_ms, not request_timeout_ms
        with pytest.raises(PlinthTimeoutError, match="within 300 ms"):
            producer.send("new", b"x")
        assert time.monotonic() - started_s < 2.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=send_calls.calls(TOPICS),
       options=st.fixed_dictionaries({"linger_ms": st.sampled_from([0, 20, 60_000]),
                                      "batch_bytes_max": st.sampled_from([200, 1 << 20])}))
def test_no_bad_call_leaves_a_trace_and_every_good_send_resolves_to_where_it_is_stored(
        steps, options):
    # Given a producer, and good sends interleaved with every kind of bad call,
    # flushes, and perhaps a close followed by more calls
    broker = ProduceBroker(TOPICS)
    try:
        producer = Producer(broker=broker.url, **options)
        # When the calls are made (each bad one raising what it should)
        try:
            sent = send_calls.run(producer, steps)
        finally:
            producer.close(GET_TIMEOUT_S)
        # Then every good send resolved to the offset where its record is stored,
        # and nothing else was stored
        stored = {(topic, p): broker.records(topic, p)
                  for topic, count in TOPICS.items() for p in range(count)}
        send_calls.check_stored(sent, lambda topic, p, offset: stored[(topic, p)][offset],
                                broker.record_count(), TOPICS, GET_TIMEOUT_S)
    finally:
        broker.close()


# --- acks ---------------------------------------------------------------------------

@pytest.mark.parametrize("options, wire", [({}, -1), ({"acks": "all"}, -1), ({"acks": -1}, -1),
                                           ({"acks": 1}, 1), ({"acks": 0}, 1)])
def test_acks_all_is_the_default_and_each_choice_reaches_the_wire(broker, options, wire):
    # Given a producer with Kafka's acks option (or none: "all", as in Kafka 3.0+); acks=0
    # goes as acks=1, so that the shard answers it and the sender's window holds it
    # until then (client/sender.py)
    with Producer(broker=broker.url, linger_ms=0, **options) as producer:
        # When it sends a record
        producer.send("t", b"v", partition=0)
        producer.flush()
    # Then its produce request carries the wire's acks
    wait_until_true(lambda: broker.produces())
    assert {arrival.request.acks for arrival in broker.produces()} == {wire}


def test_an_acks_0_flush_waits_until_the_shard_has_answered_every_request_sent(broker):
    # Given an acks=0 producer, and a broker that holds its answers
    with Producer(broker=broker.url, acks=0, linger_ms=0) as producer:
        broker.hold()
        # When records are sent: their futures complete at once, with offset -1
        futures = [producer.send("t", b"%d" % i, partition=i % PARTITIONS) for i in range(8)]
        assert {f.get(GET_TIMEOUT_S).offset for f in futures} == {-1}
        # Then a flush does not return while the shard has not answered them
        with pytest.raises(PlinthTimeoutError, match="acks=0 requests sent still await"):
            producer.flush(0.3)
        # And when the broker answers, the flush returns, every record stored
        broker.release()
        producer.flush(GET_TIMEOUT_S)
        assert broker.record_count() == 8


@pytest.mark.parametrize("acks", [2, -2, "ALL", "1", "one", None, True, 1.0])
def test_an_acks_that_is_not_a_choice_is_refused_naming_the_value_and_the_choices(broker, acks):
    with pytest.raises(ValueError, match=rf"acks={acks!r} is not one of the choices: 0, 1, "
                                         rf"'all' \(or -1"):
        Producer(broker=broker.url, acks=acks)


# --- Idempotence against acks (Kafka's rule) -------------------------------------------

def producer_ids(broker) -> set[tuple[int, int]]:
    """(producer id, base sequence) of each produce request's batch; (-1, -1) when the
    producer was not idempotent."""
    summaries = [batch_formats.summarize(a.request.batch_format, a.payload)
                 for a in broker.produces()]
    return {(summary.producer_id, summary.base_sequence) for summary in summaries}


@pytest.mark.parametrize("acks", [0, 1])
def test_an_explicit_idempotence_with_acks_0_or_1_is_refused_naming_both_options(broker, acks):
    # Given Kafka's rule: idempotence needs acks="all"
    # When a producer is asked for both idempotence and acks 0 or 1
    with pytest.raises(ValueError, match=rf"enable_idempotence=True needs acks='all' \(got "
                                         rf"acks={acks}\).*pass acks='all', or "
                                         rf"enable_idempotence=False"):
        Producer(broker=broker.url, acks=acks, enable_idempotence=True)
    # Then it is refused before it asked the broker anything
    assert broker.arrivals == []


def test_acks_1_without_an_explicit_idempotence_sends_without_a_producer_id(broker):
    # Given an acks=1 producer that leaves enable_idempotence unset
    with Producer(broker=broker.url, acks=1, linger_ms=0) as producer:
        # When it sends a record
        producer.send("t", b"v", partition=0).get(GET_TIMEOUT_S)
    # Then its batch carries no producer id and no sequence: idempotence is off
    assert producer_ids(broker) == {(-1, -1)}


@pytest.mark.parametrize("acks, enable_idempotence", [(1, None), (1, False), ("all", False)])
def test_a_producer_without_idempotence_retries_a_batch_refused_with_not_leader_and_delivers_it(
        broker, acks, enable_idempotence):
    # Given a partition that refuses one produce for a passing reason
    broker.faults.append(NotLeaderError("t-0: this shard no longer leads it"))
    with Producer(broker=broker.url, acks=acks, enable_idempotence=enable_idempotence,
                  linger_ms=0, retry_backoff_ms=10) as producer:
        # When a producer without idempotence sends a record
        # Then it is retried, as Kafka's producer retries without idempotence, and stored
        assert producer.send("t", b"kept", partition=0).get(GET_TIMEOUT_S).offset == 0
    assert len(broker.produces()) == 2 and producer_ids(broker) == {(-1, -1)}
    assert [r.value for r in broker.records("t", 0)] == [b"kept"]


def test_too_few_in_sync_replicas_is_retried_until_the_batch_is_stored_once(broker):
    # Given a partition whose in-sync set is below min.insync.replicas for three attempts
    broker.faults.extend([NotEnoughReplicasError(
        "t-0: in-sync replicas [shard-0] are fewer than min.insync.replicas=2")] * 3)
    with Producer(broker=broker.url, linger_ms=0, retry_backoff_ms=10) as producer:
        # When an acks="all" record is sent / Then it is acknowledged, stored once
        assert producer.send("t", b"kept", partition=0).get(GET_TIMEOUT_S).offset == 0
    assert len(broker.produces()) == 4 and [r.value for r in broker.records("t", 0)] == [b"kept"]


def test_too_few_in_sync_replicas_past_the_delivery_timeout_fails_the_batch_naming_the_cause(broker):
    # Given a partition that stays below min.insync.replicas
    broker.faults.extend([NotEnoughReplicasError("t-0: in-sync [shard-0], minimum 2")] * 10_000)
    with Producer(broker=broker.url, linger_ms=0, retry_backoff_ms=10, retry_backoff_max_ms=50,
                  request_timeout_ms=200, delivery_timeout_ms=600) as producer:
        # When a record is sent / Then it fails after delivery_timeout_ms, saying why
        with pytest.raises(PlinthTimeoutError, match="delivery_timeout_ms=600.*in-sync "
                                                     r"\[shard-0\], minimum 2"):
            producer.send("t", b"lost", partition=0).get(GET_TIMEOUT_S)
    assert len(broker.produces()) > 2 and broker.record_count() == 0


@pytest.mark.parametrize("enable_idempotence", [True, False])
def test_a_batch_a_full_disk_refused_is_retried_and_stored_once_the_disk_has_room(
        broker, enable_idempotence):
    # Given a shard whose disk reserve refuses two produces, then has room again
    broker.faults.extend([StorageError(
        "/data/shards/shard-0's file system has 1048576 bytes free: a batch of 87 bytes "
        "would leave less than the 16777216 bytes the shard keeps free")] * 2)
    with Producer(broker=broker.url, linger_ms=0, retry_backoff_ms=10,
                  enable_idempotence=enable_idempotence) as producer:
        # When a record is sent / Then it is retried, as Kafka retries KAFKA_STORAGE_ERROR,
        # and stored once
        assert producer.send("t", b"kept", partition=0).get(GET_TIMEOUT_S).offset == 0
    assert len(broker.produces()) == 3 and [r.value for r in broker.records("t", 0)] == [b"kept"]


def test_a_disk_that_stays_full_past_the_delivery_timeout_fails_the_batch_naming_the_disk(broker):
    broker.faults.extend([StorageError("/data/shards/shard-0's file system has 1048576 bytes "
                                       "free")] * 10_000)
    with Producer(broker=broker.url, linger_ms=0, retry_backoff_ms=10, retry_backoff_max_ms=50,
                  request_timeout_ms=200, delivery_timeout_ms=600) as producer:
        with pytest.raises(PlinthTimeoutError, match="delivery_timeout_ms=600.*last error: "
                                                     "/data/shards/shard-0's file system has "
                                                     "1048576 bytes free"):
            producer.send("t", b"lost", partition=0).get(GET_TIMEOUT_S)
    assert len(broker.produces()) > 2 and broker.record_count() == 0


def wait_until_true(condition, timeout_s: float = GET_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize("compression_type", ["brotli", "GZIP", "", 1])
def test_a_compression_type_that_is_not_a_choice_is_refused_naming_it_and_the_choices(
        broker, compression_type):
    with pytest.raises(ValueError, match=rf"compression_type={compression_type!r} is not one "
                                         rf"of the choices: 'gzip', 'snappy', 'lz4', 'zstd'"):
        Producer(broker=broker.url, compression_type=compression_type)
    assert broker.arrivals == []   # refused before it asked the broker anything


@pytest.mark.parametrize("compression_type", ["gzip", "snappy", "lz4", "zstd", None])
def test_records_with_keys_headers_and_times_round_trip_with_every_compression_type(
        broker, compression_type):
    # Given a producer with the compression type
    with Producer(broker=broker.url, linger_ms=20, compression_type=compression_type) as producer:
        # When records with keys, headers and timestamps are sent through every send path
        futures = [producer.send("t", b"v%d" % i, key=b"k%d" % i, partition=0,
                                 headers=[("h", b"%d" % i)] if i % 2 else None,
                                 timestamp_ms=1_700_000_000_000 + i) for i in range(50)]
        producer.flush()
    assert [f.get(GET_TIMEOUT_S).offset for f in futures] == list(range(50))
    # Then the broker stored them exactly, in the format the type says
    records = broker.records("t", 0)
    assert [(r.key, r.value, r.timestamp_ms, list(r.headers)) for r in records] == [
        (b"k%d" % i, b"v%d" % i, 1_700_000_000_000 + i, [("h", b"%d" % i)] if i % 2 else [])
        for i in range(50)]
    assert {a.request.batch_format for a in broker.produces()} == {0 if compression_type is None
                                                                   else 2}


# --- Options checked in the constructor (Producer's and AIOProducer's alike) ----------

BAD_OPTIONS = [
    ({"max_in_flight_requests_per_connection": 0}, ValueError,
     r"max_in_flight_requests_per_connection=0 is outside 1\.\.32"),
    ({"linger_ms": float("nan")}, ValueError, r"linger_ms=nan is outside 0\.\."),
    ({"linger_ms": float("inf")}, ValueError, r"linger_ms=inf is outside 0\.\."),
    ({"linger_ms": "5"}, TypeError, r"linger_ms must be a number of ms in 0\.\."),
    ({"linger_ms": 5_000, "delivery_timeout_ms": 6_000, "request_timeout_ms": 2_000}, ValueError,
     r"delivery_timeout_ms=6000 must be at least linger_ms=5000 \+ request_timeout_ms=2000"),
    ({"request_timeout_ms": 0}, ValueError, r"request_timeout_ms=0 is outside 1\.\."),
    ({"request_timeout_ms": -1}, ValueError, r"request_timeout_ms=-1 is outside 1\.\."),
    ({"max_block_ms": -1}, ValueError, r"max_block_ms=-1 is outside 0\.\."),
    ({"retry_backoff_ms": -1}, ValueError, r"retry_backoff_ms=-1 is outside 0\.\."),
    ({"retry_backoff_max_ms": -1}, ValueError, r"retry_backoff_max_ms=-1 is outside 0\.\."),
    ({"metadata_max_age_ms": -1}, ValueError, r"metadata_max_age_ms=-1 is outside 0\.\."),
    ({"delivery_timeout_ms": 2**40}, ValueError, r"delivery_timeout_ms=1099511627776 is outside"),
    ({"buffer_memory": 0}, ValueError, r"buffer_memory=0 is outside 1\.\."),
    ({"buffer_memory": 1.5}, TypeError, r"buffer_memory must be an int"),
    ({"batch_bytes_max": "1"}, TypeError, r"batch_bytes_max must be an int"),
    ({"enable_idempotence": "false"}, TypeError,
     r"enable_idempotence must be True, False or None .*got 'false' \(str\)"),
    # a str was taken as True ("false" too)
    ({"direct_to_shards": "false"}, TypeError,
     r"direct_to_shards must be True or False, got 'false' \(str\)"),
    # a serializer that is not callable failed at the first send: "'str' object is not callable"
    ({"key_serializer": "json"}, TypeError,
     r"key_serializer must be a callable turning a key into bytes, or None, got 'json' \(str\)"),
    ({"value_serializer": 5}, TypeError,
     r"value_serializer must be a callable turning a value into bytes, or None, got 5 \(int\)"),
]


@pytest.mark.parametrize("options, error, message", BAD_OPTIONS)
def test_an_option_out_of_range_is_refused_in_the_constructor_naming_it_and_its_range(
        options, error, message):
    with pytest.raises(error, match=message):
        Producer(broker="tcp://127.0.0.1:1", **options)


def key_of_partition(partition: int, partition_count: int) -> bytes:
    """A key Kafka's partitioner places on ``partition`` of ``partition_count``."""
    return next(key for key in (b"key-%d" % i for i in range(1000))
                if partition_for_key(key, partition_count) == partition)


def metadata_asked(broker, topic: str) -> int:
    return sum(1 for a in list(broker.arrivals)
               if a.request.kind == "metadata" and topic in a.request.topics)


def test_a_topic_re_created_with_fewer_partitions_takes_every_record_sent_after_one_was_refused(
        broker):
    # Given a producer that learnt that "t" has 4 partitions
    with Producer(broker=broker.url, linger_ms=0) as producer:
        producer.send("t", b"first", partition=3).get(GET_TIMEOUT_S)
        # When the topic is re-created with 1 partition
        broker.topics["t"] = 1
        # Then a record the partitioner placed on a partition that is gone fails with the
        # broker's error, and is not placed again
        with pytest.raises(PartitionOutOfRangeError, match=r"t\[3\] does not exist"):
            producer.send("t", b"gone", key=key_of_partition(3, 4)).get(GET_TIMEOUT_S)
        asked_before = metadata_asked(broker, "t")
        # And every record sent after it, keyed or not, from several threads at once, is
        # stored in partition 0, the count asked once
        start = threading.Barrier(8)
        stored = []

        def send_some(thread: int) -> None:
            start.wait(GET_TIMEOUT_S)
            stored.extend(producer.send("t", b"%d" % i, key=key if i % 2 else None)
                          .get(GET_TIMEOUT_S).partition
                          for i, key in enumerate(b"t%d-%d" % (thread, n) for n in range(10)))

        threads = [threading.Thread(target=send_some, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GET_TIMEOUT_S)
        assert stored == [0] * 80
        assert metadata_asked(broker, "t") == asked_before + 1
    assert [r.value for r in broker.records("t", 3)] == [b"first"]


def test_a_send_to_a_partition_a_grown_topic_gained_asks_the_count_again_and_is_stored(
        broker):
    # Given a producer that learnt that "t" has 4 partitions
    with Producer(broker=broker.url) as producer:
        producer.send("t", b"a", partition=0).get(GET_TIMEOUT_S)
        # When the topic grows to 6 and a record is sent to partition 5
        broker.topics["t"] = 6
        # Then it is stored there, as Kafka's send waits for metadata that has it
        assert producer.send("t", b"b", partition=5).get(GET_TIMEOUT_S).partition == 5
        # And a partition the topic does not have is still refused, naming the count
        with pytest.raises(PartitionOutOfRangeError, match="it has 6 partitions"):
            producer.send("t", b"c", partition=6)


def test_sends_to_a_partition_beyond_the_count_ask_it_again_once_not_at_every_send(broker):
    # Given a producer that has just learnt that "t" has 4 partitions
    with Producer(broker=broker.url) as producer:
        producer.send("t", b"a", partition=0).get(GET_TIMEOUT_S)
        asked = metadata_asked(broker, "t")
        # When records are sent to partition 4, again and again
        for _ in range(20):
            with pytest.raises(PartitionOutOfRangeError, match="it has 4 partitions"):
                producer.send("t", b"b", partition=4)
        # Then the count was asked again at the first, and then at most once per
        # PRODUCER_METADATA_REFRESH_MS_MIN (a second time only if the loop took that long)
        assert asked + 1 <= metadata_asked(broker, "t") <= asked + 2


def test_a_grown_topic_gets_keyed_records_in_its_new_partitions_once_metadata_max_age_ms_passed(
        broker, monkeypatch):
    # Given a producer whose counts are due at once (metadata_max_age_ms=0)
    monkeypatch.setattr(limits, "PRODUCER_METADATA_REFRESH_MS_MIN", 0)
    with Producer(broker=broker.url, linger_ms=0, metadata_max_age_ms=0) as producer:
        producer.send("t", b"a", partition=0).get(GET_TIMEOUT_S)
        # When the topic grows to 8
        broker.topics["t"] = 8
        # Then a key placed on a new partition by 8 goes there
        key = key_of_partition(7, 8)
        assert producer.send("t", b"b", key=key).get(GET_TIMEOUT_S).partition == 7


def test_a_wait_that_is_not_seconds_is_refused_by_get_flush_and_close_before_anything_ends(broker):
    # Given a producer with an acknowledged record
    producer = Producer(broker=broker.url, linger_ms=0)
    try:
        future = producer.send("t", b"x", partition=0)
        future.get(GET_TIMEOUT_S)
        # When each call that waits is given a str or a negative wait / Then it is
        # refused naming the call, as a str fails deep inside threading otherwise
        with pytest.raises(TypeError, match="get timeout must be a number of seconds"):
            future.get(timeout="1")
        with pytest.raises(TypeError, match="exception timeout must be a number of seconds"):
            future.exception(timeout="1")
        with pytest.raises(TypeError, match="flush timeout must be a number of seconds"):
            producer.flush(timeout="x")
        with pytest.raises(ValueError, match=r"close timeout=-1 is outside 0\.\."):
            producer.close(timeout=-1)
        # and the refused close left the producer open: it still sends
        assert producer.send("t", b"y", partition=0).get(GET_TIMEOUT_S).offset == 1
    finally:
        producer.close()


def test_a_send_to_an_unknown_topic_whose_name_breaks_the_rules_raises_invalid_topic_error(
        broker):
    with Producer(broker=broker.url) as producer:
        # A space: UnknownTopicError said nothing of the name being impossible
        with pytest.raises(InvalidTopicError, match=r"topic name 'bad name' may contain only "
                                                    r"ASCII letters, digits"):
            producer.send("bad name", b"x")
        # And an unknown topic whose name is allowed is still unknown
        with pytest.raises(UnknownTopicError):
            producer.send("no-such-topic", b"x")


def test_a_closed_producer_asks_the_broker_nothing_and_send_raises_only_closed_error(
        broker, monkeypatch, caplog):
    # Given a producer that may ask a count again at once, and a send refused for a
    # partition the topic lacks
    monkeypatch.setattr(limits, "PRODUCER_METADATA_REFRESH_MS_MIN", 0)
    producer = Producer(broker=broker.url)
    producer.send("t", b"x", partition=0).get(10)
    with pytest.raises(PartitionOutOfRangeError):
        producer.send("t", b"x", partition=PARTITIONS)
    producer.close()
    asked = metadata_asked(broker, "t")
    # When it is closed, and then sent to and asked its partitions
    with caplog.at_level(logging.WARNING, logger="plinth"):
        with pytest.raises(ClosedError, match="producer is closed"):
            producer.send("t", b"late", partition=PARTITIONS)
        with pytest.raises(ClosedError, match="producer is closed"):
            producer.partitions_for("t")
    # Then each raised ClosedError alone: nothing was asked of the broker, nothing logged
    assert metadata_asked(broker, "t") == asked
    assert caplog.records == []


def test_a_close_that_waited_out_a_delivery_timeout_warns_how_many_records_failed_and_why(
        broker, caplog):
    # Given a producer whose records the broker loses from now on
    producer = Producer(broker=broker.url, request_timeout_ms=100, delivery_timeout_ms=300)
    producer.send("t", b"x", partition=0).get(10)
    broker.faults.extend([DROP] * 1000)
    future = producer.send("t", b"lost", partition=0)
    # When it is closed: the close's flush waits for the record's delivery deadline
    with caplog.at_level(logging.WARNING, logger="plinth.client.sender"):
        producer.close()
    # Then the close's last word is one WARNING saying how many failed and why
    assert caplog.records[-1].getMessage() == (
        "producer closed with 1 records not delivered: 1 not acknowledged within "
        "delivery_timeout_ms=300 (sent, so they may have been stored); each record's "
        "future raises its error")
    with pytest.raises(PlinthTimeoutError, match="may have been stored"):
        future.get(0)
