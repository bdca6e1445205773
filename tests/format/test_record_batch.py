"""Specification of plinth.format.record_batch: encode, check and decode RecordBatch."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plinth import limits
from plinth.format.record_batch import (
    BatchBuilder, BatchSummary, ConsumerRecord, decode_records, summarize_batch,
)
from plinth.errors import CorruptDataError, InvalidBatchError, RecordTooLargeError
from plinth.format.kafka_batch import decode_kafka_records, kafka_batch_from_plinth
from plinth.schemas import record_batch as record_batch_schema

T0_MS = 1_700_000_000_000


def build_batch(records, producer_id=-1, base_sequence=-1) -> bytes:
    """records: (key, value, timestamp_ms, headers) tuples."""
    builder = BatchBuilder()
    for key, value, timestamp_ms, headers in records:
        builder.append(key, value, timestamp_ms, headers)
    return builder.build(producer_id=producer_id, base_sequence=base_sequence)


def i32(*values) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def u32(*values) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def raw_batch(**fields) -> bytes:
    """A hand-made RecordBatch: two valid records, with ``fields`` overriding."""
    values = dict(
        recordCount=2, baseTimestampMs=T0_MS, maxTimestampMs=T0_MS + 5,
        timestampDeltasMs=u32(0, 5), keyLengths=i32(2, -1), keys=b"k1",
        valueLengths=i32(3, 0), values=b"v11",
    )
    headers = fields.pop("headers", None)
    values.update(fields)
    message = record_batch_schema.RecordBatch.new_message(**values)
    if headers is not None:
        slots = message.init("headers", len(headers))
        for slot, (index, entries) in zip(slots, headers):
            slot.index = index
            for entry, (key, value) in zip(slot.init("entries", len(entries)), entries):
                entry.key = key
                entry.value = value
    return message.to_bytes()


MIXED_RECORDS = [
    (b"key-0", b"value-0", T0_MS, None),
    (None, b"value with null key", T0_MS + 3, None),
    (b"key-2", None, T0_MS + 1, [("trace-id", b"\x00\x01")]),
    (b"", b"", T0_MS + 7, []),
    (b"key-4", b"", T0_MS + 2, [("\u00e9t\u00e9 \U0001f600", b"unicode key"), ("dup", b"1"),
                                ("dup", b"2")]),
    (None, None, T0_MS, None),
]


# --- Round trip ---------------------------------------------------------------

def test_a_batch_decodes_to_the_records_that_were_appended():
    # Given records with null keys and values, empty ones, and headers with unicode keys
    batch = build_batch(MIXED_RECORDS)
    # When the consumer decodes the batch stored at offset 100
    records = decode_records("orders", 3, 100, batch)
    # Then every record comes back, in order, with consecutive offsets
    expected = [ConsumerRecord("orders", 3, 100 + i, key, value, list(headers or []), ts)
                for i, (key, value, ts, headers) in enumerate(MIXED_RECORDS)]
    assert records == expected
    assert records[1].key is None and records[2].value is None
    assert records[3].key == b"" and records[3].value == b""


def test_append_returns_each_records_index_and_counts_them():
    # Given an empty builder
    builder = BatchBuilder()
    # When three records are appended
    indexes = [builder.append(b"k", b"v", T0_MS, None) for _ in range(3)]
    # Then they get indexes 0, 1, 2 and the count is 3
    assert indexes == [0, 1, 2]
    assert builder.record_count == 3


def test_size_bytes_is_a_close_upper_estimate_of_the_encoded_size():
    # Given batches of small, large and header-carrying records
    for records in ([(b"k" * 16, b"v" * 100, T0_MS + i, None) for i in range(1000)],
                    [(None, b"x" * 10_000, T0_MS, None)] * 50,
                    MIXED_RECORDS):
        builder = BatchBuilder()
        for record in records:
            builder.append(*record)
        # When it is built
        encoded = builder.build()
        # Then size_bytes was never below the real size, and within 256 bytes + 1% of it
        assert len(encoded) <= builder.size_bytes <= len(encoded) * 1.01 + 256


def test_summary_reports_count_timestamps_and_producer():
    # Given an idempotent producer's batch with out-of-order timestamps
    batch = build_batch(MIXED_RECORDS, producer_id=42, base_sequence=7)
    # When the shard summarizes it
    summary = summarize_batch(batch)
    # Then it names the count, the largest and smallest timestamps and the producer
    assert summary == BatchSummary(record_count=6, max_timestamp_ms=T0_MS + 7,
                                   base_timestamp_ms=T0_MS, producer_id=42, base_sequence=7)


def test_offset_min_skips_the_records_before_it():
    # Given a batch of 10 records stored at offset 50
    batch = build_batch([(b"k%d" % i, b"v%d" % i, T0_MS + i, [("i", b"%d" % i)])
                         for i in range(10)])
    # When decoded from offset 57
    records = decode_records("t", 0, 50, batch, offset_min=57)
    # Then only offsets 57..59 come back, with their own keys, values, headers, timestamps
    assert [r.offset for r in records] == [57, 58, 59]
    assert [r.key for r in records] == [b"k7", b"k8", b"k9"]
    assert [r.headers for r in records] == [[("i", b"7")], [("i", b"8")], [("i", b"9")]]
    assert [r.timestamp_ms for r in records] == [T0_MS + 7, T0_MS + 8, T0_MS + 9]
    # And an offset_min before the batch skips nothing, one past it skips everything
    assert len(decode_records("t", 0, 50, batch, offset_min=0)) == 10
    assert decode_records("t", 0, 50, batch, offset_min=60) == []


def test_offset_min_skips_correctly_past_null_keys_and_values():
    # Given a batch whose early records have null and non-null keys and values
    batch = build_batch(MIXED_RECORDS)
    # When decoded from its fourth record
    records = decode_records("t", 0, 0, batch, offset_min=3)
    # Then the blobs are cut at the right places
    assert [(r.key, r.value) for r in records] == [(b"", b""), (b"key-4", b""), (None, None)]


def test_a_batch_in_an_unaligned_memoryview_is_read_correctly():
    # Given a batch inside a larger frame at an odd offset
    batch = build_batch(MIXED_RECORDS)
    frame = b"\x07" + batch + b"tail"
    view = memoryview(frame)[1:1 + len(batch)]
    # When summarized and decoded from the view
    # Then the results are those of the bytes
    assert summarize_batch(view) == summarize_batch(batch)
    assert decode_records("t", 0, 0, view) == decode_records("t", 0, 0, batch)


record_strategy = st.tuples(
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=200),
    st.integers(T0_MS - 10**6, T0_MS + 10**6),
    st.none() | st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=10)), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(record_strategy, min_size=1, max_size=30),
       base_offset=st.integers(0, 2**40), skip=st.integers(0, 35))
def test_any_records_round_trip(records, base_offset, skip):
    # Given any records
    batch = build_batch(records)
    # When decoded from some offset
    decoded = decode_records("t", 1, base_offset, batch, offset_min=base_offset + skip)
    # Then exactly the records from that offset on come back unchanged
    expected = [ConsumerRecord("t", 1, base_offset + i, key, value, list(headers or []), ts)
                for i, (key, value, ts, headers) in enumerate(records)][skip:]
    assert decoded == expected
    assert summarize_batch(batch).record_count == len(records)


@settings(max_examples=100, deadline=None)
@given(records=st.lists(record_strategy, min_size=2, max_size=30))
def test_a_builders_halves_hold_its_records_in_order_each_as_it_was(records):
    # Given a builder of any records (as the producer splits one its shard refused)
    builder = BatchBuilder()
    for key, value, ts, headers in records:
        builder.append(key, value, ts, headers)
    # When it is halved
    first, second = builder.halves()
    # Then the halves hold its records, the first half (rounded down) then the rest
    assert (first.record_count, second.record_count) == (len(records) // 2,
                                                          len(records) - len(records) // 2)
    def fields(batch: bytes) -> list[tuple]:
        return [(r.key, r.value, r.timestamp_ms, r.headers)
                for r in decode_records("t", 1, 0, batch)]

    assert fields(first.build()) + fields(second.build()) == fields(builder.build())
    assert builder.record_count == len(records)   # and the builder is left as it was


def test_a_builder_of_one_record_has_no_halves():
    builder = BatchBuilder()
    builder.append(b"k", b"v", T0_MS)
    with pytest.raises(ValueError, match="a batch of 1 records has no halves"):
        builder.halves()


# --- Building rejects what the shard would reject -----------------------------

def test_building_an_empty_batch_is_rejected():
    # Given a builder with no records / When built / Then InvalidBatchError
    with pytest.raises(InvalidBatchError, match="recordCount 0, must be 1 to"):
        BatchBuilder().build()


def test_building_a_batch_whose_timestamps_span_more_than_a_uint32_is_rejected():
    # Given two records 2**32 ms apart
    builder = BatchBuilder()
    builder.append(b"k", b"v", 0, None)
    builder.append(b"k", b"v", 2**32, None)
    # When built / Then InvalidBatchError names the span
    with pytest.raises(InvalidBatchError, match="span 4294967296 ms"):
        builder.build()


def test_building_a_batch_with_a_negative_timestamp_is_rejected_as_the_shard_would():
    # Given a record stamped 1 ms before the epoch among good ones
    builder = BatchBuilder()
    builder.append(b"k", b"v", T0_MS, None)
    builder.append(b"k", b"v", -1, None)
    # When built / Then InvalidBatchError names the timestamp and the rule
    with pytest.raises(InvalidBatchError, match="baseTimestampMs -1 is negative"):
        builder.build()


def test_a_record_stamped_at_the_epoch_is_valid():
    assert summarize_batch(build_batch([(b"k", b"v", 0, None)])).base_timestamp_ms == 0


def test_building_a_batch_over_the_size_limit_raises_record_too_large(monkeypatch):
    # Given a batch limit of 1 KiB and a 2 KiB value
    monkeypatch.setattr(limits, "BATCH_BYTES_MAX", 1024)
    builder = BatchBuilder()
    builder.append(None, b"x" * 2048, T0_MS, None)
    # When built / Then RecordTooLargeError names both sizes
    with pytest.raises(RecordTooLargeError, match=r"encodes to \d+ bytes, over the limit of 1024"):
        builder.build()


def test_headers_that_are_not_str_and_bytes_are_rejected_at_append():
    # Given a header with a bytes key / When appended / Then TypeError names the types
    with pytest.raises(TypeError, match=r"\(bytes, bytes\)"):
        BatchBuilder().append(b"k", b"v", T0_MS, [(b"key", b"v")])
    with pytest.raises(TypeError, match=r"\(str, bytes or None\), got \(str, int\)"):
        BatchBuilder().append(b"k", b"v", T0_MS, [("key", 5)])


def test_a_null_header_value_stays_apart_from_an_empty_one_for_both_kinds_of_consumer():
    # Given a record whose headers have a null value and an empty one, as Kafka's
    # clients send them (Plinth's producer refused the null one)
    batch = build_batch([(b"k", b"v", T0_MS, [("null", None), ("empty", b""), ("x", b"1")])])
    expected = [("null", None), ("empty", b""), ("x", b"1")]
    # When the shard checks it, and a Plinth consumer decodes it / Then each is kept
    assert summarize_batch(batch).record_count == 1
    assert decode_records("t", 0, 0, batch)[0].headers == expected
    # And a Kafka consumer's conversion keeps them too
    assert decode_kafka_records("t", 0, kafka_batch_from_plinth(batch, 0, 0))[0].headers == \
        expected


# --- The shard rejects every broken rule --------------------------------------

def test_the_hand_made_batch_used_below_is_itself_valid():
    # Given the untouched hand-made batch / When summarized / Then it is accepted
    assert summarize_batch(raw_batch()).record_count == 2
    assert decode_records("t", 0, 0, raw_batch())[0].key == b"k1"


@pytest.mark.parametrize(("fields", "message"), [
    (dict(recordCount=0), "recordCount 0, must be 1 to"),
    (dict(recordCount=limits.BATCH_RECORDS_MAX + 1),
     f"recordCount {limits.BATCH_RECORDS_MAX + 1}"),
    (dict(timestampDeltasMs=u32(0)), "timestampDeltasMs is 4 bytes, must be 8 for 2 records"),
    (dict(keyLengths=i32(2, -1, 0)), "keyLengths is 12 bytes, must be 8 for 2 records"),
    (dict(valueLengths=b"\x03\x00\x00\x00\x00"), "valueLengths is 5 bytes, must be 8"),
    (dict(keyLengths=i32(1, -1)), "key lengths sum to 1 bytes but the keys are 2 bytes"),
    (dict(valueLengths=i32(3, 4)), "value lengths sum to 7 bytes but the values are 3 bytes"),
    (dict(keyLengths=i32(2, -2)), "key length of record 1 is -2, must be >= -1"),
    (dict(valueLengths=i32(-7, 3)), "value length of record 0 is -7, must be >= -1"),
    (dict(maxTimestampMs=T0_MS - 1), f"maxTimestampMs {T0_MS - 1} is below baseTimestampMs"),
    (dict(baseTimestampMs=-1, maxTimestampMs=4),
     "baseTimestampMs -1 is negative: every record's timestamp must be >= 0"),
    (dict(baseTimestampMs=-(2**63), maxTimestampMs=-(2**63) + 5), "is negative"),
    (dict(timestampDeltasMs=u32(1, 5)), "deltas run 1 to 5 ms, must run 0 to 5"),
    (dict(timestampDeltasMs=u32(0, 9)), "deltas run 0 to 9 ms, must run 0 to 5"),
    (dict(producerId=-2), "producerId -2"),
    (dict(producerId=5, baseSequence=-1), "producerId 5 with baseSequence -1"),
    (dict(headers=[(2, [("h", b"v")])]), "headers for record 2, but only 2 records"),
    (dict(headers=[(1, [("h", b"v")]), (0, [("h", b"v")])]),
     "not sorted by index: entry 1 has index 0 after 1"),
])
def test_summarize_rejects_a_batch_that_breaks_a_rule(fields, message):
    # Given a batch that breaks exactly one rule of the schema
    batch = raw_batch(**fields)
    # When the shard summarizes it
    # Then InvalidBatchError says which rule, with the numbers
    with pytest.raises(InvalidBatchError, match=message):
        summarize_batch(batch)


def test_summarize_rejects_a_header_key_that_is_not_utf8():
    # Given a batch whose header key bytes are not UTF-8
    batch = bytearray(raw_batch(headers=[(0, [("Z-header", b"v")])]))
    position = bytes(batch).index(b"Z-header")
    batch[position] = 0xFF
    # When summarized / Then it is rejected as not parsing
    with pytest.raises(InvalidBatchError, match="does not parse as a RecordBatch"):
        summarize_batch(bytes(batch))


def test_summarize_rejects_a_batch_over_the_size_limit_naming_both_sizes():
    # Given a batch one byte over BATCH_BYTES_MAX
    batch = bytes(limits.BATCH_BYTES_MAX + 1)
    # When summarized / Then RecordTooLargeError names the size and the limit
    with pytest.raises(RecordTooLargeError,
                       match=f"{limits.BATCH_BYTES_MAX + 1} bytes .* {limits.BATCH_BYTES_MAX}"):
        summarize_batch(batch)


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, b"\xff" * 64, b"not a capnp message!!!!!"])
def test_summarize_rejects_bytes_that_are_not_a_message(data):
    # Given bytes that are not a Cap'n Proto message / When summarized
    # Then InvalidBatchError says how many bytes did not parse
    with pytest.raises(InvalidBatchError, match=f"record batch of {len(data)} bytes"):
        summarize_batch(data)


def test_decoding_a_corrupt_batch_names_topic_partition_and_offset():
    # Given a stored batch whose key lengths run past its keys
    batch = raw_batch(keyLengths=i32(2, 5))
    # When the consumer decodes it / Then CorruptDataError says where it is
    with pytest.raises(CorruptDataError, match=r"offset 900 of orders\[4\] is corrupt"):
        decode_records("orders", 4, 900, batch)


INT64_MAX = 2**63 - 1


@st.composite
def accepted_batches(draw):
    """Any batch the rules accept, written by pycapnp: any record count, null and empty
    keys and values, and a base timestamp anywhere from 0 (no record is stamped
    before the epoch) up to the largest that leaves room for the span (one record at
    2**63 - 1 included)."""
    count = draw(st.integers(1, 12))
    key_lengths = draw(st.lists(st.integers(-1, 5), min_size=count, max_size=count))
    value_lengths = draw(st.lists(st.integers(-1, 5), min_size=count, max_size=count))
    span_ms = 0 if count == 1 else draw(st.sampled_from([0, 1, 2**32 - 1]) | st.integers(0, 10))
    base_ms = draw(st.sampled_from([0, 1, T0_MS, INT64_MAX - 2**32,
                                    INT64_MAX - 2**32 + 1, INT64_MAX - span_ms])
                   | st.integers(0, INT64_MAX - span_ms))
    deltas = [0, span_ms] + draw(st.lists(st.integers(0, span_ms), min_size=count - 2,
                                          max_size=count - 2)) if count > 1 else [0]
    deltas = draw(st.permutations(deltas))
    fields = dict(recordCount=count, baseTimestampMs=base_ms, maxTimestampMs=base_ms + span_ms,
                  timestampDeltasMs=u32(*deltas), keyLengths=i32(*key_lengths),
                  keys=b"k" * sum(max(n, 0) for n in key_lengths),
                  valueLengths=i32(*value_lengths),
                  values=b"v" * sum(max(n, 0) for n in value_lengths))
    headers = draw(st.none() | st.just([(count - 1, [("h", b"x")])]))
    if headers is not None:
        fields["headers"] = headers
    return raw_batch(**fields), base_ms, deltas


@settings(max_examples=500, deadline=None)
@given(accepted=accepted_batches(), base_offset=st.sampled_from([0, 7, 2**62]))
def test_every_batch_the_rules_accept_decodes_even_at_the_top_of_int64(accepted, base_offset):
    # Given a batch the shard accepts, its timestamps anywhere in 0..Int64 (issue 10: one
    # record at 2**63 - 1 was accepted by the shard and refused by every consumer)
    batch, base_ms, deltas = accepted
    summary = summarize_batch(batch)
    # When a consumer decodes it / Then every record comes back with its timestamp
    records = decode_records("t", 0, base_offset, batch)
    assert [r.timestamp_ms for r in records] == [base_ms + d for d in deltas]
    assert [r.offset for r in records] == list(range(base_offset, base_offset + len(deltas)))
    assert summary.max_timestamp_ms == max(r.timestamp_ms for r in records)


def test_a_record_stamped_with_the_largest_int64_goes_from_producer_to_consumer():
    # Given a record whose timestamp is 2**63 - 1, as a producer builds it
    builder = BatchBuilder()
    builder.append(b"k", b"v", INT64_MAX)
    batch = builder.build()
    # When the shard checks it and a consumer decodes it / Then both take it
    assert summarize_batch(batch).max_timestamp_ms == INT64_MAX
    assert decode_records("t", 0, 0, batch)[0].timestamp_ms == INT64_MAX


def assert_rejected_or_valid(data: bytes) -> None:
    """Untrusted bytes either raise InvalidBatchError or are a batch that decodes."""
    try:
        summary = summarize_batch(data)
    except InvalidBatchError:
        return
    assert 1 <= summary.record_count <= limits.BATCH_RECORDS_MAX
    assert summary.base_timestamp_ms <= summary.max_timestamp_ms
    records = decode_records("t", 0, 0, data)
    assert len(records) == summary.record_count
    assert max(r.timestamp_ms for r in records) == summary.max_timestamp_ms


VALID_BATCH = build_batch(MIXED_RECORDS, producer_id=3, base_sequence=0)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_are_rejected_or_valid_never_another_error(data):
    # Given random bytes, and the same bytes behind a valid segment table
    # When summarized / Then only InvalidBatchError or a valid summary comes out
    assert_rejected_or_valid(data)
    words = (len(data) + 7) // 8
    assert_rejected_or_valid(struct.pack("<II", 0, words) + data.ljust(words * 8, b"\x00"))


@settings(max_examples=300, deadline=None)
@given(length=st.integers(0, len(VALID_BATCH) - 1))
def test_a_truncated_batch_is_rejected_or_valid_never_another_error(length):
    # Given a valid batch cut short / When summarized / Then InvalidBatchError or valid
    assert_rejected_or_valid(VALID_BATCH[:length])


@settings(max_examples=500, deadline=None)
@given(bits=st.lists(st.integers(0, len(VALID_BATCH) * 8 - 1), min_size=1, max_size=4))
def test_a_bit_flipped_batch_is_rejected_or_valid_never_another_error(bits):
    # Given a valid batch with a few bits flipped
    data = bytearray(VALID_BATCH)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    # When summarized / Then InvalidBatchError or a valid summary, and it then decodes
    assert_rejected_or_valid(bytes(data))


# --- ConsumerRecord -----------------------------------------------------------

def test_consumer_records_compare_by_value_and_show_their_fields():
    # Given two records with equal fields and one that differs in offset
    a = ConsumerRecord("t", 0, 5, b"k", None, [("h", b"v")], T0_MS)
    b = ConsumerRecord("t", 0, 5, b"k", None, [("h", b"v")], T0_MS)
    c = ConsumerRecord("t", 0, 6, b"k", None, [("h", b"v")], T0_MS)
    # Then equality follows the fields, and repr names every one
    assert a == b and a != c and a != ("t", 0, 5)
    assert repr(a) == ("ConsumerRecord(topic='t', partition=0, offset=5, key=b'k', "
                       f"value=None, headers=[('h', b'v')], timestamp_ms={T0_MS})")
    assert not hasattr(a, "__dict__")


def test_decode_leaves_the_garbage_collector_as_it_found_it():
    # Given the collector disabled by the application
    import gc
    gc.disable()
    try:
        # When a batch is decoded / Then it is still disabled
        decode_records("t", 0, 0, VALID_BATCH)
        assert not gc.isenabled()
    finally:
        gc.enable()
    # And when enabled, it stays enabled
    decode_records("t", 0, 0, VALID_BATCH)
    assert gc.isenabled()


def test_columns_are_little_endian_on_the_wire():
    # Given a one-record batch with a 258-byte value
    batch = build_batch([(None, b"x" * 258, T0_MS, None)])
    # When read with the schema directly
    with record_batch_schema.RecordBatch.from_bytes(batch) as reader:
        value_lengths = struct.unpack("<i", reader.valueLengths)
        key_lengths = struct.unpack("<i", reader.keyLengths)
    # Then the lengths read as Int32 LE
    assert value_lengths == (258,) and key_lengths == (-1,)


# --- The C encoder (format/_record_batch.c: RecordColumns) ----------------------

def pycapnp_encoding(records, producer_id, base_sequence) -> bytes:
    """What pycapnp writes for ``records`` (no headers): the reference for the C encoder."""
    timestamps = [ts for _, _, ts, _ in records]
    base_ms = min(timestamps)
    return record_batch_schema.RecordBatch.new_message(
        recordCount=len(records), baseTimestampMs=base_ms, maxTimestampMs=max(timestamps),
        producerId=producer_id, baseSequence=base_sequence,
        timestampDeltasMs=u32(*(ts - base_ms for ts in timestamps)),
        keyLengths=i32(*(-1 if key is None else len(key) for key, _, _, _ in records)),
        keys=b"".join(key for key, _, _, _ in records if key is not None),
        valueLengths=i32(*(-1 if value is None else len(value) for _, value, _, _ in records)),
        values=b"".join(value for _, value, _, _ in records if value is not None),
    ).to_bytes()


@settings(max_examples=300, deadline=None)
@given(records=st.lists(record_strategy.map(lambda r: (*r[:3], None)), min_size=1, max_size=40),
       producer=st.sampled_from([(-1, -1), (0, 0), (2**62 - 1, 2**31 - 1), (12345, 678)]))
def test_a_batch_without_headers_encodes_to_exactly_the_bytes_pycapnp_writes(records, producer):
    # Given any records without headers, and a producer id and sequence
    producer_id, base_sequence = producer
    # When the builder encodes them (in C)
    batch = build_batch(records, producer_id, base_sequence)
    # Then the bytes are those pycapnp writes for the same fields: the wire format is unchanged
    assert batch == pycapnp_encoding(records, producer_id, base_sequence)


def test_a_batch_grows_past_its_initial_buffers_and_encodes_every_record():
    # Given more records, and more key and value bytes, than the columns start with
    records = [(b"k%05d" % i, b"v" * (i % 300), T0_MS + i % 1000, None) for i in range(5000)]
    # When built and decoded
    batch = build_batch(records)
    # Then every record comes back
    assert [(r.key, r.value, r.timestamp_ms) for r in decode_records("t", 0, 0, batch)] == \
        [(k, v, ts) for k, v, ts, _ in records]


def test_bytearray_and_memoryview_keys_and_values_are_copied_at_append():
    # Given a bytearray key and a memoryview value that change after the append
    key, value = bytearray(b"key"), bytearray(b"value")
    builder = BatchBuilder()
    builder.append(key, memoryview(value), T0_MS)
    key[0:3], value[0:5] = b"KEY", b"VALUE"
    # When built
    [record] = decode_records("t", 0, 0, builder.build())
    # Then the record holds the bytes as they were at the append
    assert (record.key, record.value) == (b"key", b"value")


@pytest.mark.parametrize("key, value", [
    ("text", b"v"), (b"k", 12), (b"k", memoryview(b"abcdef")[::2]), (object(), None),
])
def test_append_rejects_a_key_or_value_that_is_not_contiguous_bytes_and_changes_nothing(
        key, value):
    # Given a builder with one record
    builder = BatchBuilder()
    builder.append(b"k0", b"v0", T0_MS)
    size_before = builder.size_bytes
    # When a record with a key or value of the wrong kind is appended
    with pytest.raises(TypeError, match="key|value"):
        builder.append(key, value, T0_MS)
    # Then the builder still holds exactly the first record
    assert builder.record_count == 1 and builder.size_bytes == size_before
    assert [(r.key, r.value) for r in decode_records("t", 0, 0, builder.build())] == \
        [(b"k0", b"v0")]


def test_a_header_of_the_wrong_type_leaves_the_builder_unchanged():
    # Given a builder with one record
    builder = BatchBuilder()
    builder.append(b"k0", b"v0", T0_MS)
    # When a record whose header is not (str, bytes) is appended
    with pytest.raises(TypeError):
        builder.append(b"k1", b"v1", T0_MS, [("ok", b"1"), (b"bad", b"2")])
    # Then the record was not half-added
    assert builder.record_count == 1


def test_a_timestamp_that_is_not_an_int64_is_rejected_at_append():
    builder = BatchBuilder()
    with pytest.raises(OverflowError):
        builder.append(b"k", b"v", 2**63)
    with pytest.raises(TypeError):
        builder.append(b"k", b"v", "now")
    assert builder.record_count == 0
