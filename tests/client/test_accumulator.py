"""Specification of plinth.client.accumulator and its C fast path (client/_producer.c).

The accumulator runs here without a sender thread: the tests play the sender
by calling drain() and complete() themselves.
"""

import gc
import sys
import threading
import time
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plinth import limits
from plinth.client._producer import Appender, FutureBase
from plinth.client.accumulator import RECORD_BYTES_MAX, RecordAccumulator
from plinth.client.futures import BatchResult, Piece, RecordFuture
from plinth.client.partitioner import partition_for_key
from plinth.errors import PartitionOutOfRangeError, PlinthTimeoutError, RecordTooLargeError
from plinth.format.record_batch import (BATCH_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES,
                                        RecordColumns, checked_headers, decode_records)

T0_MS = 1_700_000_000_000
VALUE = b"v" * 100
RECORD_BYTES = RECORD_OVERHEAD_BYTES + len(VALUE)
# Batches of 8 such records (896 bytes counted) and no more (1,008), with the batch's
# own overhead (batch_bytes_max counts the encoded batch)
BATCH_OF_8_BYTES_MAX = 1000 + BATCH_OVERHEAD_BYTES


def accumulator(*, batch_bytes_max=1 << 20, buffer_bytes_max=1 << 26, max_block_ms=60_000,
                linger_ms=1_000_000, topics=(("t", 4),)) -> RecordAccumulator:
    acc = RecordAccumulator(batch_bytes_max=batch_bytes_max, linger_ms=linger_ms,
                            buffer_bytes_max=buffer_bytes_max, max_block_ms=max_block_ms,
                            wake=lambda: None)
    for topic, partitions in topics:
        acc.add_topic(topic, partitions)
    return acc


def send(acc, topic="t", value=VALUE, key=None, partition=None, timestamp_ms=T0_MS,
         headers=None):
    """What Producer.send does: the fast path, else its arguments made plain and the
    slow path."""
    if headers is None:
        future = acc.append_fast(topic, value, key, partition, timestamp_ms)
        if future is not None:
            return future
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    entries, headers_bytes = checked_headers(headers or [])
    return acc.append(topic, partition, None if key is None else bytes(key),
                      None if value is None else bytes(value), timestamp_ms, entries,
                      headers_bytes)


def open_batches(acc) -> dict:
    """(topic, partition) -> record count of each open batch."""
    return {key: batch.builder.record_count for key, batch in acc._open.items()}


def drain_all(acc):
    acc.begin_flush()
    try:
        return acc.drain(1 << 30)
    finally:
        acc.end_flush()


# --- Batching -----------------------------------------------------------------------

def test_records_of_one_partition_share_a_batch_with_consecutive_indexes():
    # Given an accumulator
    acc = accumulator()
    # When ten records go to partition 2, the first through the slow path, the rest fast
    futures = [send(acc, partition=2, value=b"%d" % i) for i in range(10)]
    # Then they are records 0..9 of one batch, which holds them in order
    assert {f.batch for f in futures} == {futures[0].batch}
    assert [f._index for f in futures] == list(range(10))
    [batch] = drain_all(acc)
    records = decode_records("t", 2, 0, batch.builder.build())
    assert [r.value for r in records] == [b"%d" % i for i in range(10)]


def test_a_keyed_record_goes_to_the_partition_of_kafkas_partitioner_on_both_paths():
    acc = accumulator()
    for i in range(50):
        key = b"key-%d" % i
        assert send(acc, key=key).batch.partition == partition_for_key(key, 4)
        assert send(acc, key=bytearray(key)).batch.partition == partition_for_key(key, 4)


def test_a_batch_never_exceeds_batch_bytes_max_and_is_sealed_when_the_next_record_does_not_fit():
    # Given batches of at most 8 records of 112 bytes
    acc = accumulator(batch_bytes_max=BATCH_OF_8_BYTES_MAX)
    # When 20 records go to one partition
    futures = [send(acc, partition=0) for _ in range(20)]
    # Then the batches hold 8, 8 and 4 records, and only the last is still open
    assert [len({f for f in futures if f.batch is b}) for b in
            dict.fromkeys(f.batch for f in futures)] == [8, 8, 4]
    sealed = acc.drain(1 << 30)
    assert [b.builder.record_count for b in sealed] == [8, 8]
    assert all(len(b.builder.build()) <= BATCH_OF_8_BYTES_MAX for b in sealed)


def test_a_full_default_batch_encodes_within_kafkas_default_max_message_bytes():
    # Given the default batch_bytes_max (1 MiB) and records of 108 bytes, as `plinth
    # produce` makes of 108-character lines
    acc = accumulator(batch_bytes_max=limits.PRODUCER_BATCH_BYTES_DEFAULT)
    # When a partition's batch fills
    for _ in range(limits.PRODUCER_BATCH_BYTES_DEFAULT // 100):
        send(acc, partition=0, value=b"z" * 108)
    [full, *_] = acc.drain(1 << 30)
    # Then it encodes within 1 MiB, its header included (Kafka's batch.size counts it),
    # so within Kafka's default max.message.bytes (1 MiB + 12): it was 1 MiB + 80
    assert len(full.builder.build()) <= limits.PRODUCER_BATCH_BYTES_DEFAULT < 1_048_588


def test_a_record_that_fills_its_batch_exactly_seals_it():
    acc = accumulator(batch_bytes_max=2 * RECORD_BYTES + BATCH_OVERHEAD_BYTES)
    send(acc, partition=1)
    send(acc, partition=1)
    assert [b.builder.record_count for b in acc.drain(1 << 30)] == [2]


def test_keyless_records_move_to_another_partition_when_their_batch_is_full():
    # Given batches of 8 records and a topic of 4 partitions
    acc = accumulator(batch_bytes_max=BATCH_OF_8_BYTES_MAX)
    # When 24 keyless records are sent
    futures = [send(acc) for _ in range(24)]
    # Then they fill three batches, each on a different partition than the one before
    partitions = [f.batch.partition for f in futures]
    runs = [partitions[i] for i in range(0, 24, 8)]
    assert all(partitions[i:i + 8] == [partitions[i]] * 8 for i in range(0, 24, 8))
    assert runs[0] != runs[1] and runs[1] != runs[2]


def test_a_record_over_the_batch_limit_is_too_large_on_any_path():
    acc = accumulator()
    with pytest.raises(RecordTooLargeError):
        send(acc, partition=0, value=b"x" * (16 << 20))


def test_a_record_larger_than_batch_bytes_max_gets_a_batch_of_its_own():
    acc = accumulator(batch_bytes_max=BATCH_OF_8_BYTES_MAX)
    send(acc, partition=0)
    big = send(acc, partition=0, value=b"x" * 5000)
    assert big._index == 0
    assert [b.builder.record_count for b in acc.drain(1 << 30)] == [1, 1]


# --- Memory bound ---------------------------------------------------------------------

def test_a_full_buffer_blocks_max_block_ms_then_raises_on_the_fast_path_too():
    # Given a buffer of 5 records, full, with an open batch that has room
    acc = accumulator(buffer_bytes_max=5 * RECORD_BYTES, max_block_ms=50)
    for _ in range(5):
        send(acc, partition=0)
    # When one more record is sent to that batch
    # Then the fast path does not take it, and the send times out
    assert acc.append_fast("t", VALUE, None, 0, T0_MS) is None
    with pytest.raises(PlinthTimeoutError, match="buffer full"):
        send(acc, partition=0)


def test_completing_a_batch_frees_its_bytes_for_a_blocked_send():
    # Given a full buffer and a thread blocked sending
    acc = accumulator(buffer_bytes_max=5 * RECORD_BYTES)
    for _ in range(5):
        send(acc, partition=0)
    [batch] = drain_all(acc)
    sent = []
    blocked = threading.Thread(target=lambda: sent.append(send(acc, partition=0)))
    blocked.start()
    # When the batch is acknowledged
    acc.complete(batch, 0)
    blocked.join(10)
    # Then the blocked send goes through
    assert len(sent) == 1 and sent[0].batch is not batch.result


# --- Fast path refusals -------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("unknown-topic", VALUE, None, None, None),       # topic not added
    ("t", bytearray(VALUE), None, 0, None),           # not bytes
    ("t", VALUE, memoryview(b"key"), None, None),
    ("t", VALUE, None, 4, None),                      # partition out of range
    ("t", VALUE, None, -1, None),
    ("t", VALUE, None, 2**70, None),
    ("t", VALUE, None, 0, 2**70),                     # timestamp not an int64
    ("t", VALUE, None, 0, 1.5),
])
def test_the_fast_path_leaves_anything_unusual_to_the_slow_path_and_changes_nothing(args):
    # Given an open batch on every partition
    acc = accumulator()
    for partition in range(4):
        send(acc, partition=partition)
    buffered = acc.appender.buffered_bytes
    # When the fast path is offered an unusual record
    # Then it declines, and nothing was appended
    assert acc.append_fast(*args) is None
    assert acc.appender.buffered_bytes == buffered
    assert [b.builder.record_count for b in drain_all(acc)] == [1, 1, 1, 1]


def test_after_refuse_appends_the_fast_path_takes_nothing():
    acc = accumulator()
    send(acc, partition=0)
    acc.refuse_appends()
    assert acc.append_fast("t", VALUE, None, 0, T0_MS) is None


def test_the_fast_path_stamps_the_wall_clock_when_no_timestamp_is_given():
    acc = accumulator()
    send(acc, partition=0, timestamp_ms=None)
    before_ms = time.time_ns() // 1_000_000
    acc.append_fast("t", VALUE, None, 0, None)
    after_ms = time.time_ns() // 1_000_000
    [batch] = drain_all(acc)
    stamped = decode_records("t", 0, 0, batch.builder.build())[1].timestamp_ms
    assert before_ms <= stamped <= after_ms


# --- Threads ------------------------------------------------------------------------------

def test_concurrent_senders_and_a_draining_sender_thread_lose_and_duplicate_nothing():
    # Given four threads sending (fast and slow path, several partitions), a thread
    # draining and completing batches, and a GIL switch interval of 1 us
    acc = accumulator(batch_bytes_max=3000, buffer_bytes_max=100 * RECORD_BYTES, linger_ms=0)
    per_thread, threads_count = 5000, 4
    futures: list[list] = [[] for _ in range(threads_count)]
    stop, offsets, got = threading.Event(), {}, []

    def sender_thread():
        while not stop.is_set() or not acc.empty():
            for batch in acc.drain(1 << 30):
                records = decode_records("t", batch.partition, 0, batch.builder.build())
                got.extend(r.value for r in records)
                base = offsets.get(batch.partition, 0)
                offsets[batch.partition] = base + len(records)
                acc.complete(batch, base)

    def app_thread(n):
        for i in range(per_thread):
            key = b"%d" % (i % 7) if i % 3 else None
            futures[n].append(send(acc, value=b"%d-%d" % (n, i), key=key))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        drainer = threading.Thread(target=sender_thread)
        drainer.start()
        apps = [threading.Thread(target=app_thread, args=(n,)) for n in range(threads_count)]
        for thread in apps:
            thread.start()
        for thread in apps:
            thread.join()
        acc.begin_flush()
        stop.set()
        drainer.join(60)
    finally:
        sys.setswitchinterval(interval)
    # Then every record was sent exactly once, and every future names its own record
    expected = {b"%d-%d" % (n, i) for n in range(threads_count) for i in range(per_thread)}
    assert len(got) == len(expected) and set(got) == expected
    metadata = [f.get(10) for fs in futures for f in fs]
    assert len({(m.partition, m.offset) for m in metadata}) == len(expected)
    assert acc.appender.buffered_bytes == 0


# --- Futures --------------------------------------------------------------------------------

def test_a_future_in_a_reference_cycle_through_its_callback_is_collected():
    # Given a future whose batch holds a callback that refers to the future
    class Marker:
        pass

    batch, marker = BatchResult("t", 0), Marker()
    future = RecordFuture(batch, 3)
    future.add_callback(lambda metadata, future=future, marker=marker: None)
    collected = threading.Event()
    weakref.finalize(marker, collected.set)
    # When nothing else refers to them
    del future, batch, marker
    gc.collect()
    # Then the garbage collector frees them
    assert collected.is_set()


def test_a_future_resolves_to_its_records_offset():
    batch = BatchResult("t", 1)
    future = RecordFuture(batch, 3)
    batch.resolve(100)
    assert future.get(0).offset == 103 and future.batch is batch


def test_a_split_batchs_records_resolve_each_to_its_pieces_offset_or_error():
    # Given a batch of 4 records split in two pieces: the first stored at 10, the
    # second refused, and callbacks on every record
    batch = BatchResult("t", 0)
    futures = [RecordFuture(batch, i) for i in range(4)]
    stored, failed = [], []
    for future in futures:
        future.add_callback(stored.append).add_errback(failed.append)
    first, second, error = BatchResult("t", 0), BatchResult("t", 0), RecordTooLargeError("big")
    first.resolve(10)
    second.resolve(None, error)
    # When the batch resolves with its pieces
    batch.resolve_split([Piece(0, 2, first), Piece(2, 2, second)])
    # Then each record has its own piece's outcome, in its callbacks and its future
    assert [m.offset for m in stored] == [10, 11] and failed == [error, error]
    assert futures[1].get(0).offset == 11 and futures[0].exception(0) is None
    with pytest.raises(RecordTooLargeError):
        futures[3].get(0)
    # And the batch says the first error, and how many of its records were stored
    assert batch.error is error
    assert batch.records_acknowledged(4) == 2 and batch.records_acknowledged(1) == 1


APPENDER_LIMITS = dict(batch_bytes_max=1000, buffer_bytes_max=10_000, record_bytes_max=1000,
                       records_max=100, partitions_max=8)


def test_the_appender_checks_its_arguments():
    with pytest.raises(TypeError):
        Appender(future_type=BatchResult, **APPENDER_LIMITS)
    with pytest.raises(ValueError):
        Appender(future_type=RecordFuture, **{**APPENDER_LIMITS, "records_max": 0})
    appender = Appender(future_type=RecordFuture, **APPENDER_LIMITS)
    appender.add_topic("t", 2, 0)
    full = RecordColumns()
    full.append(b"k", b"v", T0_MS)
    with pytest.raises(ValueError, match="empty RecordColumns"):
        appender.add("t", 0, None, VALUE, T0_MS, 0, full, BatchResult("t", 0))
    with pytest.raises(KeyError):
        appender.add("other", 0, None, VALUE, T0_MS, 0, None, None)
    with pytest.raises(TypeError):
        appender.add("t", 0, "text", VALUE, T0_MS, 0, None, None)
    with pytest.raises(OverflowError):
        appender.add("t", 0, None, VALUE, 2**63, 0, None, None)
    with pytest.raises(KeyError):
        appender.close_batch("other", 0)
    with pytest.raises(IndexError):
        appender.close_batch("t", 2)
    with pytest.raises(ValueError):
        appender.add_topic("u", 0, 0)
    with pytest.raises(ValueError, match="must be 1 to 8"):
        appender.add_topic("u", 9, 0)
    with pytest.raises(TypeError):
        appender.append("t", VALUE)
    with pytest.raises(AssertionError):
        appender.release(1)     # more than is buffered
    # And a batch opened through add() takes fast appends
    assert appender.add("t", 0, None, VALUE, T0_MS, 0, RecordColumns(), BatchResult("t", 0))[3] == 0
    assert isinstance(appender.append("t", VALUE, None, 0, T0_MS), FutureBase)


def test_encoding_empty_columns_is_refused():
    with pytest.raises(ValueError, match="recordCount 0"):
        RecordColumns().encode(-1, -1, limits.BATCH_RECORDS_MAX)


def test_a_new_batch_reusing_the_columns_of_an_acknowledged_one_holds_only_its_own_records():
    # Given a batch of three records, sent and acknowledged
    acc = accumulator()
    for i in range(3):
        send(acc, partition=0, key=b"old-key", value=b"old-%d" % i)
    [first] = drain_all(acc)
    first.builder.build()
    acc.complete(first, 0)
    # When the next batch is filled (with the first one's column buffers)
    send(acc, partition=0, key=None, value=b"new")
    [second] = drain_all(acc)
    # Then it encodes its one record only, and the first batch's builder is spent
    assert [(r.key, r.value) for r in decode_records("t", 0, 0, second.builder.build())] == \
        [(None, b"new")]
    assert first.builder.columns is None


@pytest.mark.parametrize("later_ms", [T0_MS + 2**32, T0_MS - 2**32, 2**62, 0])
def test_a_record_too_far_in_time_from_its_batch_starts_a_new_one_on_either_path(later_ms):
    # Given an open batch with a record at T0 and one at T0 + 1 ms
    acc = accumulator()
    send(acc, partition=0, timestamp_ms=T0_MS)
    send(acc, partition=0, timestamp_ms=T0_MS + 1)
    # When a record more than a UInt32 of ms away is sent, keyed or not
    far = send(acc, partition=0, timestamp_ms=later_ms)
    # Then it starts a new batch, and every batch can be encoded
    batches = drain_all(acc)
    assert [b.builder.record_count for b in batches] == [2, 1] and far._index == 0
    for batch in batches:
        batch.builder.build()


# --- One decision: where a record goes, whether it fits, what it counts -------------------

def test_a_batch_is_sealed_at_batch_records_max_records_on_either_path(monkeypatch):
    # Given a limit of 3 records per batch (and room for many more bytes)
    monkeypatch.setattr(limits, "BATCH_RECORDS_MAX", 3)
    acc = accumulator()
    # When 7 records go to one partition, fast and slow path alike
    futures = [send(acc, partition=0, value=b"%d" % i, headers=[("i", b"")] if i % 2 else None)
               for i in range(7)]
    # Then the batches hold 3, 3 and 1 records, and each encodes
    assert [f._index for f in futures] == [0, 1, 2, 0, 1, 2, 0]
    batches = drain_all(acc)
    assert [b.builder.record_count for b in batches] == [3, 3, 1]
    for batch in batches:
        batch.builder.build()


def test_a_topic_with_more_partitions_than_the_limit_is_refused(monkeypatch):
    acc = accumulator(topics=())
    with pytest.raises(ValueError, match=f"must be 1 to {limits.PARTITIONS_PER_TOPIC_MAX}"):
        acc.add_topic("wide", limits.PARTITIONS_PER_TOPIC_MAX + 1)
    acc.add_topic("widest", limits.PARTITIONS_PER_TOPIC_MAX)


def test_headers_count_against_the_batch_and_the_buffer():
    # Given batches of at most 1,000 bytes
    acc = accumulator(batch_bytes_max=BATCH_OF_8_BYTES_MAX)
    # When a record with 800 bytes of header value is followed by a plain record
    entries, headers_bytes = checked_headers([("h", b"x" * 800)])
    first = send(acc, partition=0, headers=entries)
    second = send(acc, partition=0)
    # Then the buffer counts the headers, and the plain record needed a batch of its own
    assert acc.appender.buffered_bytes == 2 * RECORD_BYTES + headers_bytes
    assert first.batch is not second.batch and second._index == 0


@pytest.mark.parametrize("call, error", [
    (lambda acc: acc.append("t", None, None, b"x" * RECORD_BYTES_MAX, T0_MS), RecordTooLargeError),
    (lambda acc: acc.append("t", 4, None, VALUE, T0_MS), PartitionOutOfRangeError),
    (lambda acc: acc.append("t", -1, None, VALUE, T0_MS), PartitionOutOfRangeError),
    (lambda acc: acc.append("t", None, None, VALUE, 2**63), OverflowError),
    (lambda acc: acc.append("t", None, "text", VALUE, T0_MS), TypeError),
])
def test_a_refused_record_leaves_no_trace(call, error):
    # Given an accumulator with one partition's batch open, and one without any
    acc = accumulator()
    send(acc, partition=1)
    sticky_before = acc._sticky["t"].partition()
    # When a record is refused
    with pytest.raises(error):
        call(acc)
    # Then no batch was opened or sealed, nothing was counted, the sticky partition
    # stayed where it was
    assert open_batches(acc) == {("t", 1): 1} and acc.drain(1 << 30) == []
    assert acc.appender.buffered_bytes == RECORD_BYTES
    assert acc._sticky["t"].partition() == sticky_before


def test_a_record_that_must_wait_for_buffer_room_and_times_out_leaves_no_trace():
    # Given a full buffer and one open batch
    acc = accumulator(buffer_bytes_max=2 * RECORD_BYTES, max_block_ms=20)
    send(acc, partition=0)
    send(acc, partition=0)
    # When a record for another partition times out waiting for room
    with pytest.raises(PlinthTimeoutError):
        send(acc, partition=3, headers=[("h", b"")])
    # Then no batch was opened for it and nothing more is counted
    assert open_batches(acc) == {("t", 0): 2}
    assert acc.appender.buffered_bytes == 2 * RECORD_BYTES


record_strategy = st.tuples(st.none() | st.binary(max_size=30), st.none() | st.binary(max_size=60),
                            st.none() | st.lists(st.tuples(st.text(max_size=5),
                                                           st.binary(max_size=9)), max_size=3))


@settings(max_examples=200, deadline=None)
@given(records=st.lists(record_strategy, min_size=1, max_size=60))
def test_a_batch_encodes_within_its_counted_bytes_and_its_fixed_overhead(records):
    # Given any records, with and without headers, in one partition's batch
    acc = accumulator()
    for key, value, headers in records:
        send(acc, partition=2, key=key, value=value, headers=headers)
    [batch] = drain_all(acc)
    # When it is encoded / Then it is no larger than what its records count plus
    # BATCH_OVERHEAD_BYTES: counted records can never make a batch over BATCH_BYTES_MAX
    encoded = batch.builder.build()
    assert len(encoded) <= batch.bytes + BATCH_OVERHEAD_BYTES
    assert batch.bytes == acc.appender.buffered_bytes
    if not any(headers for _, _, headers in records):
        # exact but for the blobs' padding and the (absent) headers list's tag
        assert batch.bytes + BATCH_OVERHEAD_BYTES - len(encoded) <= 5 * 7 + 8


def test_a_topic_re_created_with_fewer_partitions_places_later_records_within_them():
    # Given a topic of 4 partitions with a batch open on partitions 0 and 3
    acc = accumulator()
    kept = send(acc, partition=0)
    on_gone = send(acc, partition=3)
    # When the producer learns that it now has 1
    acc.set_partition_count("t", 1)
    # Then the batch of the partition that is gone is sealed as it was (sent, the broker
    # refuses it), the other stays open, and every later record goes to partition 0,
    # keyed or not, on either path
    assert open_batches(acc) == {("t", 0): 1}
    assert [(b.partition, b.builder.record_count) for b in acc.drain(1 << 30)] == [(3, 1)]
    assert on_gone.batch.partition == 3
    later = [send(acc, key=key) for key in (None, b"a", b"b", b"c", b"d", b"e", b"f")]
    later += [send(acc, key=key, headers=[("h", b"1")]) for key in (None, b"a", b"b")]
    assert {f.batch for f in later} == {kept.batch}
    # And a record for a partition beyond it is refused naming the new count
    with pytest.raises(PartitionOutOfRangeError, match="it has 1 partitions"):
        send(acc, partition=1)


def test_a_topic_grown_keeps_its_open_batches_and_takes_records_in_its_new_partitions():
    # Given a topic of 2 partitions with a batch open on partition 1
    acc = accumulator(topics=(("t", 2),))
    first = send(acc, partition=1)
    # When the producer learns that it now has 4
    acc.set_partition_count("t", 4)
    # Then partition 1's batch takes the next record, and partition 3 takes records
    assert send(acc, partition=1).batch is first.batch
    assert send(acc, partition=3).batch.partition == 3
    assert {send(acc, key=b"key-%d" % i).batch.partition for i in range(64)} == {0, 1, 2, 3}
    assert acc.drain(1 << 30) == []


def test_the_appender_refuses_to_drop_a_partition_whose_batch_is_open_and_changes_nothing():
    appender = Appender(future_type=RecordFuture, **APPENDER_LIMITS)
    appender.add_topic("t", 4, 0)
    appender.add("t", 3, None, VALUE, T0_MS, 0, RecordColumns(), BatchResult("t", 3))
    with pytest.raises(ValueError, match="partition 3 has an open batch"):
        appender.resize_topic("t", 2, 0)
    assert appender.append("t", VALUE, None, 3, T0_MS)._index == 1   # still there, open
    with pytest.raises(KeyError):
        appender.resize_topic("other", 2, 0)
    with pytest.raises(ValueError, match="must be 1 to 8"):
        appender.resize_topic("t", 9, 0)
