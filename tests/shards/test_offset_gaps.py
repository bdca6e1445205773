"""Specification of shards/offset_gaps.py: the file of a log's gaps made on purpose,
its layout field by field, and what a missing or damaged file reads as."""

from __future__ import annotations

import logging
import struct

import crc32c
import pytest

from plinth.shards.offset_gaps import GAPS_FILE, gaps_bytes, load_gaps, save_gaps


def test_the_file_is_magic_version_count_the_gaps_and_a_crc_of_all_before_it():
    data = gaps_bytes([(100, 250), (900, 1000)])
    assert data[:12] == b"PLGP" + struct.pack(">HHI", 1, 0, 2)
    assert struct.unpack(">qqqq", data[12:44]) == (100, 250, 900, 1000)
    assert struct.unpack(">I", data[44:]) == (crc32c.crc32c(data[:44]),) and len(data) == 48


def test_saved_gaps_load_back_and_an_empty_list_is_known_to_have_none(tmp_path):
    save_gaps(tmp_path, [(5, 10)])
    assert load_gaps(tmp_path) == [(5, 10)]
    save_gaps(tmp_path, [])
    assert load_gaps(tmp_path) == []


def test_no_file_is_gaps_not_known(tmp_path):
    assert load_gaps(tmp_path) is None


@pytest.mark.parametrize("damage", [
    lambda data: data[:-1],                                      # torn
    lambda data: data[:13] + bytes([data[13] ^ 0x40]) + data[14:],   # a flipped bit
    lambda data: b"PLGQ" + data[4:],                             # not the magic
    lambda data: b"",
])
def test_a_damaged_file_is_gaps_not_known_kept_aside_and_logged(tmp_path, caplog, damage):
    save_gaps(tmp_path, [(5, 10)])
    path = tmp_path / GAPS_FILE
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.ERROR, logger="plinth.shards.offset_gaps"):
        assert load_gaps(tmp_path) is None
    assert not path.exists() and (tmp_path / (GAPS_FILE + ".corrupt")).exists()
    assert f"{path} is not an offset-gaps file" in caplog.text


@pytest.mark.parametrize("gaps", [[(10, 10)], [(-1, 5)], [(10, 20), (15, 30)], [(30, 40), (0, 5)]])
def test_gaps_that_are_not_ordered_disjoint_ranges_are_a_programming_error(gaps):
    with pytest.raises(AssertionError, match="in order, not overlapping"):
        gaps_bytes(gaps)
