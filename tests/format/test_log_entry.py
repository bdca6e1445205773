"""The log entry frame (format/log_entry.py) against schemas/log_entry.capnp."""

import struct
import subprocess
import sys

import crc32c
import pytest

from plinth.errors import CorruptDataError
from plinth.limits import BATCH_BYTES_MAX
from plinth.schemas import log_entry as log_entry_schema
from plinth.format.log_entry import (
    BATCH_FORMAT_KAFKA_V2, BATCH_FORMAT_PLINTH, LOG_ENTRY_HEADER_BYTES, MAGIC_BYTES, LogEntryHeader,
    build_entry_header, entry_crc,
    iter_entries, pack_entry_header, unpack_entry_header)


def make_entry(base_offset, batch, record_count=3, max_timestamp_ms=1_700_000_000_000):
    return build_entry_header(base_offset, max_timestamp_ms, record_count, batch) + batch


def make_run(batches, record_count=3):
    offset, run = 0, b""
    for batch in batches:
        run += make_entry(offset, batch, record_count)
        offset += record_count
    return run


def test_a_hand_packed_header_parses_with_pycapnp_to_the_same_field_values():
    # Given a header packed by hand
    header_bytes = pack_entry_header(base_offset=2**40 + 7, max_timestamp_ms=-5, batch_bytes=1234,
                                     record_count=99, crc=0xDEADBEEF, attributes=0)
    # When pycapnp reads it as a LogEntryHeader message
    with log_entry_schema.LogEntryHeader.from_bytes(header_bytes) as message:
        fields = (message.baseOffset, message.maxTimestampMs, message.batchBytes,
                  message.recordCount, message.crc, message.attributes)
    # Then it sees the same values
    assert len(header_bytes) == LOG_ENTRY_HEADER_BYTES == 48
    assert fields == (2**40 + 7, -5, 1234, 99, 0xDEADBEEF, 0)


def test_pycapnp_serializes_the_same_48_bytes_as_the_hand_packer():
    # Given the same fields built by pycapnp and packed by hand
    message = log_entry_schema.LogEntryHeader.new_message(
        baseOffset=42, maxTimestampMs=1_700_000_000_123, batchBytes=10, recordCount=2,
        crc=0x01020304, attributes=0)
    # When both are serialized / Then the bytes are identical
    assert message.to_bytes() == pack_entry_header(42, 1_700_000_000_123, 10, 2, 0x01020304)


def test_the_first_16_bytes_are_the_constant_magic():
    # Given two headers with different fields / Then both start with the magic
    for header_bytes in (pack_entry_header(0, 0, 0, 1, 0), pack_entry_header(9, 9, 9, 9, 9)):
        assert header_bytes[:16] == MAGIC_BYTES == struct.pack("<IIQ", 0, 5, 0x0000000400000000)


def test_unpack_returns_the_fields_that_were_packed():
    # Given a header packed at position 5 of a buffer
    buf = b"xxxxx" + pack_entry_header(17, 1234, 100, 8, 0xABCD) + b"yyy"
    # When it is unpacked / Then every field comes back
    header = unpack_entry_header(buf, 5)
    assert header == LogEntryHeader(17, 1234, 100, 8, 0xABCD, 0)
    assert header.entry_bytes == 148 and header.end_offset == 25


def test_a_wrong_magic_raises_corrupt_data_error_naming_the_position():
    # Given a header whose magic has one byte changed
    buf = bytearray(b"\0" * 10 + pack_entry_header(1, 2, 3, 4, 5))
    buf[10 + 4] ^= 0x01
    # When it is unpacked / Then it is rejected with its position
    with pytest.raises(CorruptDataError, match="bad entry magic at position 10"):
        unpack_entry_header(buf, 10)


def test_a_header_declaring_an_oversized_batch_or_no_records_is_rejected():
    # Given headers with lengths no shard writes / Then unpacking refuses to trust them
    with pytest.raises(CorruptDataError, match=f"batch_bytes {BATCH_BYTES_MAX + 1}"):
        unpack_entry_header(pack_entry_header(0, 0, BATCH_BYTES_MAX + 1, 1, 0))
    with pytest.raises(CorruptDataError, match="record_count 0"):
        unpack_entry_header(pack_entry_header(0, 0, 10, 0, 0))


def test_a_short_buffer_raises_corrupt_data_error_with_the_bytes_left():
    with pytest.raises(CorruptDataError, match="30 bytes left, need 48"):
        unpack_entry_header(pack_entry_header(0, 0, 0, 1, 0)[:30])


def test_the_crc_is_crc32c_of_header_bytes_16_to_40_then_the_batch():
    # Given an entry
    batch = bytes(range(256)) * 3
    entry = make_entry(1000, batch, record_count=7, max_timestamp_ms=55)
    # When its CRC is recomputed in one piece from the raw bytes
    crc_expected = crc32c.crc32c(entry[16:40] + batch)
    # Then it matches the header and entry_crc
    assert unpack_entry_header(entry).crc == crc_expected
    assert entry_crc(1000, 55, len(batch), 7, batch) == crc_expected


def test_the_crc_changes_with_every_covered_field():
    base = entry_crc(1, 2, 3, 4, b"abc")
    assert len({base, entry_crc(9, 2, 3, 4, b"abc"), entry_crc(1, 9, 3, 4, b"abc"),
                entry_crc(1, 2, 9, 4, b"abc"), entry_crc(1, 2, 3, 9, b"abc"),
                entry_crc(1, 2, 3, 4, b"abd")}) == 6


def test_iter_entries_yields_every_entry_of_a_run_with_its_batch():
    # Given a run of three entries
    batches = [b"a" * 10, b"", b"c" * 1000]
    run = make_run(batches)
    # When it is walked
    entries = list(iter_entries(run))
    # Then each header and batch comes back, in order
    assert [header.base_offset for header, _ in entries] == [0, 3, 6]
    assert [bytes(batch) for _, batch in entries] == batches


def test_iter_entries_of_an_empty_payload_yields_nothing():
    assert list(iter_entries(b"")) == []


def test_iter_entries_raises_on_a_crc_mismatch_with_the_position():
    # Given a run whose second batch has a flipped bit
    run = bytearray(make_run([b"a" * 10, b"b" * 10]))
    second_position = LOG_ENTRY_HEADER_BYTES + 10
    run[second_position + LOG_ENTRY_HEADER_BYTES + 3] ^= 0x10
    # When it is walked / Then the first entry comes out and the second raises
    walk = iter_entries(run)
    assert next(walk)[0].base_offset == 0
    with pytest.raises(CorruptDataError, match=f"CRC mismatch in entry at position {second_position}"):
        next(walk)


def test_iter_entries_without_crc_checking_accepts_a_flipped_batch_byte():
    run = bytearray(make_run([b"a" * 10]))
    run[-1] ^= 0xFF
    assert len(list(iter_entries(run, verify_crc=False))) == 1


def test_iter_entries_raises_on_a_run_cut_anywhere_inside_its_last_entry():
    # Given a run of two entries
    run = make_run([b"a" * 20, b"b" * 20])
    last_position = LOG_ENTRY_HEADER_BYTES + 20
    # When it is cut at every byte inside the last entry / Then the walk raises at that entry
    for cut in range(last_position + 1, len(run)):
        with pytest.raises(CorruptDataError, match=f"position {last_position}"):
            list(iter_entries(run[:cut]))


def test_the_module_imports_neither_ray_nor_zmq():
    # Given a fresh interpreter / When the client-side module is imported
    code = ("import sys, plinth.format.log_entry; "
            "sys.exit(1 if {'ray', 'zmq'} & set(sys.modules) else 0)")
    # Then neither ray nor zmq was loaded
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- The batch format in attributes ------------------------------------------

def test_a_kafka_entry_names_its_format_in_attributes_and_reads_back():
    batch = b"kafka batch bytes"
    entry = build_entry_header(7, 1_700_000_000_000, 3, batch, BATCH_FORMAT_KAFKA_V2) + batch
    [(header, read_batch)] = list(iter_entries(entry))
    assert header.attributes == BATCH_FORMAT_KAFKA_V2
    assert bytes(read_batch) == batch


def test_the_crc_of_a_kafka_entry_covers_its_attributes_after_bytes_16_to_40():
    batch = b"kafka batch bytes"
    header = unpack_entry_header(build_entry_header(7, 123, 3, batch, BATCH_FORMAT_KAFKA_V2))
    fields = struct.pack("<qqII", 7, 123, len(batch), 3)
    expected = crc32c.crc32c(batch, crc32c.crc32c(struct.pack("<I", 2), crc32c.crc32c(fields)))
    assert header.crc == expected


def test_a_plinth_entry_keeps_the_crc_it_had_before_attributes_named_a_format():
    batch = b"plinth batch bytes"
    header = unpack_entry_header(build_entry_header(7, 123, 3, batch))
    assert header.attributes == BATCH_FORMAT_PLINTH
    assert header.crc == crc32c.crc32c(batch, crc32c.crc32c(struct.pack("<qqII", 7, 123,
                                                                        len(batch), 3)))


@pytest.mark.parametrize("written, flipped", [(BATCH_FORMAT_PLINTH, BATCH_FORMAT_KAFKA_V2),
                                              (BATCH_FORMAT_KAFKA_V2, BATCH_FORMAT_PLINTH)])
def test_an_entry_whose_format_was_flipped_to_the_other_known_one_fails_its_crc(written,
                                                                                 flipped):
    batch = b"some batch"
    entry = bytearray(build_entry_header(0, 123, 3, batch, written) + batch)
    struct.pack_into("<I", entry, 44, flipped)
    with pytest.raises(CorruptDataError, match="CRC mismatch"):
        list(iter_entries(entry))


def test_attributes_that_name_no_batch_format_are_corruption_naming_the_position():
    batch = b"some batch"
    entry = bytearray(build_entry_header(0, 123, 3, batch) + batch)
    struct.pack_into("<I", entry, 44, 0x10)
    with pytest.raises(CorruptDataError, match=r"position 100 has attributes 0x00000010, which "
                                               r"names no batch format"):
        unpack_entry_header(entry, 0, position_base=100)


def test_records_from_counts_the_records_of_a_fetch_answer_from_the_offset_asked():
    from plinth.format.log_entry import records_from

    # Given a run of three entries of 3 records each: offsets 0..8
    run = make_run([b"a" * 10, b"b" * 20, b"c" * 5])
    # Then from its start all 9 are handed out, from the middle of the first entry 9 - 2
    assert records_from(run, 0) == 9
    assert records_from(run, 2) == 7
    # And a run starting after the offset asked (a gap) counts from its first entry
    assert records_from(make_entry(10, b"x", record_count=4), 6) == 4
    assert records_from(b"", 5) == 0
