"""Specification of the batch check in plinth.format._record_batch: the canonical
parser, and the rules of the schema that every parser's reading goes through.

Its contract is differential. For any bytes, the C parser (read_canonical) either
reads exactly the fields and columns pycapnp reads, or declines (None). Whichever
read them, the same C rules judge them, so summarize_batch gives the same summary,
or the same InvalidBatchError message, on the fast path and on pycapnp's path;
and decode_records gives the same records, or the same CorruptDataError, on both.
"""

import ctypes
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plinth import limits
from plinth.errors import CorruptDataError, InvalidBatchError
from plinth.format import record_batch
from plinth.format._record_batch import is_word_aligned, read_canonical, summarize
from plinth.format.record_batch import BatchBuilder, BatchSummary, summarize_batch
from plinth.schemas import record_batch as record_batch_schema

T0_MS = 1_700_000_000_000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# Byte offsets in the canonical layout (format/record_batch_layout.h's header comment).
SEGMENT_AT = 8
DATA_AT = SEGMENT_AT + 8
POINTERS_AT = DATA_AT + 32
HEADERS_POINTER_AT = POINTERS_AT + 5 * 8
BLOBS_AT = HEADERS_POINTER_AT + 8
DELTAS, KEY_LENGTHS, KEYS, VALUE_LENGTHS, VALUES = range(5)


def verdict(check, data) -> BatchSummary | str:
    """A summary, or the message of the InvalidBatchError ``check`` raised."""
    try:
        return check(data)
    except InvalidBatchError as exc:
        return f"rejected: {exc.message}"


def pycapnp_reading(data) -> tuple | None:
    """The fields and columns pycapnp reads, as read_canonical returns them; None if
    pycapnp cannot parse the bytes."""
    try:
        fields = record_batch._read_fields(data)
    except InvalidBatchError:
        return None
    return (fields.record_count, fields.base_timestamp_ms, fields.max_timestamp_ms,
            fields.producer_id, fields.base_sequence,
            [fields.timestamp_deltas_ms, fields.key_lengths, fields.keys, fields.value_lengths,
             fields.values])


def assert_agrees(data) -> BatchSummary | str | None:
    """The C parser declines or reads what pycapnp reads, and summarize_batch's verdict is
    the one pycapnp's path gives. Returns the verdict if the C parser read the batch,
    None if it declined; any other exception fails the test."""
    canonical = read_canonical(data)
    fast = verdict(summarize_batch, data)
    if canonical is None:
        return None
    *fields, spans = canonical
    assert all(start + length <= len(data) for start, length in spans)
    columns = [bytes(data[start:start + length]) for start, length in spans]
    assert pycapnp_reading(data) == (*fields, columns)
    assert verdict(record_batch._summarize_other_layout, data) == fast
    return fast


def build(records, producer_id=-1, base_sequence=-1) -> bytes:
    """records: (key, value, timestamp_ms) tuples."""
    builder = BatchBuilder()
    for key, value, timestamp_ms in records:
        builder.append(key, value, timestamp_ms)
    return builder.build(producer_id=producer_id, base_sequence=base_sequence)


def small_batch(record_count=3, producer_id=7, base_sequence=0) -> bytes:
    return build([(b"k%d" % i, b"v" * i, T0_MS + i % 2) for i in range(record_count)],
                 producer_id, base_sequence)


def pointer(data: bytes, column: int) -> tuple[int, int]:
    return struct.unpack_from("<II", data, POINTERS_AT + 8 * column)


def with_bytes(data: bytes, at: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


# --- Agreement with the pycapnp path --------------------------------------------

record_strategy = st.tuples(
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=200),
    st.integers(T0_MS - 10**6, T0_MS + 10**6),
)
producer_strategy = st.sampled_from([(-1, -1), (0, 0), (7, 12), (INT64_MAX, 2**31 - 1)])


@settings(max_examples=300, deadline=None)
@given(records=st.lists(record_strategy, min_size=1, max_size=40), producer=producer_strategy)
def test_every_batch_the_builder_writes_without_headers_takes_the_fast_path(records, producer):
    # Given any batch BatchBuilder encodes without headers
    data = build(records, *producer)
    # When checked by both paths / Then the C parser reads it, and both give one summary
    summary = assert_agrees(data)
    assert summary == BatchSummary(len(records), max(r[2] for r in records),
                                   min(r[2] for r in records), *producer)
    # And the same bytes at an odd address give the same summary
    assert summarize(memoryview(b"\x07" + data)[1:], limits.BATCH_RECORDS_MAX,
                     BatchSummary) == summary


def mutations(data: bytes, rng: random.Random):
    """Seeded corruptions of a valid batch, from single bits to rewritten fields."""
    size = len(data)
    yield "bit", _flip_bits(data, rng, rng.randint(1, 3))
    yield "byte", with_bytes(data, rng.randrange(size), "<B", rng.randrange(256))
    word_at = rng.randrange(size // 8) * 8
    yield "word", with_bytes(data, word_at, "<Q", rng.choice(
        [0, 2**64 - 1, rng.getrandbits(64), struct.unpack_from("<Q", data, word_at)[0] ^ 1 << 32]))
    yield "truncated", data[:rng.randrange(size)]
    yield "extended", data + bytes(8 * rng.randint(1, 3))
    field_at, fmt, values = rng.choice([
        (DATA_AT, "<I", [0, 1, 2, 3, 4, limits.BATCH_RECORDS_MAX + 1, 2**32 - 1]),
        (DATA_AT + 4, "<i", [0, -1, 1, -2, 2**31 - 1, -(2**31)]),          # baseSequence ^ -1
        (DATA_AT + 8, "<q", [T0_MS - 1, T0_MS + 1, INT64_MIN, INT64_MAX, 0]),
        (DATA_AT + 16, "<q", [T0_MS, T0_MS + 1, T0_MS + 2, INT64_MIN, INT64_MAX]),
        (DATA_AT + 24, "<q", [0, -1, 1, -2, INT64_MIN, INT64_MAX]),        # producerId ^ -1
    ])
    yield "field", with_bytes(data, field_at, fmt, rng.choice(values))
    column = rng.randrange(6)
    lower, upper = pointer(data, column) if column < 5 else (0, 0)
    yield "pointer", with_bytes(data, POINTERS_AT + 8 * column, "<II",
                                lower + 4 * rng.choice([-2, -1, 1, 2, 1 << 27]) & 0xFFFF_FFFF,
                                upper + 8 * rng.choice([-8, -4, -1, 0, 1, 4, 8]) & 0xFFFF_FFFF)


def _flip_bits(data: bytes, rng: random.Random, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        bit = rng.randrange(len(out) * 8)
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_mutated_batches_are_read_and_judged_as_pycapnp_reads_and_judges_them():
    # Given valid batches of several shapes, each corrupted thousands of seeded ways
    rng = random.Random(20261126)
    seeds = [small_batch(1), small_batch(3), small_batch(40, -1, -1),
             build([(None, None, T0_MS)]), build([(b"", b"", T0_MS), (None, b"x", T0_MS + 9)])]
    accepted_kinds, rejected_kinds = set(), set()
    for _ in range(800):
        for seed in seeds:
            for kind, data in mutations(seed, rng):
                # When both paths check it / Then the C parser declines or agrees
                outcome = assert_agrees(data)
                if isinstance(outcome, BatchSummary) and data != seed:
                    accepted_kinds.add(kind)
                elif isinstance(outcome, str):
                    rejected_kinds.add(kind)
    # And the fuzzer reached batches the C parser read and the rules accepted, and
    # batches it read that the rules refused (with the same message on both paths)
    assert {"field", "word"} <= accepted_kinds
    assert {"field", "word", "bit"} <= rejected_kinds


# --- Hostile and unusual shapes ---------------------------------------------------

def hostile_batches():
    data = small_batch(3)
    lower, upper = pointer(data, KEYS)
    yield "empty", b""
    yield "segment table only", struct.pack("<II", 0, 0)
    yield "two segments", with_bytes(data, 0, "<I", 1)
    yield "segment size one word short", with_bytes(data, 4, "<I", len(data) // 8 - 2)
    yield "segment size one word long", with_bytes(data, 4, "<I", len(data) // 8)
    yield "root pointer offset 1", with_bytes(data, SEGMENT_AT, "<I", 1 << 2)
    yield "root struct with 5 data words", with_bytes(data, SEGMENT_AT + 4, "<HH", 5, 6)
    yield "far root pointer", with_bytes(data, SEGMENT_AT, "<I", 2)
    yield "keys pointer past the segment", with_bytes(data, POINTERS_AT + 8 * KEYS, "<I",
                                                      lower + (len(data) << 2))
    yield "keys pointer with the sign bit of its offset", with_bytes(
        data, POINTERS_AT + 8 * KEYS, "<I", (1 << 29 | (lower >> 2)) << 2 | 1)
    yield "keys blob of 2^29 - 1 bytes", with_bytes(data, POINTERS_AT + 8 * KEYS + 4, "<I",
                                                    (2**29 - 1) << 3 | 2)
    yield "keys as a list of words", with_bytes(data, POINTERS_AT + 8 * KEYS + 4, "<I",
                                                upper & ~7 | 5)
    yield "keys as a far pointer", with_bytes(data, POINTERS_AT + 8 * KEYS, "<I", lower & ~3 | 2)
    yield "keys as a struct pointer", with_bytes(data, POINTERS_AT + 8 * KEYS, "<I", lower & ~3)
    yield "huge recordCount", with_bytes(data, DATA_AT, "<I", 2**32 - 1)
    yield "recordCount over the limit", with_bytes(data, DATA_AT, "<I",
                                                   limits.BATCH_RECORDS_MAX + 1)
    yield "maxTimestampMs below baseTimestampMs, their Int64 difference wrapping to 1",\
        with_bytes(data, DATA_AT + 8, "<qq", INT64_MAX, INT64_MIN)
    yield "recordCount 0 and empty columns", _empty_columns(with_bytes(data, DATA_AT, "<I", 0))
    yield "timestamps span all of Int64", with_bytes(data, DATA_AT + 8, "<qq",
                                                     INT64_MIN, INT64_MAX)
    yield "span 2^32 + 1, deltas to 1", with_bytes(data, DATA_AT + 8, "<qq",
                                                   T0_MS, T0_MS + 2**32 + 1)
    yield "headers pointer to a struct past the segment", with_bytes(
        data, HEADERS_POINTER_AT, "<II", 1 << 20 | 1, 7)
    for length in range(0, len(data), 8):
        yield f"truncated to {length} bytes", with_bytes(data[:length].ljust(8, b"\0"), 4, "<I",
                                                         max(0, length // 8 - 1))


def _empty_columns(data: bytes) -> bytes:
    """``data`` with its five blobs replaced by empty ones (null pointers), end to end."""
    for column in range(5):
        data = with_bytes(data, POINTERS_AT + 8 * column, "<Q", 0)
    return with_bytes(data[:BLOBS_AT], 4, "<I", BLOBS_AT // 8 - 1)


def other_layouts():
    """Valid to pycapnp, but not the layout the fast path reads."""
    data = small_batch(3)
    yield "root struct with 7 pointers (the 7th reads the first blob's word)", with_bytes(
        data, SEGMENT_AT + 4, "<HH", 4, 7)
    # keys (6 bytes: "k0k1k2") pointing back at their own pointer word, also 6+ bytes
    yield "keys pointer with a negative offset", with_bytes(
        data, POINTERS_AT + 8 * KEYS, "<I", (-1 & 0x3FFFFFFF) << 2 | 1)
    yield "a spare word after the last blob", with_bytes(data + bytes(8), 4, "<I", len(data) // 8)
    yield "headers as an empty list of void", with_bytes(data, HEADERS_POINTER_AT, "<II", 1, 0)


@pytest.mark.parametrize(("name", "data"), list(other_layouts()))
def test_other_layouts_are_left_to_pycapnp(name, data):
    # Given a batch pycapnp reads but not in the canonical layout / When checked
    # Then the C parser declines and pycapnp's reading is summarize_batch's answer
    assert read_canonical(data) is None
    assert summarize(data, limits.BATCH_RECORDS_MAX, BatchSummary) is None
    assert summarize_batch(data) == BatchSummary(3, T0_MS + 1, T0_MS, 7, 0)


def overlapping_blobs_batch() -> bytes:
    """keyLengths and valueLengths (both i32(2, 2)) share one blob, keys and values another."""
    message = record_batch_schema.RecordBatch.new_message(
        recordCount=2, baseTimestampMs=T0_MS, maxTimestampMs=T0_MS,
        timestampDeltasMs=struct.pack("<II", 0, 0), keyLengths=struct.pack("<ii", 2, 2),
        keys=b"abcd", valueLengths=struct.pack("<ii", 2, 2), values=b"abcd")
    data = message.to_bytes()
    # point valueLengths at keyLengths' blob and values at keys'
    for column, earlier in ((VALUE_LENGTHS, KEY_LENGTHS), (VALUES, KEYS)):
        earlier_target = POINTERS_AT + 8 * earlier + 8 + 8 * (pointer(data, earlier)[0] >> 2)
        offset_words = (earlier_target - (POINTERS_AT + 8 * column + 8)) // 8
        data = with_bytes(data, POINTERS_AT + 8 * column, "<I", offset_words << 2 | 1)
    return data


@pytest.mark.parametrize(("name", "data"), list(hostile_batches()))
def test_hostile_bytes_are_rejected_with_one_message_whichever_parser_reads_them(name, data):
    # Given bytes that break the canonical layout or a rule / When checked
    # Then summarize_batch raises InvalidBatchError, and if the C parser read the
    # bytes, pycapnp's path refuses them with the very same message
    with pytest.raises(InvalidBatchError):
        summarize_batch(data)
    outcome = assert_agrees(data)
    assert outcome is None or outcome.startswith("rejected: ")


def test_overlapping_blobs_are_left_to_pycapnp_which_reads_them():
    # Given a batch whose columns share blobs (legal Cap'n Proto, not canonical)
    data = overlapping_blobs_batch()
    # When checked / Then the C parser declines and pycapnp's reading is the answer
    assert read_canonical(data) is None
    assert summarize_batch(data) == BatchSummary(2, T0_MS, T0_MS, -1, -1)


def test_a_batch_with_headers_is_left_to_pycapnp():
    # Given a valid batch with headers / When checked / Then pycapnp's path answers
    builder = BatchBuilder()
    builder.append(b"k", b"v", T0_MS, [("h", b"1")])
    data = builder.build()
    assert read_canonical(data) is None
    assert summarize_batch(data) == BatchSummary(1, T0_MS, T0_MS, -1, -1)


def test_null_pointers_for_empty_blobs_are_read_as_pycapnp_reads_them():
    # Given a batch of null keys and values, whose empty blobs are null pointers
    data = build([(None, None, T0_MS), (None, None, T0_MS + 1)])
    null_blobs = data
    for column in (KEYS, VALUES):
        null_blobs = with_bytes(null_blobs, POINTERS_AT + 8 * column, "<Q", 0)
    # (an empty blob takes no words, so the others still lie end to end)
    # When checked / Then both paths agree, and the C parser reads it
    assert assert_agrees(null_blobs) == BatchSummary(2, T0_MS + 1, T0_MS, -1, -1)


def test_records_max_is_the_limit_passed_in():
    # Given a batch of 3 records / Then it passes a limit of 3, and a limit of 2
    # refuses it naming both numbers
    data = small_batch(3)
    assert summarize(data, 3, BatchSummary) is not None
    with pytest.raises(ValueError, match="recordCount 3, must be 1 to 2"):
        summarize(data, 2, BatchSummary)


def test_summarize_rejects_a_summary_type_that_is_not_a_tuple():
    # A programmer error, before any byte is read
    with pytest.raises(TypeError, match="tuple subclass"):
        summarize(small_batch(1), limits.BATCH_RECORDS_MAX, dict)


# --- Alignment ----------------------------------------------------------------------

def test_is_word_aligned_reports_the_address_modulo_8():
    # Given views at every offset of a buffer whose address is known
    buffer = (ctypes.c_char * 64)()
    address = ctypes.addressof(buffer)
    view = memoryview(buffer).cast("B")
    # When asked / Then only the views starting on a word boundary are aligned
    assert [is_word_aligned(view[offset:]) for offset in range(16)] == [
        (address + offset) % 8 == 0 for offset in range(16)]


def test_an_unaligned_batch_that_needs_pycapnp_is_copied_and_summarized():
    # Given a batch with headers at an odd address (capnp needs 8-byte alignment)
    # When summarized / Then the result is that of the aligned bytes
    builder = BatchBuilder()
    builder.append(b"k", b"v", T0_MS, [("h", b"1")])
    data = builder.build()
    frame = b"\x07" + data
    assert summarize_batch(memoryview(frame)[1:]) == summarize_batch(data)


# --- decode_records: the consumer's reading of both layouts ----------------------------

def decoded(decode, data, offset_min=101):
    """The records, or the message of the error, stored at offset 100 of t[0]."""
    try:
        return decode("t", 0, 100, data, offset_min)
    except (CorruptDataError, ValueError, InvalidBatchError) as exc:
        return f"refused: {exc}"


def assert_decodes_agree(data) -> bool:
    """For a batch the C parser reads, decode_records gives what pycapnp's path gives:
    the same records, or a refusal with the same reason. False if the parser declines."""
    if read_canonical(data) is None:
        return False
    canonical = decoded(record_batch.decode_records, data)
    other = decoded(record_batch._decode_other_layout, data)
    if isinstance(canonical, str):
        assert canonical.endswith(other.removeprefix("refused: "))
    else:
        assert canonical == other
    return True


@settings(max_examples=200, deadline=None)
@given(records=st.lists(record_strategy, min_size=1, max_size=40), producer=producer_strategy)
def test_the_consumer_decodes_every_builder_batch_as_pycapnps_path_does(records, producer):
    # Given any batch BatchBuilder encodes without headers / Then the C parser reads it
    # and decode_records gives exactly the pycapnp path's records
    assert assert_decodes_agree(build(records, *producer))


def test_mutated_batches_are_decoded_as_pycapnps_path_decodes_them_or_left_to_it():
    rng = random.Random(20261127)
    seeds = [small_batch(1), small_batch(3), build([(b"", b"", T0_MS), (None, b"x", T0_MS + 9)])]
    read = 0
    for _ in range(600):
        for seed in seeds:
            for _kind, data in mutations(seed, rng):
                read += assert_decodes_agree(data) and data != seed
    assert read > 100   # the fuzzer reached mutants the C parser reads, not only others


@pytest.mark.parametrize("name", ["truncated", "pointer past the end", "lengths over the blob"])
def test_hostile_batches_are_reported_corrupt_by_decode_records(name):
    data = small_batch(3)
    broken = {
        "truncated": data[:-8],
        "pointer past the end": with_bytes(data, POINTERS_AT + 8 * VALUES, "<II",
                                           pointer(data, VALUES)[0], (1 << 20) << 3 | 2),
        # keyLengths starts after the 12 delta bytes padded to 16; record 1's key length
        "lengths over the blob": with_bytes(data, BLOBS_AT + 16 + 4, "<i", 1000),
    }[name]
    with pytest.raises(CorruptDataError, match=r"batch at offset 100 of t\[0\] is corrupt"):
        record_batch.decode_records("t", 0, 100, broken)
