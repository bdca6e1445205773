"""Hostile Kafka batches against format/kafka_batch.py: bit flips, truncations,
decompression bombs, lying counts and hypothesis-generated garbage. Each is refused
with a typed error or decoded, never anything else; and every batch is read from
the very end of a page whose next page is unreadable, so that a read past its last
byte crashes the test instead of passing unseen."""

import ctypes
import mmap
import signal
import subprocess
import sys

import cramjam
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from plinth import limits
from plinth.errors import CorruptDataError, InvalidBatchError
from plinth.format.kafka_batch import decode_kafka_records, summarize_kafka_batch
from tests.format.kafka_batches import (
    RECORDS_AT, T0_MS, kafka_python_batch, record, varint, with_records,
)

_LIBC = ctypes.CDLL(None, use_errno=True)
_PROT_NONE = 0


def at_page_end(data: bytes) -> memoryview:
    """data copied to end exactly where an unreadable (PROT_NONE) page begins."""
    pages = (len(data) + mmap.PAGESIZE - 1) // mmap.PAGESIZE + 1
    region = mmap.mmap(-1, pages * mmap.PAGESIZE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    guard_at = (pages - 1) * mmap.PAGESIZE
    assert _LIBC.mprotect(ctypes.c_void_p(address + guard_at), mmap.PAGESIZE, _PROT_NONE) == 0
    region[guard_at - len(data):guard_at] = data
    return memoryview(region)[guard_at - len(data):guard_at]


def test_the_guard_page_really_stops_a_read_past_the_batch():
    # Given a batch at a page's end, a read of the byte right after it, in a child
    # process: the child dies of SIGSEGV
    code = ("import ctypes, mmap\n"
            "from tests.format.test_kafka_batch_corruption import at_page_end\n"
            "view = at_page_end(b'abc')\n"
            "base = ctypes.addressof(ctypes.c_char.from_buffer(view.obj))\n"
            "ctypes.string_at(base + len(view.obj) - mmap.PAGESIZE, 1)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGSEGV, child.stderr.decode()[-500:]


def verdict(batch) -> str:
    """What summarize_kafka_batch says: "ok", or the typed error's name."""
    try:
        summarize_kafka_batch(batch)
    except (InvalidBatchError, CorruptDataError) as exc:
        return type(exc).__name__
    return "ok"


def small_batch(codec: int = 0) -> bytes:
    return kafka_python_batch([(b"key", b"value " * 6, T0_MS + i, [("h", b"x")])
                               for i in range(3)], codec=codec, producer_id=3,
                              producer_epoch=0, base_sequence=0)


# --- Flips and truncations -----------------------------------------------------------

def test_every_single_bit_flip_after_the_stamped_fields_is_refused():
    # Given a good batch: the shard overwrites baseOffset (0..8) and the leader epoch
    # (12..16), so a flip there changes nothing it keeps; any other flip must be caught.
    batch = small_batch()
    assert verdict(batch) == "ok"
    stamped = set(range(0, 8)) | set(range(12, 16))
    for position in sorted(set(range(len(batch))) - stamped):
        for bit in range(8):
            flipped = bytearray(batch)
            flipped[position] ^= 1 << bit
            # Then it is refused: the CRC, the magic or the batchLength
            assert verdict(at_page_end(bytes(flipped))) != "ok", (position, bit)


def test_a_batch_truncated_at_every_length_is_refused_by_the_shard():
    batch = small_batch()
    for size in range(len(batch)):
        assert verdict(at_page_end(batch[:size])) == "InvalidBatchError", size


@pytest.mark.parametrize("codec", range(5), ids=["none", "gzip", "snappy", "lz4", "zstd"])
def test_a_stored_batch_truncated_at_every_length_is_refused_by_the_consumer(codec):
    batch = small_batch(codec)
    for size in range(len(batch)):
        with pytest.raises(CorruptDataError):
            decode_kafka_records("t", 0, at_page_end(batch[:size]))


# --- Lying counts and bombs -----------------------------------------------------------

@pytest.mark.parametrize("count", [1, 3, 2**31 - 1], ids=["fewer", "more", "huge"])
def test_a_compressed_batch_whose_records_count_lies_is_refused_by_the_consumer(count):
    # Given two records, zstd-compressed, under a recordsCount that says otherwise
    records = bytes(cramjam.zstd.compress(record(0) + record(1)))
    batch = with_records(small_batch(), records, attributes=4, records_count=count,
                         last_offset_delta=count - 1)
    # Then the consumer refuses it, before building any list for the huge count
    with pytest.raises(CorruptDataError, match="bytes after its 1 records|hold at most 2$|"
                                               "recordsCount 2147483647, must be 1 to"):
        decode_kafka_records("t", 0, batch)


@pytest.mark.parametrize("codec, compress", [
    (1, cramjam.gzip.compress), (3, cramjam.lz4.compress), (4, cramjam.zstd.compress),
    (2, cramjam.snappy.compress_raw),
], ids=["gzip", "lz4", "zstd", "snappy"])
def test_a_decompression_bomb_is_refused_with_the_limit_in_the_message(codec, compress):
    # Given a batch whose records section decompresses to one byte over the limit
    limit = limits.KAFKA_BATCH_DECOMPRESSED_BYTES_MAX
    bomb = bytes(compress(bytes(limit + 1)))
    batch = with_records(small_batch(), bomb, attributes=codec)
    assert len(batch) < limit // 20
    # Then the shard takes it (it never decompresses), and the consumer refuses it
    assert verdict(batch) == "ok"
    with pytest.raises(CorruptDataError, match=f"{limit} bytes"):
        decode_kafka_records("t", 0, batch)


def test_a_batch_decompressing_to_exactly_the_limit_is_not_refused_for_its_size():
    # The refusal is for the size: a batch at the limit gets as far as its records.
    limit = limits.KAFKA_BATCH_DECOMPRESSED_BYTES_MAX
    batch = with_records(small_batch(), bytes(cramjam.zstd.compress(bytes(limit))),
                         attributes=4)
    with pytest.raises(CorruptDataError, match="record 0 .*length 0"):
        decode_kafka_records("t", 0, batch)


def test_a_snappy_framed_batch_over_the_limit_is_refused_before_decompressing():
    limit = limits.KAFKA_BATCH_DECOMPRESSED_BYTES_MAX
    block = bytes(cramjam.snappy.compress_raw(bytes(limit // 2 + 1)))
    framed = (b"\x82SNAPPY\x00" + (1).to_bytes(4, "big") * 2
              + (len(block).to_bytes(4, "big") + block) * 2)
    batch = with_records(small_batch(), framed, attributes=2)
    with pytest.raises(CorruptDataError, match=f"more than the limit of {limit} bytes"):
        decode_kafka_records("t", 0, batch)


# --- Garbage ---------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_are_refused_by_the_shard_and_the_consumer_without_a_crash(data):
    assert verdict(at_page_end(data)) in ("InvalidBatchError", "CorruptDataError", "ok")
    try:
        decode_kafka_records("t", 0, at_page_end(data))
    except CorruptDataError:
        pass


def varints(draw_values) -> bytes:
    return b"".join(varint(v) for v in draw_values)


# Records sections that look like records: varints of small and extreme numbers,
# mixed with raw bytes, so that the walk gets past its first fields.
RECORD_LIKE = st.lists(
    st.one_of(st.integers(-2, 40).map(varint), st.integers(-2**63, 2**63 - 1).map(varint),
              st.binary(max_size=8), st.just(record(0)), st.just(record(1))),
    max_size=12).map(b"".join)


@FUZZ
@given(records=RECORD_LIKE, count=st.integers(1, 4), attributes=st.sampled_from([0, 0, 4, 1]))
def test_sealed_garbage_records_are_refused_or_accepted_consistently_by_shard_and_consumer(
        records, count, attributes):
    # Given garbage records under a right header and CRC, so that the walks get to them
    body = bytes(cramjam.zstd.compress(records)) if attributes == 4 else (
        bytes(cramjam.gzip.compress(records)) if attributes == 1 else records)
    batch = at_page_end(with_records(small_batch(), body, attributes=attributes,
                                     records_count=count, last_offset_delta=count - 1,
                                     max_timestamp=T0_MS, base_timestamp=T0_MS))
    # Then the shard refuses it or summarizes it, and the consumer refuses it or decodes
    shard = verdict(batch)
    assert shard in ("InvalidBatchError", "ok")
    try:
        decoded = decode_kafka_records("t", 0, batch)
    except CorruptDataError:
        decoded = None
    # and an uncompressed batch the shard accepted always decodes, to its count
    if shard == "ok" and attributes == 0:
        assert decoded is not None and len(decoded) == count


@FUZZ
@given(position=st.integers(RECORDS_AT, 10_000), byte=st.integers(0, 255),
       codec=st.sampled_from([0, 4]))
def test_a_resealed_batch_with_one_byte_changed_never_crashes_either_side(position, byte, codec):
    good = small_batch(codec)
    changed = bytearray(good)
    changed[position % len(good)] = byte
    batch = at_page_end(with_records(good, bytes(changed[RECORDS_AT:])))
    shard = verdict(batch)
    try:
        decoded = decode_kafka_records("t", 0, batch)
    except CorruptDataError:
        decoded = None
    if shard == "ok" and codec == 0:
        assert decoded is not None and len(decoded) == 3
