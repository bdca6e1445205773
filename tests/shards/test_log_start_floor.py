"""The log start floor file (shards/log_start_floor.py): written whole and read back,
and every torn or flipped file recovered as a lost floor, named, never believed."""

from __future__ import annotations

import pytest

from plinth.errors import CorruptDataError
from plinth.shards.log_start_floor import (
    CORRUPT_SUFFIX, FLOOR_FILE, FLOOR_FILE_BYTES, FLOOR_LOADED, FLOOR_LOST, FLOOR_NONE,
    floor_bytes, load_floor, parse_floor, save_floor)


def test_a_saved_floor_is_read_back_exactly(tmp_path):
    # Given a floor saved in a partition's directory
    save_floor(tmp_path, 123_456_789_012)
    # When it is loaded
    loaded = load_floor(tmp_path)
    # Then it is that floor, from a whole file of 20 bytes
    assert (loaded.floor, loaded.outcome) == (123_456_789_012, FLOOR_LOADED)
    assert (tmp_path / FLOOR_FILE).stat().st_size == FLOOR_FILE_BYTES == 20


def test_the_file_is_laid_out_as_the_module_says(tmp_path):
    data = floor_bytes(7)
    assert data[:4] == b"PLSF" and data[4:6] == b"\x00\x01" and data[6:8] == b"\x00\x00"
    assert int.from_bytes(data[8:16], "big") == 7
    import crc32c
    assert int.from_bytes(data[16:20], "big") == crc32c.crc32c(data[:16])


def test_a_directory_without_the_file_has_floor_zero(tmp_path):
    assert load_floor(tmp_path) == (0, FLOOR_NONE, "")


def test_saving_again_replaces_the_floor(tmp_path):
    save_floor(tmp_path, 5)
    save_floor(tmp_path, 9)
    assert load_floor(tmp_path).floor == 9
    assert not (tmp_path / (FLOOR_FILE + ".tmp")).exists()


@pytest.mark.parametrize("cut_bytes", range(1, FLOOR_FILE_BYTES + 1))
def test_every_torn_file_is_a_lost_floor_and_is_kept_aside(tmp_path, cut_bytes):
    # Given a floor file torn at any length
    save_floor(tmp_path, 1000)
    path = tmp_path / FLOOR_FILE
    torn = path.read_bytes()[:-cut_bytes]
    path.write_bytes(torn)
    # When it is loaded
    loaded = load_floor(tmp_path)
    # Then the floor is lost (not 0 believed), the reason names the file, and the bad
    # bytes are kept beside it for the operator
    assert loaded.outcome == FLOOR_LOST and str(path) in loaded.reason
    assert not path.exists()
    assert (tmp_path / (FLOOR_FILE + CORRUPT_SUFFIX)).read_bytes() == torn


@pytest.mark.parametrize("bit", range(FLOOR_FILE_BYTES * 8))
def test_every_single_bit_flip_is_refused(tmp_path, bit):
    data = bytearray(floor_bytes(1000))
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptDataError, match="log start floor"):
        parse_floor(bytes(data), tmp_path / FLOOR_FILE)


def test_a_negative_floor_is_a_programmer_error():
    with pytest.raises(AssertionError):
        floor_bytes(-1)
