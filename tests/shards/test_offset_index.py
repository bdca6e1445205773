"""The sparse offset index (shards/offset_index.py)."""

import struct

import pytest

from plinth.errors import CorruptDataError
from plinth.shards.offset_index import OffsetIndex


def make_index(base_offset=1000, entries=((1010, 4096), (1025, 8200), (1040, 12400))):
    index = OffsetIndex(base_offset)
    for offset, position in entries:
        index.append(offset, position)
    return index


def test_lookup_returns_the_largest_entry_at_or_below_the_offset():
    # Given entries at offsets 1010, 1025, 1040
    index = make_index()
    # When offsets are looked up / Then the nearest entry at or below comes back
    assert index.lookup(1010) == (1010, 4096)
    assert index.lookup(1024) == (1010, 4096)
    assert index.lookup(1025) == (1025, 8200)
    assert index.lookup(10**9) == (1040, 12400)


def test_lookup_below_the_first_entry_returns_the_base_offset_at_position_0():
    assert make_index().lookup(1005) == (1000, 0)
    assert OffsetIndex(7).lookup(100) == (7, 0)


def test_appending_an_offset_or_position_that_does_not_grow_fails_loudly():
    index = make_index()
    with pytest.raises(AssertionError, match="not larger than the last entry"):
        index.append(1040, 20000)
    with pytest.raises(AssertionError, match="not larger than the last entry"):
        index.append(1050, 12400)


def test_an_offset_beyond_uint32_from_the_base_fails_loudly():
    with pytest.raises(AssertionError, match="does not fit a UInt32"):
        OffsetIndex(0).append(2**32, 10)


def test_the_file_is_8_byte_little_endian_entries_of_relative_offset_and_position(tmp_path):
    # Given an index / When written
    path = tmp_path / "00000000000000001000.index"
    make_index().write(path)
    # Then the file holds (offset - base, position) as two UInt32 each
    assert path.read_bytes() == struct.pack("<IIIIII", 10, 4096, 25, 8200, 40, 12400)
    assert not (tmp_path / "00000000000000001000.index.tmp").exists()


def test_an_index_written_and_loaded_looks_up_the_same(tmp_path):
    # Given a written index
    path = tmp_path / "x.index"
    make_index().write(path)
    # When loaded / Then it answers as the original
    loaded = OffsetIndex.load(path, 1000)
    assert len(loaded) == 3
    assert [loaded.lookup(o) for o in (999, 1010, 1030, 2000)] == \
        [(1000, 0), (1010, 4096), (1025, 8200), (1040, 12400)]


def test_an_empty_index_round_trips(tmp_path):
    path = tmp_path / "empty.index"
    OffsetIndex(5).write(path)
    assert path.read_bytes() == b"" and len(OffsetIndex.load(path, 5)) == 0


def test_loading_a_file_whose_size_is_not_a_multiple_of_8_is_rejected(tmp_path):
    path = tmp_path / "bad.index"
    path.write_bytes(b"\0" * 12)
    with pytest.raises(CorruptDataError, match=f"{path} is 12 bytes, not a multiple of 8"):
        OffsetIndex.load(path, 0)


def test_loading_a_file_with_non_increasing_entries_is_rejected(tmp_path):
    # Given files whose offsets, then positions, go backwards at entry 2
    for rows, column in (((1, 10, 5, 20, 4, 30), "relative offset 4"),
                         ((1, 10, 5, 20, 6, 20), "position 20")):
        path = tmp_path / "bad.index"
        path.write_bytes(struct.pack("<6I", *rows))
        # When loaded / Then the error names the entry
        with pytest.raises(CorruptDataError, match=f"entry 2 has {column}"):
            OffsetIndex.load(path, 0)
