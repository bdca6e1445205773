"""Specification of ConsumerRecord and build_records (plinth.format._record_batch).

build_records reads columns that came from the network. It relies on the rules
the shard ran before storing them and checks only its bounds: whatever bytes it
is given, it returns the records a plain Python reading of the columns gives,
or raises ValueError where that reading would leave a buffer or Int64. A crash
here would kill the test process.
"""

import gc
import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plinth.format._record_batch import build_records
from plinth.format.record_batch import ConsumerRecord

T0_MS = 1_700_000_000_000
INT64_MAX = 2**63 - 1


def i32(*values) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def u32(*values) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def reference_records(topic, partition, base_offset, offset_min, base_timestamp_ms, deltas,
                      key_lengths, keys, value_lengths, values):
    """The columns read in plain Python; None where build_records must refuse: a
    reading that would leave a buffer or Int64."""
    count = len(deltas) // 4
    if (len(deltas) % 4 or len(key_lengths) != len(deltas) or len(value_lengths) != len(deltas)
            or not 0 <= base_offset <= INT64_MAX - count):
        return None
    timestamps = [base_timestamp_ms + d for d in struct.unpack(f"<{count}I", deltas)]
    if any(timestamp > INT64_MAX for timestamp in timestamps):
        return None
    sliced = []
    for lengths_bytes, blob in ((key_lengths, keys), (value_lengths, values)):
        lengths = struct.unpack(f"<{count}i", lengths_bytes)
        if any(length < -1 for length in lengths) or sum(max(n, 0) for n in lengths) > len(blob):
            return None
        ends = [sum(max(n, 0) for n in lengths[:i + 1]) for i in range(count)]
        sliced.append([None if n == -1 else blob[end - n:end] for n, end in zip(lengths, ends)])
    first = min(max(0, offset_min - base_offset), count)
    return [ConsumerRecord(topic, partition, base_offset + i, sliced[0][i], sliced[1][i], [],
                           timestamps[i]) for i in range(first, count)]


def build(*, offset_min=0, base_offset=100, base_timestamp_ms=T0_MS, deltas=u32(0, 5),
          key_lengths=i32(2, -1), keys=b"k1", value_lengths=i32(3, 0), values=b"v11"):
    """build_records on two valid records, with the given columns overriding."""
    return build_records("t", 1, base_offset, offset_min, base_timestamp_ms, deltas,
                         key_lengths, keys, value_lengths, values)


# --- Building ---------------------------------------------------------------------

def test_records_are_cut_from_the_columns_with_offsets_and_timestamps():
    # Given two records, the first with key b"k1" and value b"v11", the second with a
    # null key and an empty value, 5 ms apart
    # When built from offset 100
    records = build()
    # Then each has its slice, offset and timestamp, and no headers
    assert records == [ConsumerRecord("t", 1, 100, b"k1", b"v11", [], T0_MS),
                       ConsumerRecord("t", 1, 101, None, b"", [], T0_MS + 5)]
    assert type(records[0].key) is bytes and records[1].key is None


def test_offset_min_skips_the_records_before_it_and_may_skip_them_all():
    assert build(offset_min=101) == [ConsumerRecord("t", 1, 101, None, b"", [], T0_MS + 5)]
    assert build(offset_min=102) == build(offset_min=2**63 - 1) == []
    assert build(offset_min=-(2**63)) == build(offset_min=100) == build()


def test_the_rules_the_shard_ran_are_not_run_again():
    # Given columns that break a rule but no bound: keys longer than their lengths say
    # When built / Then the records are read as the lengths say; the extra byte is unread
    assert [r.key for r in build(key_lengths=i32(1, -1))] == [b"k", None]


def test_the_largest_timestamp_that_fits_is_built():
    # Given a base timestamp 5 ms below the largest Int64, and a record 5 ms after it
    # When built / Then that record has the largest Int64 timestamp
    assert build(base_timestamp_ms=INT64_MAX - 5)[1].timestamp_ms == INT64_MAX


@pytest.mark.parametrize(("columns", "message"), [
    (dict(key_lengths=i32(2, 1)), "key of record 1 (1 bytes at 2) runs past the 2 bytes"),
    (dict(key_lengths=i32(0x7FFF_FFFF, -1)), "runs past"),
    (dict(value_lengths=i32(3, -2)), "value length of record 1 is -2, must be >= -1"),
    (dict(key_lengths=i32(2)), "must be equal multiples of 4"),
    (dict(deltas=b"\x00" * 7, key_lengths=b"\x00" * 7, value_lengths=b"\x00" * 7),
     "must be equal multiples of 4"),
    (dict(base_offset=INT64_MAX - 1), "overflows Int64"),
    (dict(base_offset=-1), "overflows Int64"),
    (dict(base_timestamp_ms=INT64_MAX - 4),
     f"timestamp of record 1 (base {INT64_MAX - 4} ms . delta 5 ms) overflows Int64"),
])
def test_columns_that_break_a_bound_are_refused_naming_it(columns, message):
    # Given columns that would make a slice or a number go out of bounds
    # When built / Then ValueError says what is wrong, and no record is made
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(**columns)


lengths_strategy = st.lists(st.integers(-1, 6), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(key_lengths=lengths_strategy, data=st.data())
def test_any_valid_columns_build_what_a_plain_python_reading_gives(key_lengths, data):
    # Given valid columns of any shape
    count = len(key_lengths)
    value_lengths = data.draw(st.lists(st.integers(-1, 40), min_size=count, max_size=count))
    keys = data.draw(st.binary(min_size=sum(max(n, 0) for n in key_lengths),
                               max_size=sum(max(n, 0) for n in key_lengths)))
    values = bytes(range(256)) * 2
    values = values[:sum(max(n, 0) for n in value_lengths)]
    deltas = data.draw(st.lists(st.integers(0, 0xFFFF_FFFF), min_size=count, max_size=count))
    offset_min = data.draw(st.integers(0, count + 10))
    args = ("t", 2, 7, offset_min, T0_MS, u32(*deltas), i32(*key_lengths), keys,
            i32(*value_lengths), values)
    # When built / Then the records are those of the reference reading
    assert build_records(*args) == reference_records(*args)


@settings(max_examples=1000, deadline=None)
@given(deltas=st.binary(max_size=24), key_lengths=st.binary(max_size=24),
       keys=st.binary(max_size=24), value_lengths=st.binary(max_size=24),
       values=st.binary(max_size=24), offset_min=st.integers(-2, 8),
       base_offset=st.sampled_from([0, 5, INT64_MAX - 3, INT64_MAX, -1]),
       base_timestamp_ms=st.sampled_from([0, -T0_MS, T0_MS, INT64_MAX - 0xFFFF_FFFF,
                                          INT64_MAX - 0xFFFF_FFFE, INT64_MAX]))
def test_any_bytes_as_columns_give_the_reference_records_or_value_error(
        deltas, key_lengths, keys, value_lengths, values, offset_min, base_offset,
        base_timestamp_ms):
    # Given arbitrary column bytes, as a corrupt batch or a hostile client could send
    args = ("t", 0, base_offset, offset_min, base_timestamp_ms, deltas, key_lengths, keys,
            value_lengths, values)
    expected = reference_records(*args)
    # When built / Then ValueError exactly where the reference refuses, else its records
    if expected is None:
        with pytest.raises(ValueError):
            build_records(*args)
    else:
        assert build_records(*args) == expected


def test_columns_may_be_any_buffer_such_as_memoryviews():
    records = build(key_lengths=memoryview(i32(2, -1)), keys=memoryview(b"k1"),
                    values=bytearray(b"v11"))
    assert [(r.key, r.value) for r in records] == [(b"k1", b"v11"), (None, b"")]


# --- ConsumerRecord ----------------------------------------------------------------

def test_a_record_is_made_by_keyword_too_and_its_fields_can_be_replaced():
    # Given a record made with keywords
    record = ConsumerRecord(topic="t", partition=0, offset=5, key=b"k", value=b"1",
                            headers=[], timestamp_ms=T0_MS)
    # When a deserializer replaces key and value, and the application adds a header
    record.key, record.value = "k", {"n": 1}
    record.headers.append(("h", b"v"))
    # Then the record shows them; a field cannot be deleted, a new one cannot be added
    assert (record.key, record.value, record.headers) == ("k", {"n": 1}, [("h", b"v")])
    with pytest.raises(AttributeError):
        del record.key
    with pytest.raises(AttributeError):
        record.extra = 1


def test_a_record_pickles_and_is_unhashable_like_any_record_with_a_list():
    record = ConsumerRecord("t", 3, 2**40, None, b"v", [("h", b"")], T0_MS)
    assert pickle.loads(pickle.dumps(record)) == record
    with pytest.raises(TypeError):
        hash(record)


def test_offset_and_timestamp_must_be_integers():
    with pytest.raises(TypeError):
        ConsumerRecord("t", 0, "5", None, None, [], T0_MS)
    record = ConsumerRecord("t", 0, 5, None, None, [], T0_MS)
    with pytest.raises(TypeError):
        record.offset = 1.5


def test_built_records_are_left_out_of_the_cyclic_gc_until_they_hold_a_container():
    # Given records as a fetch builds them: only bytes, str, int and None inside
    first, second, _ = build_records("t", 0, 0, 0, T0_MS, u32(0, 0, 0), i32(1, 1, 1), b"abc",
                                     i32(-1, -1, -1), b"")
    # Then the collector does not track them (they cannot be part of a cycle)
    assert not gc.is_tracked(first) and not gc.is_tracked(second)
    # When one's headers are read and the other's value is deserialized to a dict
    first.headers
    second.value = {"a": 1}
    # Then both are tracked from then on
    assert gc.is_tracked(first) and gc.is_tracked(second)


def test_a_record_in_a_reference_cycle_is_collected():
    # Given a built record whose headers list holds the record itself, and an object
    # that tells when it is freed
    freed = []

    class Witness:
        def __del__(self):
            freed.append(True)

    (record,) = build_records("t", 0, 0, 0, T0_MS, u32(0), i32(-1), b"", i32(-1), b"")
    record.headers.extend([("self", record), ("witness", Witness())])
    # When the last outside reference goes and the collector runs
    del record
    gc.collect()
    # Then the cycle was found and freed
    assert freed == [True]
