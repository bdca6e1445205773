"""A segment: .log + .index + .timeindex (shards/segment.py)."""

import logging
import os
import random
import time

import pytest

from plinth.errors import CorruptDataError, StorageError
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, iter_entries
from plinth.limits import CUT_FILES_KEPT_MAX
from plinth.shards.segment import (
    RecoveryResult, Segment, cut_file_name, parse_log_file_name, segment_file_name)

INDEX_INTERVAL_BYTES = 256


def new_segment(directory, base_offset=0, created_ms=1_000):
    return Segment.create(directory, base_offset, index_interval_bytes=INDEX_INTERVAL_BYTES,
                          created_ms=created_ms)


def reopen(directory, base_offset=0):
    return Segment.open(directory, base_offset, index_interval_bytes=INDEX_INTERVAL_BYTES)


def entry_at(segment, offset):
    """The whole entry holding ``offset``, as a fetch of at most 1 byte returns it."""
    return bytes(segment.read_entries(offset, 1, segment.end_offset))


def file_bytes(segment, position, size):
    """``size`` bytes of the .log file from ``position``, read behind the segment's back."""
    segment.flush()
    return segment.log_path.read_bytes()[position:position + size]


def fill(segment, count, seed=1, record_count=4):
    """Append ``count`` entries of random sizes; return [(base_offset, position, batch)]."""
    rng = random.Random(seed)
    entries = []
    for i in range(count):
        batch = rng.randbytes(rng.randrange(1, 300))
        base_offset = segment.end_offset
        position = segment.append(base_offset, 10_000 + i, record_count, batch)
        entries.append((base_offset, position, batch))
    return entries


def test_files_are_named_by_the_base_offset_padded_to_20_digits(tmp_path):
    segment = new_segment(tmp_path, base_offset=1234)
    assert segment.log_path.name == "00000000000000001234.log"
    assert segment.index_path.name == "00000000000000001234.index"
    assert segment.time_index_path.name == "00000000000000001234.timeindex"
    assert parse_log_file_name(segment_file_name(1234, ".log")) == 1234
    assert parse_log_file_name("00000000000000001234.index") is None
    assert parse_log_file_name("1234.log") is None


def test_appends_are_laid_out_back_to_back_from_position_0(tmp_path):
    # Given a new segment / When entries are appended
    segment = new_segment(tmp_path, base_offset=50)
    entries = fill(segment, 5)
    # Then each starts where the previous one ended and the file is exactly that long
    positions = [position for _, position, _ in entries]
    sizes = [LOG_ENTRY_HEADER_BYTES + len(batch) for _, _, batch in entries]
    assert positions == [sum(sizes[:i]) for i in range(5)]
    assert segment.size_bytes == sum(sizes) == os.path.getsize(segment.log_path)
    assert segment.end_offset == 50 + 5 * 4


def test_the_log_file_holds_the_appended_entries_and_nothing_else(tmp_path):
    # Given a segment / When entries are appended
    segment = new_segment(tmp_path)
    entries = fill(segment, 10)
    # Then the .log file parses as exactly those entries
    data = file_bytes(segment, 0, segment.size_bytes)
    assert [bytes(batch) for _, batch in iter_entries(data)] == [b for _, _, b in entries]
    assert len(data) == os.path.getsize(segment.log_path)


def test_a_read_finds_the_entry_containing_every_offset(tmp_path):
    # Given entries of 4 records each, indexed every 256 bytes
    segment = new_segment(tmp_path, base_offset=100)
    entries = fill(segment, 40)
    # When each offset is read / Then the entry holding it comes back, as it is in the file
    for base_offset, position, batch in entries:
        entry = file_bytes(segment, position, LOG_ENTRY_HEADER_BYTES + len(batch))
        for offset in range(base_offset, base_offset + 4):
            assert entry_at(segment, offset) == entry
    # And a read at the end offset finds nothing
    assert segment.read_entries(segment.end_offset, 1, segment.end_offset + 1) == b""


def test_a_clean_segment_recovers_with_nothing_cut(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 10)
    segment.close()
    reopened = reopen(tmp_path)
    assert reopened.recover() == RecoveryResult(0, 10, "")


def test_recovery_truncates_a_torn_tail_to_the_last_whole_entry(tmp_path):
    # Given a segment of 6 entries
    segment = new_segment(tmp_path)
    entries = fill(segment, 6)
    segment.close()
    pristine = segment.log_path.read_bytes()
    last_position = entries[-1][1]
    for cut in range(last_position + 1, len(pristine)):
        # When the file is cut inside the last entry and recovered
        segment.log_path.write_bytes(pristine[:cut])
        reopened = reopen(tmp_path)
        result = reopened.recover()
        # Then exactly the first 5 entries are kept, and the cut is reported
        assert (result.bytes_truncated, result.entries_valid) == (cut - last_position, 5)
        assert "torn entry" in result.reason or "truncated" in result.reason
        assert os.path.getsize(segment.log_path) == last_position
        assert reopened.end_offset == entries[-1][0]
        reopened.close()


def test_a_torn_entry_is_reported_with_the_bytes_it_needs_and_the_fewer_bytes_there(tmp_path):
    # Given a segment whose last entry starts at last_position and is entry_bytes long
    segment = new_segment(tmp_path)
    entries = fill(segment, 3)
    segment.close()
    pristine = segment.log_path.read_bytes()
    last_position = entries[-1][1]
    entry_bytes = len(pristine) - last_position
    for cut in (last_position + 1, last_position + LOG_ENTRY_HEADER_BYTES, len(pristine) - 1):
        # When the file is cut inside that entry (its header, or its batch) and recovered
        segment.log_path.write_bytes(pristine[:cut])
        reopened = reopen(tmp_path)
        reason = reopened.recover().reason
        reopened.close()
        # Then the reason says what the entry needs and the fewer bytes the file has
        there_bytes = cut - last_position
        needed = (f"{LOG_ENTRY_HEADER_BYTES} bytes for its header"
                  if there_bytes < LOG_ENTRY_HEADER_BYTES
                  else f"{entry_bytes} bytes as its header declares")
        assert reason == (f"torn entry in {segment.log_path}: the entry at position "
                          f"{last_position} needs {needed}, the file has only {there_bytes} "
                          f"from there"), cut


def test_recovery_cuts_garbage_appended_after_the_last_entry(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 3)
    segment.close()
    with open(segment.log_path, "ab") as log_file:
        log_file.write(random.Random(5).randbytes(1000))
    result = reopen(tmp_path).recover()
    assert (result.bytes_truncated, result.entries_valid) == (1000, 3)
    assert "bad entry magic at position" in result.reason


def test_recovery_rebuilds_the_indexes_to_what_appending_built(tmp_path):
    # Given a closed segment, its index files written by appends
    segment = new_segment(tmp_path)
    fill(segment, 40)
    segment.close()
    index_bytes = segment.index_path.read_bytes()
    time_index_bytes = segment.time_index_path.read_bytes()
    # When the index files are deleted and the segment recovered and closed
    segment.index_path.unlink()
    segment.time_index_path.unlink()
    reopened = reopen(tmp_path)
    reopened.recover()
    reopened.close()
    # Then the same index files are written
    assert len(index_bytes) > 8 * 5
    assert segment.index_path.read_bytes() == index_bytes
    assert segment.time_index_path.read_bytes() == time_index_bytes


def test_an_older_segment_uses_its_index_files_when_they_are_valid(tmp_path):
    segment = new_segment(tmp_path)
    entries = fill(segment, 40)
    segment.close()
    reopened = reopen(tmp_path)
    assert reopened.load_indexes() is None
    assert (reopened.end_offset, reopened.size_bytes) == (segment.end_offset, segment.size_bytes)
    assert reopened.max_timestamp_ms == 10_039
    assert [entry_at(reopened, o) for o, _, _ in entries] == \
        [file_bytes(segment, p, LOG_ENTRY_HEADER_BYTES + len(b)) for _, p, b in entries]


@pytest.mark.parametrize("damage", ["missing", "odd size", "garbage", "points elsewhere"])
def test_an_older_segment_rebuilds_a_missing_or_invalid_index(tmp_path, damage):
    # Given a closed segment whose offset index is then damaged
    segment = new_segment(tmp_path)
    entries = fill(segment, 40)
    segment.close()
    good_index = segment.index_path.read_bytes()
    if damage == "missing":
        segment.index_path.unlink()
    elif damage == "odd size":
        segment.index_path.write_bytes(good_index[:-3])
    elif damage == "garbage":
        segment.index_path.write_bytes(random.Random(3).randbytes(len(good_index)))
    else:  # a well-formed index whose last position is not where its offset is
        segment.index_path.write_bytes(good_index[:-4] + (1 + int.from_bytes(
            good_index[-4:], "little")).to_bytes(4, "little"))
    # When the indexes are loaded
    reopened = reopen(tmp_path)
    reason = reopened.load_indexes()
    # Then they are rebuilt and written again, and lookups work
    assert reason
    assert segment.index_path.read_bytes() == good_index
    assert [entry_at(reopened, o) for o, _, _ in entries] == \
        [file_bytes(segment, p, LOG_ENTRY_HEADER_BYTES + len(b)) for _, p, b in entries]


def test_read_entries_returns_whole_checked_entries_from_the_one_containing_the_offset(tmp_path):
    # Given entries of 4 records
    segment = new_segment(tmp_path)
    entries = fill(segment, 10)
    # When reading from offset 9 (inside the third entry), up to offset 24
    data = segment.read_entries(9, 10**6, end_offset_max=24)
    # Then entries 8, 12, 16 and 20 come back
    assert [header.base_offset for header, _ in iter_entries(data)] == [8, 12, 16, 20]
    assert data == file_bytes(segment, entries[2][1], entries[6][1] - entries[2][1])


def test_read_entries_always_returns_the_first_entry_whole(tmp_path):
    segment = new_segment(tmp_path)
    entries = fill(segment, 3)
    data = segment.read_entries(0, bytes_max=1, end_offset_max=segment.end_offset)
    assert len(data) == LOG_ENTRY_HEADER_BYTES + len(entries[0][2])


def test_read_entries_raises_on_a_flipped_byte_naming_file_position_and_offset(tmp_path):
    # Given a segment whose third entry has a flipped batch byte
    segment = new_segment(tmp_path)
    entries = fill(segment, 5)
    segment.flush()
    with open(segment.log_path, "r+b") as log_file:
        log_file.seek(entries[2][1] + LOG_ENTRY_HEADER_BYTES)
        byte = log_file.read(1)[0]
        log_file.seek(-1, os.SEEK_CUR)
        log_file.write(bytes([byte ^ 0x40]))
    # When reading it / Then CorruptDataError names the file, position and offset
    with pytest.raises(CorruptDataError) as caught:
        segment.read_entries(9, 10**6, segment.end_offset)
    message = str(caught.value)
    assert str(segment.log_path) in message
    assert f"position {entries[2][1]}" in message and "offset 9" in message
    # And the entries before it still read
    assert len(list(iter_entries(segment.read_entries(0, 1, 8)))) == 1


def test_offset_for_timestamp_finds_the_first_entry_at_or_after_it(tmp_path):
    # Given entries with timestamps 10000, 10001, ...
    segment = new_segment(tmp_path)
    fill(segment, 40)
    # When looking up timestamps / Then the first entry that reaches each comes back
    assert segment.offset_for_timestamp(0) == 0
    assert segment.offset_for_timestamp(10_017) == 17 * 4
    assert segment.offset_for_timestamp(10_039) == 39 * 4
    assert segment.offset_for_timestamp(10_040) is None


def test_offset_for_timestamp_handles_timestamps_out_of_order(tmp_path):
    # Given entries whose timestamps go up and down
    segment = new_segment(tmp_path)
    timestamps = [500, 100, 900, 200, 950, 300] * 10
    for timestamp_ms in timestamps:
        segment.append(segment.end_offset, timestamp_ms, 1, b"x" * 100)
    # When looking up / Then the answer is the first entry reaching the timestamp
    for target in (50, 150, 500, 501, 901, 950):
        expected = next(i for i, t in enumerate(timestamps) if t >= target)
        assert segment.offset_for_timestamp(target) == expected


def test_appending_an_offset_out_of_sequence_fails_loudly(tmp_path):
    segment = new_segment(tmp_path, base_offset=10)
    with pytest.raises(AssertionError, match="attempt to append offset 11"):
        segment.append(11, 0, 1, b"x")


def test_flush_fsyncs_only_when_something_was_appended(tmp_path, monkeypatch):
    segment = new_segment(tmp_path)
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    segment.flush()
    fill(segment, 2)
    segment.flush()
    segment.flush()
    assert len(fsyncs) == 1


def test_age_counts_from_the_creation_time(tmp_path):
    segment = new_segment(tmp_path, created_ms=5_000)
    assert segment.age_ms(now_ms=12_000) == 7_000


def test_delete_removes_the_three_files(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 3)
    segment.close()
    reopened = reopen(tmp_path)
    reopened.recover()
    reopened.delete()
    assert list(tmp_path.iterdir()) == []


def test_a_create_whose_directory_fsync_fails_leaves_no_file_so_a_retry_can_create_it(
        tmp_path, monkeypatch):
    # Given a directory whose fsync fails once (EMFILE: the process is out of files)
    import plinth.shards.segment as segment_module

    def out_of_files(directory):
        monkeypatch.undo()
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(segment_module, "fsync_directory", out_of_files)
    # When a segment is created there / Then it fails, naming the directory
    with pytest.raises(StorageError, match="cannot fsync directory .* Too many open files"):
        Segment.create(tmp_path, 5, index_interval_bytes=4096, created_ms=0)
    # And the next try creates it (no "File exists" from the first try's file)
    segment = Segment.create(tmp_path, 5, index_interval_bytes=4096, created_ms=0)
    segment.close()


def flip_byte(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_recovery_keeps_the_bytes_it_cuts_in_a_cut_file_named_by_time_and_position(tmp_path):
    # Given a segment of 10 entries, the 5th one's batch damaged by a flipped byte
    segment = new_segment(tmp_path)
    entries = fill(segment, 10)
    segment.close()
    bad_position = entries[4][1]
    flip_byte(segment.log_path, bad_position + LOG_ENTRY_HEADER_BYTES)
    damaged = segment.log_path.read_bytes()
    # When it is recovered
    before_ns = time.time_ns()
    result = reopen(tmp_path).recover()
    # Then it is cut at the damaged entry, and every byte cut is kept, as it was, in a
    # file named by the segment, the time of the cut and the position cut from
    assert (result.bytes_truncated, result.entries_valid) == (len(damaged) - bad_position, 4)
    assert segment.cut_paths() == [result.cut_kept_path]
    prefix, time_ns, position = result.cut_kept_path.name.split("-")
    assert prefix == "00000000000000000000.log.cut" and len(time_ns) == 20
    assert before_ns <= int(time_ns) <= time.time_ns() and position == f"{bad_position:010d}"
    assert result.cut_kept_path.read_bytes() == damaged[bad_position:]
    assert segment.log_path.read_bytes() == damaged[:bad_position]


def test_a_later_cut_keeps_its_bytes_beside_the_earlier_ones_and_delete_removes_all_logged(
        tmp_path, caplog):
    # Given a segment recovered once from a flipped byte mid-file (acknowledged entries
    # kept in a cut file)
    segment = new_segment(tmp_path)
    entries = fill(segment, 10)
    segment.close()
    flip_byte(segment.log_path, entries[6][1] + LOG_ENTRY_HEADER_BYTES)
    first = reopen(tmp_path)
    first_cut = first.recover().cut_kept_path
    first_bytes = first_cut.read_bytes()
    first.close()
    # When a later recovery cuts a small torn tail
    kept = segment.log_path.read_bytes()
    with open(segment.log_path, "r+b") as log_file:
        log_file.truncate(entries[5][1] + 10)
    again = reopen(tmp_path)
    second_cut = again.recover().cut_kept_path
    # Then both cuts are kept, oldest first, the first one unchanged
    assert segment.cut_paths() == [first_cut, second_cut] and first_cut != second_cut
    assert first_cut.read_bytes() == first_bytes
    assert second_cut.read_bytes() == kept[entries[5][1]:entries[5][1] + 10]
    # And deleting the segment removes them too, saying which and how many bytes
    with caplog.at_level(logging.WARNING, logger="plinth.shards.segment"):
        again.delete()
    assert os.listdir(tmp_path) == []
    [line] = [r.getMessage() for r in caplog.records if "deleted with" in r.getMessage()]
    assert line.startswith(f"{segment.log_path} deleted with 2 cut files "
                           f"({len(first_bytes) + 10} bytes earlier recoveries cut")
    assert f"{first_cut.name} ({len(first_bytes)} bytes)" in line
    assert f"{second_cut.name} (10 bytes)" in line


def test_a_segment_keeps_its_largest_cut_files_and_the_newest_up_to_the_limit_logging_each(
        tmp_path, caplog):
    # Given a segment with as many cut files as a segment keeps: the oldest a large cut
    # (an earlier version's .log.cut, of acknowledged entries), then small torn tails
    segment = new_segment(tmp_path)
    entries = fill(segment, 3)
    segment.close()
    large = tmp_path / "00000000000000000000.log.cut"
    large.write_bytes(b"L" * 700)
    tails = [tmp_path / cut_file_name(0, 1_000 + i, 5) for i in range(CUT_FILES_KEPT_MAX - 1)]
    for path in tails:
        path.write_bytes(b"t")
    assert segment.cut_paths() == [large, *tails]
    # When a recovery cuts a small torn tail once more
    with open(segment.log_path, "ab") as log_file:
        log_file.write(b"\1")
    with caplog.at_level(logging.WARNING, logger="plinth.shards.segment"):
        result = reopen(tmp_path).recover()
    # Then the new cut is kept, and so is the large one: the oldest of the smallest goes,
    # and the log names it and its size
    assert segment.cut_paths() == [large, *tails[1:], result.cut_kept_path]
    [line] = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert line.startswith(f"{segment.log_path}: removed {tails[0]} (1 bytes an earlier "
                           f"recovery cut")
    assert f"keeps {CUT_FILES_KEPT_MAX} cut files" in line and "the smallest" in line


def test_a_clean_recovery_keeps_no_cut_file(tmp_path):
    segment = new_segment(tmp_path)
    fill(segment, 3)
    segment.close()
    assert reopen(tmp_path).recover().cut_kept_path is None
    assert segment.cut_paths() == []


def test_a_cut_the_disk_will_not_keep_is_still_made_and_logged_as_not_kept(tmp_path, caplog):
    import resource
    import signal

    # Given a segment damaged at its 2nd entry, and a process that may write no file
    # past that entry's position (the kernel's EFBIG standing for a full disk)
    segment = new_segment(tmp_path)
    entries = fill(segment, 6)
    segment.close()
    bad_position = entries[1][1]
    flip_byte(segment.log_path, bad_position + LOG_ENTRY_HEADER_BYTES)
    reopened = reopen(tmp_path)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (bad_position, hard))
    try:
        # When it is recovered
        result = reopened.recover()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    # Then the log is cut all the same (it must start), no half copy is left, and the
    # log says the bytes were not kept, how many and where
    assert result.entries_valid == 1 and result.cut_kept_path is None
    assert os.path.getsize(segment.log_path) == bad_position
    assert segment.cut_paths() == []
    [line] = [r.getMessage() for r in caplog.records if "cannot keep" in r.getMessage()]
    assert f"cannot keep the {result.bytes_truncated} bytes recovery cuts at position " \
           f"{bad_position} in {tmp_path / '00000000000000000000.log.cut-'}" in line
