"""The sparse time index (shards/time_index.py)."""

import struct

import pytest

from plinth.errors import CorruptDataError
from plinth.shards.time_index import TimeIndex


def make_index(base_offset=100, entries=((5000, 110), (7000, 130), (9000, 150))):
    index = TimeIndex(base_offset)
    for timestamp_ms, offset in entries:
        index.append(timestamp_ms, offset)
    return index


def test_an_entry_is_added_only_when_the_timestamp_grows():
    # Given an index with one entry
    index = make_index(entries=((5000, 110),))
    # When entries with an equal, smaller and larger timestamp are offered
    added = [index.append(5000, 120), index.append(4000, 130), index.append(6000, 140)]
    # Then only the larger one is kept
    assert added == [False, False, True]
    assert len(index) == 2 and index.last_entry == (6000, 140)


def test_lookup_returns_the_offset_of_the_last_entry_with_a_smaller_timestamp():
    # Given entries (5000, 110), (7000, 130), (9000, 150)
    index = make_index()
    # When timestamps are looked up / Then the scan starts after every too-early entry
    assert index.lookup(5001) == 110
    assert index.lookup(7000) == 110   # an entry before 130 may already reach 7000
    assert index.lookup(7001) == 130
    assert index.lookup(10**12) == 150


def test_lookup_at_or_below_the_first_timestamp_returns_the_base_offset():
    assert make_index().lookup(5000) == 100
    assert make_index().lookup(-(2**63)) == 100
    assert TimeIndex(3).lookup(0) == 3


def test_an_offset_that_does_not_grow_fails_loudly():
    with pytest.raises(AssertionError, match="not larger than the last offset"):
        make_index().append(10_000, 150)


def test_the_file_is_12_byte_little_endian_entries_of_timestamp_and_relative_offset(tmp_path):
    # Given an index with a negative and a large timestamp / When written
    path = tmp_path / "00000000000000000100.timeindex"
    make_index(entries=((-5, 101), (2**62, 2**32 + 99))).write(path)
    # Then each entry is an Int64 timestamp then a UInt32 offset - base
    assert path.read_bytes() == struct.pack("<qIqI", -5, 1, 2**62, 2**32 - 1)


def test_an_index_written_and_loaded_looks_up_the_same(tmp_path):
    path = tmp_path / "x.timeindex"
    make_index().write(path)
    loaded = TimeIndex.load(path, 100)
    assert len(loaded) == 3 and loaded.last_entry == (9000, 150)
    assert [loaded.lookup(t) for t in (0, 6000, 8000, 9999)] == [100, 110, 130, 150]


def test_loading_a_file_whose_size_is_not_a_multiple_of_12_is_rejected(tmp_path):
    path = tmp_path / "bad.timeindex"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(CorruptDataError, match=f"{path} is 16 bytes, not a multiple of 12"):
        TimeIndex.load(path, 0)


def test_loading_a_file_with_non_increasing_entries_is_rejected(tmp_path):
    for rows, column in (((1, 1, 3, 2, 2, 3), "timestamp_ms 2"),
                         ((1, 1, 3, 2, 4, 2), "relative offset 2")):
        path = tmp_path / "bad.timeindex"
        path.write_bytes(struct.pack("<qIqIqI", *rows))
        with pytest.raises(CorruptDataError, match=f"entry 2 has {column}"):
            TimeIndex.load(path, 0)


def test_first_reaching_is_the_first_entry_at_or_after_a_time_and_survives_a_copy():
    # Given entries (100 ms, 10), (200 ms, 20), read back from its bytes as a remote copy is
    index = TimeIndex(0)
    index.append(100, 10)
    index.append(200, 20)
    copy = TimeIndex.from_bytes(index.to_bytes(), 0, "s3://b/t.timeindex")
    # Then the first entry at or after a time is found, and none past the last
    assert [copy.first_reaching(ms) for ms in (0, 100, 150, 200, 201)] == [10, 10, 20, 20, None]
