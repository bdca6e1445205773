"""The open files of a shard's rolled segments (shards/segment_files.py), with real
segments on a real disk: at most open_max stay open, least recently read closed first,
and a closed one reopens when it is read."""

from __future__ import annotations

import os

import pytest

from plinth.errors import StorageError
from plinth.format.log_entry import iter_entries
from plinth.shards.segment import Segment
from plinth.shards.segment_files import SegmentFiles

INDEX_INTERVAL_BYTES = 256


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def rolled_segments(directory, count: int, files: SegmentFiles) -> list[Segment]:
    """``count`` segments of three 1-record entries each, rolled into ``files`` in order."""
    segments = []
    for number in range(count):
        segment = Segment.create(directory, 3 * number, index_interval_bytes=INDEX_INTERVAL_BYTES,
                                 created_ms=0)
        for offset in range(3 * number, 3 * number + 3):
            segment.append(offset, 1_000 + offset, 1, b"value %d" % offset)
        segment.retire(files)
        segments.append(segment)
    return segments


def first_value(segment: Segment) -> bytes:
    [(header, batch)] = list(iter_entries(segment.read_entries(segment.base_offset, 1,
                                                               segment.base_offset + 1)))
    return bytes(batch)


def test_rolling_more_segments_than_the_bound_keeps_only_the_most_recent_open(tmp_path):
    # Given a cache of 4 files and 10 segments rolled into it
    files = SegmentFiles(open_max=4)
    segments = rolled_segments(tmp_path, 10, files)
    # Then only the last 4 rolled have their file open
    assert [segment.is_file_open for segment in segments] == [False] * 6 + [True] * 4
    assert len(files) == 4


def test_reading_a_closed_segment_reopens_it_and_closes_the_least_recently_read(tmp_path):
    # Given a cache of 3 files, holding segments 7, 8, 9 of 10
    files = SegmentFiles(open_max=3)
    segments = rolled_segments(tmp_path, 10, files)
    # When segment 8 is read, then segment 0
    assert first_value(segments[8]) == b"value 24"
    descriptors = open_descriptors()
    assert first_value(segments[0]) == b"value 0"
    # Then segment 0 is open in place of 7, the least recently read; no descriptor more
    assert [n for n, segment in enumerate(segments) if segment.is_file_open] == [0, 8, 9]
    assert open_descriptors() == descriptors


def test_every_segment_reads_back_through_a_cache_of_one_file(tmp_path):
    # Given 20 segments through a cache of a single file
    files = SegmentFiles(open_max=1)
    segments = rolled_segments(tmp_path, 20, files)
    descriptors = open_descriptors()
    # When each is read twice, in an order that closes it in between
    for _ in range(2):
        for number, segment in enumerate(segments):
            assert first_value(segment) == b"value %d" % (3 * number)
            assert segment.end_offset == 3 * number + 3 and segment.max_timestamp_ms == 1_002 + 3 * number
    # Then one file was open at any time
    assert open_descriptors() == descriptors and len(files) == 1


def test_an_unopened_segment_opens_and_loads_its_indexes_on_its_first_read(tmp_path):
    # Given a closed segment of 40 entries, then known only by its name, size and mtime
    segment = Segment.create(tmp_path, 100, index_interval_bytes=INDEX_INTERVAL_BYTES, created_ms=0)
    for offset in range(100, 140):
        segment.append(offset, 5_000 + offset, 1, b"x" * 100)
    segment.close()
    files = SegmentFiles(open_max=2)
    unopened = Segment.unopened(tmp_path, 100, index_interval_bytes=INDEX_INTERVAL_BYTES,
                                size_bytes=segment.size_bytes, modified_ms=7, files=files)
    assert not unopened.is_file_open and len(files) == 0
    assert (unopened.size_bytes, unopened.last_written_ms) == (segment.size_bytes, 7)
    # When its end offset is asked for / Then its file is opened and its indexes loaded
    assert unopened.end_offset == 140 and unopened.max_timestamp_ms == 5_139
    assert unopened.is_file_open and len(files) == 1
    assert first_value(unopened) == b"x" * 100


def test_a_segment_closed_or_deleted_leaves_the_cache(tmp_path):
    files = SegmentFiles(open_max=5)
    first, second = rolled_segments(tmp_path, 2, files)
    first.close()
    second.delete()
    assert len(files) == 0 and not first.is_file_open
    assert not second.log_path.exists()


def test_a_segment_whose_file_is_gone_raises_a_storage_error_naming_it_and_stays_closed(tmp_path):
    # Given a rolled segment closed by the cache, whose file is then removed
    files = SegmentFiles(open_max=1)
    first, _second = rolled_segments(tmp_path, 2, files)
    first.log_path.unlink()
    # When it is read / Then StorageError names the file, and nothing is left open
    with pytest.raises(StorageError, match=str(first.log_path)):
        first.read_entries(0, 100, 3)
    assert not first.is_file_open and len(files) == 1


def test_a_cache_must_hold_at_least_one_file():
    with pytest.raises(AssertionError, match="at least 1"):
        SegmentFiles(open_max=0)
