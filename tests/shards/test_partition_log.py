"""The log of one partition (shards/partition_log.py)."""

import logging
import os
import random

import pytest

from plinth.errors import (
    CorruptDataError, InvalidConfigError, OffsetOutOfRangeError, StorageError)
from plinth.limits import INDEX_INTERVAL_BYTES, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MIN
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, iter_entries
from plinth.shards import partition_log
from plinth.shards.offset_gaps import load_gaps
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.segment import Segment
from plinth.shards.segment_files import SegmentFiles

SMALL_SEGMENTS = LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN, index_interval_bytes=512)


class FakeClock:
    def __init__(self, now_ms=1_000_000):
        self.now_ms = now_ms

    def __call__(self):
        return self.now_ms


def append_batches(log, count, seed=0, size_max=900):
    """Append ``count`` random batches; return [(base_offset, record_count, batch)]."""
    rng = random.Random(seed)
    appended = []
    for i in range(count):
        batch = rng.randbytes(rng.randrange(1, size_max))
        record_count = rng.randrange(1, 10)
        base_offset = log.append(batch, record_count, 50_000 + i)
        appended.append((base_offset, record_count, batch))
    return appended


def read_all(log, offset=None, bytes_max=4096):
    """[(base_offset, record_count, batch)] of every entry, read with repeated calls."""
    offset = log.start_offset if offset is None else offset
    entries = []
    while offset < log.end_offset:
        data = log.read(offset, bytes_max, log.end_offset)
        for header, batch in iter_entries(data):
            entries.append((header.base_offset, header.record_count, bytes(batch)))
        offset = entries[-1][0] + entries[-1][1]
    return entries


def test_a_new_log_is_created_empty_at_offset_0(tmp_path):
    # Given a directory that does not exist / When a log is opened there
    log = PartitionLog.open(tmp_path / "topic-0", LogConfig())
    # Then it exists, empty, with one segment
    assert (tmp_path / "topic-0" / "00000000000000000000.log").exists()
    assert (log.start_offset, log.end_offset, log.flushed_end_offset, log.size_bytes) == (0, 0, 0, 0)
    assert tuple(log.recovery[:2]) == (0, 0)
    assert log.read(0, 1000, log.end_offset) == b""


def test_appends_get_consecutive_base_offsets(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig())
    assert log.append(b"a" * 10, 3, 1) == 0
    assert log.append(memoryview(b"b" * 10), 5, 2) == 3
    assert log.append(bytearray(b"c"), 1, 3) == 8
    assert log.end_offset == 9
    assert log.size_bytes == 3 * LOG_ENTRY_HEADER_BYTES + 21


def test_reopening_after_close_finds_everything(tmp_path):
    # Given a log of many segments, closed
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 100)
    end_offset, size_bytes = log.end_offset, log.size_bytes
    log.close()
    # When it is reopened
    reopened = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    # Then every entry reads back, nothing was cut, and appends continue the offsets
    active_entries = list(iter_entries(reopened.segments[-1].log_path.read_bytes()))
    assert len(reopened.segments) > 10
    assert tuple(reopened.recovery[:2]) == (0, len(active_entries))
    assert (reopened.end_offset, reopened.size_bytes) == (end_offset, size_bytes)
    assert reopened.flushed_end_offset == end_offset
    assert read_all(reopened) == appended
    assert reopened.append(b"more", 1, 0) == end_offset


def test_the_active_segment_rolls_before_an_entry_would_exceed_segment_bytes_max(tmp_path):
    # Given segments of at most 4 KiB / When many entries are appended
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    # Then no segment is over 4 KiB, and each starts where the previous ended
    segments = log.segments
    assert len(segments) > 5
    assert all(segment.size_bytes <= SEGMENT_BYTES_MIN for segment in segments)
    assert [s.base_offset for s in segments[1:]] == [s.end_offset for s in segments[:-1]]
    assert sum(s.size_bytes for s in segments) == log.size_bytes
    assert read_all(log) == appended


def test_rolling_fsyncs_the_old_segment_and_writes_its_indexes(tmp_path, monkeypatch):
    # Given a log about to roll
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    log.append(b"x" * 3000, 1, 0)
    fsynced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
    # When an append rolls it
    log.append(b"y" * 3000, 1, 0)
    # Then the old segment was fsynced and its index files exist
    old = log.segments[0]
    assert len(log.segments) == 2 and fsynced
    assert old.index_path.exists() and old.time_index_path.exists()


def test_an_entry_bigger_than_segment_bytes_max_gets_a_segment_of_its_own(tmp_path):
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    log.append(b"a" * 100, 1, 0)
    log.append(b"b" * 10_000, 1, 0)
    log.append(b"c" * 100, 1, 0)
    assert [s.size_bytes for s in log.segments] == [148, 10_048, 148]


def test_the_active_segment_rolls_when_older_than_segment_ms_max(tmp_path):
    # Given a log whose clock we drive, with segments rolling after 60 s
    clock = FakeClock()
    log = PartitionLog.open(tmp_path, LogConfig(segment_ms_max=60_000), clock_ms=clock)
    log.append(b"a", 1, 0)
    # When 59.999 s pass / Then an append does not roll
    clock.now_ms += 59_999
    log.append(b"b", 1, 0)
    assert len(log.segments) == 1
    # When 1 more ms passes / Then the next append rolls, at offset 2
    clock.now_ms += 1
    log.append(b"c", 1, 0)
    assert [s.base_offset for s in log.segments] == [0, 2]
    assert log.segments[-1].created_ms == clock.now_ms


def test_an_empty_active_segment_never_rolls_by_age(tmp_path):
    clock = FakeClock()
    log = PartitionLog.open(tmp_path, LogConfig(segment_ms_max=1), clock_ms=clock)
    clock.now_ms += 10**9
    log.append(b"a", 1, 0)
    assert len(log.segments) == 1


def test_a_reopened_segment_rolls_by_its_creation_time(tmp_path):
    # Given a reopened log whose active segment was created long ago
    log = PartitionLog.open(tmp_path, LogConfig())
    log.append(b"a", 1, 0)
    log.close()
    reopened = PartitionLog.open(tmp_path, LogConfig(segment_ms_max=60_000))
    reopened.segments[-1].created_ms -= 60_000
    # When appending / Then it rolls
    reopened.append(b"b", 1, 0)
    assert [s.base_offset for s in reopened.segments] == [0, 1]


def test_flush_advances_flushed_end_offset_and_appending_does_not(tmp_path):
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    append_batches(log, 20)
    assert log.flushed_end_offset == 0
    log.flush()
    assert log.flushed_end_offset == log.end_offset > 0
    log.append(b"x", 1, 0)
    assert log.flushed_end_offset == log.end_offset - 1


def test_read_starts_with_the_entry_containing_an_offset_in_the_middle_of_a_batch(tmp_path):
    # Given batches of 10 records
    log = PartitionLog.open(tmp_path, LogConfig())
    batches = [bytes([i]) * 100 for i in range(5)]
    for batch in batches:
        log.append(batch, 10, 0)
    # When reading from offsets 20..29 / Then the entry at 20 comes first
    for offset in range(20, 30):
        first_header, first_batch = next(iter_entries(log.read(offset, 10**6, log.end_offset)))
        assert (first_header.base_offset, bytes(first_batch)) == (20, batches[2])


def test_read_returns_whole_entries_within_bytes_max_and_before_end_offset_max(tmp_path):
    # Given 10 entries of 148 bytes, 2 records each
    log = PartitionLog.open(tmp_path, LogConfig())
    for i in range(10):
        log.append(bytes([i]) * 100, 2, 0)
    entry_bytes = 148
    # When reading with bytes_max between 2 and 3 entries / Then 2 whole entries come back
    assert len(log.read(0, 3 * entry_bytes - 1, log.end_offset)) == 2 * entry_bytes
    # When reading with bytes_max below one entry / Then the first entry comes whole
    assert len(log.read(5, 1, log.end_offset)) == entry_bytes
    # When reading up to end offset 8 / Then entries starting at 0, 2, 4, 6 come back
    data = log.read(1, 10**6, end_offset_max=8)
    assert [h.base_offset for h, _ in iter_entries(data)] == [0, 2, 4, 6]
    # When reading at end_offset_max / Then nothing comes back
    assert log.read(8, 10**6, end_offset_max=8) == b""
    assert log.read(20, 10**6, end_offset_max=20) == b""


def test_read_serves_only_flushed_entries_when_asked_to(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig())
    log.append(b"a", 1, 0)
    log.flush()
    log.append(b"b", 1, 0)
    data = log.read(0, 10**6, log.flushed_end_offset)
    assert [bytes(batch) for _, batch in iter_entries(data)] == [b"a"]


def test_read_returns_entries_of_one_segment_per_call(tmp_path):
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    append_batches(log, 30)
    first = log.segments[0]
    data = log.read(0, 10**6, log.end_offset)
    assert len(data) == first.size_bytes
    assert list(iter_entries(data))[-1][0].end_offset == first.end_offset


def test_offsets_outside_the_log_raise_offset_out_of_range_with_the_range(tmp_path):
    # Given a log starting at offset 100 (its first segment's base) and ending at 105
    Segment.create(tmp_path, 100, index_interval_bytes=INDEX_INTERVAL_BYTES, created_ms=0).close()
    log = PartitionLog.open(tmp_path, LogConfig())
    log.append(b"x", 5, 0)
    assert (log.start_offset, log.end_offset) == (100, 105)
    # When reading below the start or past the end / Then the error gives the range
    for offset in (99, 106, -1):
        with pytest.raises(OffsetOutOfRangeError, match=rf"offset {offset} is out of range \[100, 105\]"):
            log.read(offset, 1000, log.end_offset)
    # And reading at the end offset is not an error
    assert log.read(105, 1000, log.end_offset) == b""


def test_recovery_cuts_a_torn_tail_at_every_byte_of_the_last_entry(tmp_path):
    # Given a closed log of 5 entries
    log = PartitionLog.open(tmp_path, LogConfig())
    appended = append_batches(log, 5, size_max=200)
    log.close()
    log_path = log.segments[-1].log_path
    pristine = log_path.read_bytes()
    last_position = len(pristine) - LOG_ENTRY_HEADER_BYTES - len(appended[-1][2])
    for cut in range(last_position + 1, len(pristine)):
        # When the file is cut inside the last entry, then the log reopened
        log_path.write_bytes(pristine[:cut])
        reopened = PartitionLog.open(tmp_path, LogConfig())
        # Then exactly the first 4 entries remain and the cut is reported
        assert reopened.recovery.bytes_truncated == cut - last_position
        assert reopened.recovery.entries_valid == 4
        assert reopened.end_offset == appended[-1][0]
        assert read_all(reopened) == appended[:4]
        reopened.close()


def test_recovery_is_logged_with_the_bytes_cut_and_where_they_are_kept(tmp_path, caplog):
    log = PartitionLog.open(tmp_path, LogConfig())
    log.append(b"x" * 100, 1, 0)
    log.close()
    with open(log.segments[0].log_path, "ab") as log_file:
        log_file.write(b"\1" * 30)
    with caplog.at_level(logging.INFO, logger="plinth.shards.partition_log"):
        PartitionLog.open(tmp_path, LogConfig()).close()
    assert f"recovered {tmp_path}: cut 30 bytes" in caplog.text
    [cut_path] = log.segments[0].cut_paths()
    assert f"the bytes cut are kept in {cut_path}" in caplog.text


def test_a_later_torn_tail_leaves_the_bytes_an_earlier_recovery_cut_mid_file_in_place(tmp_path):
    # Given a log whose recovery cut acknowledged entries after a flipped byte mid-file
    log = PartitionLog.open(tmp_path, LogConfig())
    appended = append_batches(log, 10)
    log.close()
    log_path = log.segments[0].log_path
    pristine = log_path.read_bytes()
    bad_position = sum(header.entry_bytes for header, _ in list(iter_entries(pristine))[:5])
    data = bytearray(pristine)
    data[bad_position + LOG_ENTRY_HEADER_BYTES] ^= 0xFF
    log_path.write_bytes(bytes(data))
    first = PartitionLog.open(tmp_path, LogConfig())
    first_cut = first.recovery.cut_kept_path
    first.append(b"more", 1, 0)
    first.close()
    # When a crash tears the next last entry and the log opens again
    with open(log_path, "r+b") as log_file:
        log_file.truncate(os.path.getsize(log_path) - 2)
    second = PartitionLog.open(tmp_path, LogConfig())
    # Then the earlier cut is still whole, beside the new one
    assert first_cut.read_bytes() == bytes(data[bad_position:])
    assert second.segments[0].cut_paths() == [first_cut, second.recovery.cut_kept_path]
    assert second.end_offset == appended[5][0]
    second.close()


def test_retention_and_deletion_remove_cut_files_saying_so(tmp_path, caplog):
    # Given a log of two segments, each with bytes a recovery cut (its active one then)
    config = LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN)
    directory = tmp_path / "p"
    log = PartitionLog.open(directory, config)
    append_batches(log, 3)
    log.close()
    with open(log.segments[-1].log_path, "ab") as log_file:
        log_file.write(b"\1" * 30)
    log = PartitionLog.open(directory, config)
    while log.segment_count < 2:
        log.append(b"x" * 1000, 1, 0)
    log.close()
    with open(log.segments[-1].log_path, "ab") as log_file:
        log_file.write(b"\2" * 40)
    log = PartitionLog.open(directory, config)
    [oldest_cut], [newest_cut] = (segment.cut_paths() for segment in log.segments)
    # When retention deletes the older segment, then the topic is deleted
    with caplog.at_level(logging.WARNING, logger="plinth.shards.segment"):
        log.delete_segments_before(log.segments[1].base_offset)
        assert not oldest_cut.exists()
        log.delete()
    # Then each removal names the cut file and its bytes
    lines = [r.getMessage() for r in caplog.records if "cut files" in r.getMessage()]
    assert lines == [
        f"{log_path_of(oldest_cut)} deleted with 1 cut files (30 bytes earlier recoveries cut, "
        f"which may hold acknowledged records): {oldest_cut.name} (30 bytes)",
        f"{directory} deleted with 1 cut files (40 bytes earlier recoveries cut, which may "
        f"hold acknowledged records): {newest_cut.name} (40 bytes)"]


def log_path_of(cut_path):
    return cut_path.with_name(cut_path.name.split(".")[0] + ".log")


def test_recovery_after_random_corruption_keeps_exactly_the_entries_before_it(tmp_path):
    rng = random.Random(20240531)
    for iteration in range(200):
        # Given a closed log of a few entries
        directory = tmp_path / str(iteration)
        log = PartitionLog.open(directory, LogConfig())
        appended = append_batches(log, rng.randrange(1, 8), seed=iteration, size_max=300)
        log.close()
        log_path = log.segments[0].log_path
        data = bytearray(log_path.read_bytes())
        # When one random byte is changed
        position = rng.randrange(len(data))
        data[position] ^= rng.randrange(1, 256)
        log_path.write_bytes(data)
        reopened = PartitionLog.open(directory, LogConfig())
        # Then the log holds exactly the entries before the corrupted one
        starts = [0]
        for _, _, batch in appended:
            starts.append(starts[-1] + LOG_ENTRY_HEADER_BYTES + len(batch))
        corrupted = max(i for i, start in enumerate(starts[:-1]) if start <= position)
        assert reopened.recovery.entries_valid == corrupted, (iteration, position)
        assert reopened.recovery.bytes_truncated == len(data) - starts[corrupted]
        assert os.path.getsize(log_path) == starts[corrupted]
        assert read_all(reopened) == appended[:corrupted]
        reopened.close()


def test_a_missing_or_garbage_index_of_an_older_segment_is_rebuilt_when_first_read(
        tmp_path, caplog):
    # Given a closed log of several segments
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    log.close()
    first, second = log.segments[0], log.segments[1]
    good_index = first.index_path.read_bytes()
    # When one index file is deleted and another overwritten with garbage
    first.index_path.unlink()
    second.time_index_path.write_bytes(b"\xff" * 25)
    with caplog.at_level(logging.WARNING, logger="plinth.shards.segment"):
        reopened = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
        # Then opening the log reads neither (older segments are opened on demand)
        assert caplog.text.count("rebuilt the indexes of") == 0
        # And reading the log rebuilds both, says so, and every entry reads back
        assert read_all(reopened) == appended
    assert first.index_path.read_bytes() == good_index
    assert len(second.time_index_path.read_bytes()) % 12 == 0
    assert caplog.text.count("rebuilt the indexes of") == 2


def test_a_corrupt_entry_in_the_middle_of_an_older_segment_raises_on_read(tmp_path):
    # Given a closed log of several segments, with a byte flipped in an entry
    # in the middle of the first segment
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    append_batches(log, 60)
    data = read_all(log)
    log.close()
    first = log.segments[0]
    first_segment_entries = [e for e in data if e[0] < first.end_offset]
    assert len(first_segment_entries) >= 3
    victim_offset = first_segment_entries[1][0]
    victim_position = LOG_ENTRY_HEADER_BYTES + len(first_segment_entries[0][2])
    raw = bytearray(first.log_path.read_bytes())
    raw[victim_position + LOG_ENTRY_HEADER_BYTES + 1] ^= 0x01
    first.log_path.write_bytes(raw)
    # When the log is reopened / Then nothing is cut from an older segment
    reopened = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    assert reopened.recovery.bytes_truncated == 0
    assert reopened.segments[0].size_bytes == len(raw)
    # When the corrupt entry is read / Then CorruptDataError names file, position, offset
    with pytest.raises(CorruptDataError) as caught:
        reopened.read(victim_offset, 10**6, reopened.end_offset)
    message = str(caught.value)
    assert str(first.log_path) in message and f"position {victim_position}" in message
    assert f"offset {victim_offset}" in message
    # And a read that starts before it returns the whole entries before it, and no
    # more (the next read, at the corrupt entry, raises), whatever its size
    for bytes_max in (1, victim_position + 1, 10**6):
        assert len(reopened.read(0, bytes_max, reopened.end_offset)) == victim_position
    # And reads of later segments still work
    assert read_all(reopened, offset=first.end_offset) == \
        [e for e in data if e[0] >= first.end_offset]


def test_a_corrupt_entry_a_read_finds_is_logged_once_with_the_partition_file_and_position(
        tmp_path, caplog):
    # Given a partition's closed log with a byte flipped in the batch of its second entry
    directory = tmp_path / "orders-3"
    log = PartitionLog.open(directory, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    log.close()
    first = log.segments[0]
    victim_offset = appended[1][0]
    victim_position = LOG_ENTRY_HEADER_BYTES + len(appended[0][2])
    raw = bytearray(first.log_path.read_bytes())
    raw[victim_position + LOG_ENTRY_HEADER_BYTES + 1] ^= 0x01
    first.log_path.write_bytes(raw)
    reopened = PartitionLog.open(directory, SMALL_SEGMENTS)
    with caplog.at_level(logging.ERROR, logger="plinth.shards.partition_log"):
        # When a consumer reads the bad entry again and again
        for _ in range(5):
            with pytest.raises(CorruptDataError):
                reopened.read(victim_offset, 10**6, reopened.end_offset)
    # Then the shard's log says so once, at ERROR, naming the partition, file and position
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text
    message = errors[0].getMessage()
    assert "partition orders-3" in message and message.count(str(first.log_path)) == 1
    assert f"at position {victim_position}" in message and "CRC mismatch" in message


def test_offset_for_timestamp_finds_the_first_batch_at_or_after_it_across_segments(tmp_path):
    # Given entries with timestamps 50000, 50001, ... over many segments
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    assert len(log.segments) > 3
    # When looking up timestamps / Then the base offset of the first reaching each comes back
    assert log.offset_for_timestamp(0) == 0
    for i in (1, 17, 33, 59):
        assert log.offset_for_timestamp(50_000 + i) == appended[i][0]
    assert log.offset_for_timestamp(50_060) == log.end_offset


def test_offset_for_timestamp_survives_reopening(tmp_path):
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    log.close()
    reopened = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    assert [reopened.offset_for_timestamp(50_000 + i) for i in range(60)] == \
        [base_offset for base_offset, _, _ in appended]


def test_delete_removes_the_directory(tmp_path):
    log = PartitionLog.open(tmp_path / "p", SMALL_SEGMENTS)
    append_batches(log, 20)
    log.delete()
    assert not (tmp_path / "p").exists()
    assert os.listdir(tmp_path) == []


class CrashDuringRemoval(Exception):
    """Stands for the process dying while a directory's files are being removed."""


def test_a_deletion_cut_short_leaves_no_live_directory_and_recovery_removes_what_is_left(
        tmp_path, monkeypatch):
    # Given a partition's log with records, beside another live partition directory,
    # the tier's deletions directory and a file whose name ends in -delete
    log = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    append_batches(log, 20)
    PartitionLog.open(tmp_path / "t-1", SMALL_SEGMENTS).close()
    (tmp_path / "remote-deletions").mkdir()
    (tmp_path / "notes-delete").write_bytes(b"not a directory")

    # When the process dies while the log's directory is being removed
    def crash(path, *args, **kwargs):
        raise CrashDuringRemoval(path)
    monkeypatch.setattr(partition_log.shutil, "rmtree", crash)
    with pytest.raises(CrashDuringRemoval):
        log.delete()
    monkeypatch.undo()

    # Then no directory is left under the partition's name: the topic created again
    # opens an empty log, not the deleted records
    assert PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS).end_offset == 0
    [half_deleted] = [name for name in os.listdir(tmp_path) if name.startswith("t-0.")]
    assert half_deleted.endswith("-delete")
    # and recovery removes it, says so, and touches nothing else
    assert partition_log.remove_deleted_directories(tmp_path) == [half_deleted]
    assert sorted(os.listdir(tmp_path)) == ["notes-delete", "remote-deletions", "t-0", "t-1"]
    assert partition_log.remove_deleted_directories(tmp_path) == []


def test_appending_an_empty_batch_or_no_records_fails_loudly(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig())
    with pytest.raises(AssertionError):
        log.append(b"", 1, 0)
    with pytest.raises(AssertionError):
        log.append(b"x", 0, 0)


def test_log_config_defaults_come_from_limits():
    config = LogConfig()
    assert config.segment_bytes_max == SEGMENT_BYTES_DEFAULT
    assert config.index_interval_bytes == INDEX_INTERVAL_BYTES


@pytest.mark.parametrize("key, value, limit", [
    ("segment_bytes_max", SEGMENT_BYTES_MIN - 1, f"at least {SEGMENT_BYTES_MIN}"),
    ("segment_bytes_max", 2**31, "at most 1073741824"),
    ("segment_ms_max", 0, "at least 1"),
    ("index_interval_bytes", -1, "at least 0"),
    ("segment_ms_max", 1.5, "must be an integer"),
])
def test_log_config_rejects_values_outside_the_limits_naming_key_and_limit(key, value, limit):
    with pytest.raises(InvalidConfigError, match=f"{key} .*{limit}"):
        LogConfig(**{key: value})


def test_retention_by_size_deletes_the_oldest_whole_segments_never_the_active_one(tmp_path):
    from plinth.shards.partition_log import LogConfig, PartitionLog

    # Given a log of 4 KiB segments holding about 40 KiB
    config = LogConfig(segment_bytes_max=4096, retention_ms=-1, retention_bytes=10_000)
    plog = PartitionLog.open(tmp_path / "p", config)
    for _ in range(40):
        plog.append(b"x" * 1000, 1, 1_000)
    segments_before = len(plog.segments)
    # When retention runs
    result = plog.enforce_retention()
    # Then it deleted whole oldest segments, down to just over the size limit
    assert result.segments == segments_before - len(plog.segments) > 0
    assert 10_000 <= plog.size_bytes < 10_000 + 4096 + 1048
    assert plog.start_offset == result.start_offset == plog.segments[0].base_offset
    assert sorted(p.name for p in (tmp_path / "p").glob("*.log"))[0].startswith(
        f"{plog.start_offset:020d}")
    plog.close()


def log_with_old_records(tmp_path):
    """A log of 4 KiB segments, 1-minute retention, whose clock reads 1,000,000 ms,
    holding ten records stamped 900,000 ms (old); and its config."""
    config = LogConfig(segment_bytes_max=4096, retention_ms=60_000)
    plog = PartitionLog.open(tmp_path / "p", config, clock_ms=lambda: 1_000_000)
    for _ in range(10):
        plog.append(b"o" * 1000, 1, 900_000)
    return plog, config


def test_retention_by_time_keeps_segments_with_a_recent_record(tmp_path):
    plog, config = log_with_old_records(tmp_path)
    for i in range(10):
        plog.append(b"n" * 1000, 1, 990_000)          # recent records
    result = plog.enforce_retention()
    # Every segment holding only old records went; one with a recent record stays
    assert result.segments > 0
    assert all(seg.max_timestamp_ms >= 990_000 for seg in plog.segments[:-1])
    reopened_start = plog.start_offset
    plog.close()
    assert PartitionLog.open(tmp_path / "p", config).start_offset == reopened_start


def test_retention_of_minus_one_keeps_everything(tmp_path):
    from plinth.shards.partition_log import LogConfig, PartitionLog

    keep_forever = LogConfig(segment_bytes_max=4096, retention_ms=-1, retention_bytes=-1)
    plog = PartitionLog.open(tmp_path / "p", keep_forever)
    for _ in range(20):
        plog.append(b"x" * 1000, 1, 1)
    assert plog.enforce_retention().segments == 0 and plog.start_offset == 0
    plog.close()


def test_a_new_log_can_start_at_a_later_offset_and_keeps_it_after_reopening(tmp_path):
    from plinth.errors import OffsetOutOfRangeError
    from plinth.shards.partition_log import LogConfig, PartitionLog

    plog = PartitionLog.open(tmp_path / "p", LogConfig(), initial_offset=500)
    assert (plog.start_offset, plog.end_offset) == (500, 500)
    assert plog.append(b"x" * 10, 2, 1) == 500
    plog.close()
    plog = PartitionLog.open(tmp_path / "p", LogConfig())
    assert (plog.start_offset, plog.end_offset) == (500, 502)
    with pytest.raises(OffsetOutOfRangeError, match="500"):
        plog.read(10, 1000, 502)
    plog.close()


def test_a_log_continued_past_its_end_leaves_a_gap_and_reads_both_sides(tmp_path):
    # Given a log with entries at offsets 0.. (writes then moved to another shard)
    log = PartitionLog.open(tmp_path / "t-0", LogConfig())
    before = append_batches(log, 3)
    gap_start = log.end_offset
    # When its writes come back at a later offset
    log.continue_at(gap_start + 100)
    after = append_batches(log, 2, seed=1)
    # Then new entries start there, and entries on both sides of the gap are read
    assert after[0][0] == gap_start + 100
    assert read_all(log) == before + after
    assert read_all(log, gap_start + 100) == after
    log.close()
    # And a reopened log has the same gap and end offset
    reopened = PartitionLog.open(tmp_path / "t-0", LogConfig())
    assert read_all(reopened) == before + after and reopened.end_offset == log.end_offset
    reopened.close()


def test_only_offsets_between_the_two_sides_of_a_gap_are_in_it(tmp_path):
    # Given a log with entries at offsets 0.., continued 100 offsets past its end
    log = PartitionLog.open(tmp_path / "t-0", LogConfig())
    append_batches(log, 3)
    gap_start = log.end_offset
    log.continue_at(gap_start + 100)
    append_batches(log, 2, seed=1)
    # Then the gap's offsets are in it, from its first to its last
    assert log.in_gap(gap_start) and log.in_gap(gap_start + 50) and log.in_gap(gap_start + 99)
    # And none held on either side, nor the end, nor offsets outside the log, is
    held = [0, gap_start - 1, gap_start + 100, log.end_offset - 1, log.end_offset,
            log.end_offset + 7]
    assert not any(log.in_gap(offset) for offset in held)
    log.close()
    # And a log that never continued has no gap
    plain = PartitionLog.open(tmp_path / "u-0", LogConfig(), initial_offset=500)
    append_batches(plain, 2)
    assert not any(plain.in_gap(offset) for offset in (0, 499, 500, plain.end_offset))
    plain.close()


def sealed_log_of_four_segments(directory):
    """A closed log of 4+ segments; returns (the log, its entries, its segments)."""
    log = PartitionLog.open(directory, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    log.close()
    assert len(log.segments) >= 4
    return log, appended, log.segments


def test_a_lost_older_segment_is_read_as_corrupt_data_naming_the_missing_offsets(tmp_path):
    # Given a log whose second segment's files were deleted while it was closed
    _, appended, segments = sealed_log_of_four_segments(tmp_path / "t-0")
    lost = segments[1]
    for path in (lost.log_path, lost.index_path, lost.time_index_path):
        path.unlink()
    reopened = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    # When an offset it held is read / Then CorruptDataError names the range and why,
    # where the log used to read on from the next segment, skipping them
    with pytest.raises(CorruptDataError, match=(
            rf"offsets {lost.base_offset}\.\.{segments[2].base_offset - 1} of .*t-0 are "
            rf"missing: no segment holds them .* a segment file was lost or cut short")):
        reopened.read(lost.base_offset, 10**6, reopened.end_offset)
    assert not reopened.in_gap(lost.base_offset)
    # And the offsets on both sides read as before
    assert read_all(reopened, offset=segments[2].base_offset) == \
        [e for e in appended if e[0] >= segments[2].base_offset]
    assert reopened.read(0, 10**6, reopened.end_offset)


def test_an_older_segment_cut_short_is_read_as_corrupt_data_past_its_last_whole_entry(
        tmp_path):
    # Given a log whose first segment lost its second half while it was closed
    _, appended, segments = sealed_log_of_four_segments(tmp_path / "t-0")
    first = segments[0]
    with open(first.log_path, "r+b") as file:
        file.truncate(first.size_bytes // 2)
    reopened = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    # When it is read from its start / Then its whole entries read back, and the read
    # past the cut raises, naming where the next segment starts
    readable, offset = [], 0
    with pytest.raises(CorruptDataError, match=f"next segment starts at {segments[1].base_offset}"):
        while True:
            for header, batch in iter_entries(reopened.read(offset, 4096, reopened.end_offset)):
                readable.append((header.base_offset, header.record_count, bytes(batch)))
            offset = readable[-1][0] + readable[-1][1]
    assert 0 < len(readable) and readable == appended[:len(readable)]
    assert offset < segments[1].base_offset


def test_a_gap_a_move_made_is_still_one_after_reopening_and_a_lost_segment_beside_it_is_not(
        tmp_path):
    # Given a log continued past its end (a move), then rolled twice
    log = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    append_batches(log, 20)
    gap_start = log.end_offset
    log.continue_at(gap_start + 100)
    after = append_batches(log, 40, seed=1)
    log.close()
    later = [s for s in log.segments if s.base_offset > gap_start + 100]
    assert len(later) >= 2
    # When the log is reopened / Then the gap reads on from the next entry
    reopened = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    assert reopened.in_gap(gap_start + 50)
    assert read_all(reopened, gap_start + 50)[0] == after[0]
    reopened.close()
    # And a segment lost after the gap is missing data, not a gap
    for path in (later[0].log_path, later[0].index_path, later[0].time_index_path):
        path.unlink()
    damaged = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    assert damaged.in_gap(gap_start + 50) and not damaged.in_gap(later[0].base_offset)
    with pytest.raises(CorruptDataError, match="are missing"):
        damaged.read(later[0].base_offset, 10**6, damaged.end_offset)


def test_a_log_without_its_gaps_file_takes_only_holes_up_to_its_initial_offset_as_gaps(
        tmp_path):
    # Given a log of an older version (no offset-gaps file) with a lost segment
    _, _, segments = sealed_log_of_four_segments(tmp_path / "t-0")
    (tmp_path / "t-0" / "offset-gaps").unlink()
    for path in (segments[1].log_path, segments[1].index_path, segments[1].time_index_path):
        path.unlink()
    # When it is opened as a partition never moved (initial offset 0) / Then the hole
    # is missing data: no move can have made it
    never_moved = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    assert not never_moved.in_gap(segments[1].base_offset)
    with pytest.raises(CorruptDataError, match=(
            rf"offsets {segments[1].base_offset}\.\.{segments[2].base_offset - 1} .* are "
            rf"missing.*offset-gaps file is missing or was bad.*continued on this shard at "
            rf"offset 0")):
        never_moved.read(segments[1].base_offset, 10**6, never_moved.end_offset)
    never_moved.close()
    # And opened as one that continued here at the hole's end, it may be a move's gap
    moved = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS,
                              initial_offset=segments[2].base_offset)
    assert moved.in_gap(segments[1].base_offset)
    assert read_all(moved, segments[1].base_offset)[0][0] == segments[2].base_offset


def test_a_garbage_gaps_file_does_not_make_a_lost_segment_of_a_never_moved_log_a_gap(
        tmp_path, caplog):
    # Given a never-moved log whose second segment was deleted and whose offset-gaps
    # file was overwritten with 16 bytes of garbage (the tester's printf)
    _, appended, segments = sealed_log_of_four_segments(tmp_path / "t-0")
    (tmp_path / "t-0" / "offset-gaps").write_bytes(b"garbagegarbage!!")
    lost = segments[1]
    lost.log_path.unlink()
    # When it is opened and read from offset 0 / Then the read stops at the hole with
    # CorruptDataError naming the missing offsets, never skipping them
    with caplog.at_level(logging.ERROR, logger="plinth.shards.offset_gaps"):
        reopened = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    assert "is still read as missing offsets" in caplog.text
    assert (tmp_path / "t-0" / "offset-gaps.corrupt").exists()
    with pytest.raises(CorruptDataError, match=(
            rf"offsets {lost.base_offset}\.\.{segments[2].base_offset - 1} of .* are missing")):
        read_all(reopened, 0)
    assert read_all(reopened, segments[2].base_offset) == \
        [e for e in appended if e[0] >= segments[2].base_offset]
    reopened.close()
    # And a second start (the bad file set aside, none left) says the same
    again = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    with pytest.raises(CorruptDataError, match="are missing"):
        again.read(lost.base_offset, 10**6, again.end_offset)


def test_a_garbage_gaps_file_keeps_a_gap_a_move_made_up_to_the_initial_offset(tmp_path):
    # Given a log continued past its end (a move back to this shard at offset X), then
    # its offset-gaps file overwritten with garbage
    log = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    append_batches(log, 20)
    gap_start = log.end_offset
    log.continue_at(gap_start + 100)
    after = append_batches(log, 40, seed=1)
    log.close()
    (tmp_path / "t-0" / "offset-gaps").write_bytes(b"garbagegarbage!!")
    later = [s for s in log.segments if s.base_offset > gap_start + 100]
    for path in (later[0].log_path, later[0].index_path, later[0].time_index_path):
        path.unlink()
    # When it is opened with that offset, as its manifest says / Then the move's gap reads
    # on, and the segment lost after it is missing data
    reopened = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS,
                                 initial_offset=gap_start + 100)
    assert reopened.in_gap(gap_start + 50)
    header, _ = next(iter_entries(reopened.read(gap_start + 50, 4096, reopened.end_offset)))
    assert header.base_offset == after[0][0] == gap_start + 100
    with pytest.raises(CorruptDataError, match="are missing"):
        reopened.read(later[0].base_offset, 10**6, reopened.end_offset)


def test_truncating_or_restarting_a_log_forgets_the_gaps_past_its_new_end(tmp_path):
    directory = tmp_path / "t-0"
    log = PartitionLog.open(directory, LogConfig())
    append_batches(log, 3)
    first_end = log.end_offset
    log.continue_at(first_end + 10)
    append_batches(log, 3, seed=1)
    assert load_gaps(directory) == [(first_end, first_end + 10)]
    # Truncating to the gap's end keeps it; into it or before it forgets it
    log.truncate_to(first_end + 10)
    assert load_gaps(directory) == [(first_end, first_end + 10)]
    log.truncate_to(first_end)
    assert load_gaps(directory) == []
    # And a restart forgets every gap
    log.continue_at(first_end + 20)
    assert load_gaps(directory) == [(first_end, first_end + 20)]
    log.restart_at(1000)
    assert load_gaps(directory) == []
    log.close()


def test_continuing_an_empty_active_segment_replaces_it(tmp_path):
    # Given an empty new log
    log = PartitionLog.open(tmp_path / "t-0", LogConfig())
    # When it continues at offset 50
    log.continue_at(50)
    # Then it holds one segment, at 50, and nothing before
    assert [s.base_offset for s in log.segments] == [50]
    assert sorted(p.name for p in (tmp_path / "t-0").glob("*.log")) == ["00000000000000000050.log"]
    assert (log.start_offset, log.end_offset, log.flushed_end_offset) == (50, 50, 50)
    log.close()


def test_continuing_before_the_end_is_a_programming_error(tmp_path):
    log = PartitionLog.open(tmp_path / "t-0", LogConfig())
    append_batches(log, 2)
    with pytest.raises(AssertionError, match="before its end"):
        log.continue_at(log.end_offset - 1)
    log.close()


def test_retention_of_a_sealed_log_may_delete_every_segment_and_keeps_its_end_offset(tmp_path):
    # Given a sealed log (its writes moved away) whose records are all past retention
    plog, _ = log_with_old_records(tmp_path)
    segments_before = len(plog.segments)
    # When retention runs (an unsealed log would keep its active segment)
    result = plog.enforce_retention(sealed=True)
    # Then every segment went, and the log is empty at its old end offset
    assert result.segments == segments_before and result.start_offset == 10
    assert (plog.start_offset, plog.end_offset, plog.size_bytes) == (10, 10, 0)
    assert [p.name for p in (tmp_path / "p").glob("*.log")] == [f"{10:020d}.log"]
    # And running it again deletes nothing more
    assert plog.enforce_retention(sealed=True).segments == 0
    plog.close()


# --- Open files ---------------------------------------------------------------


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def closed_log_of_many_segments(directory, segments: int):
    """A closed log of ``segments`` one-entry segments; [(base_offset, record_count, batch)]."""
    log = PartitionLog.open(directory, SMALL_SEGMENTS, files=SegmentFiles(open_max=4))
    appended = [(log.append(b"%06d" % n + b"." * 3000, 2, 50_000 + n), 2, b"%06d" % n + b"." * 3000)
                for n in range(segments)]
    log.close()
    assert len(log.segments) == segments
    return appended


def test_opening_a_log_of_many_segments_opens_only_its_active_segment(tmp_path):
    # Given a closed log of 300 segments
    appended = closed_log_of_many_segments(tmp_path / "p", 300)
    descriptors = open_descriptors()
    # When it is opened (issue 11: every segment's file was opened, and kept open)
    log = PartitionLog.open(tmp_path / "p", SMALL_SEGMENTS)
    # Then one file is open, the active segment's, and the log knows its extent
    assert open_descriptors() == descriptors + 1
    assert (log.start_offset, log.end_offset) == (0, 600)
    assert log.size_bytes == sum(LOG_ENTRY_HEADER_BYTES + len(batch) for _, _, batch in appended)
    log.close()
    assert open_descriptors() == descriptors


def test_reading_every_segment_keeps_at_most_the_shards_bound_of_files_open(tmp_path):
    # Given a closed log of 300 segments, opened with a cache of 8 files
    appended = closed_log_of_many_segments(tmp_path / "p", 300)
    descriptors = open_descriptors()
    files = SegmentFiles(open_max=8)
    log = PartitionLog.open(tmp_path / "p", SMALL_SEGMENTS, files=files)
    # When every entry is read, forwards and then backwards
    assert read_all(log) == appended
    for base_offset, record_count, batch in reversed(appended):
        [(header, read)] = list(iter_entries(log.read(base_offset, 1, log.end_offset)))
        assert (header.base_offset, bytes(read)) == (base_offset, batch)
    # Then at most 8 older segments' files and the active one's were open
    assert len(files) == 8 and open_descriptors() == descriptors + 1 + 8
    # And appends go on, rolling new segments without holding more files
    for n in range(20):
        log.append(b"y" * 3000, 1, 60_000 + n)
    assert open_descriptors() == descriptors + 1 + 8
    log.close()
    assert open_descriptors() == descriptors and len(files) == 0


def test_retention_reads_only_the_oldest_segments_it_judges(tmp_path):
    # Given a closed log of 100 segments with old timestamps, reopened with a cache of 4
    closed_log_of_many_segments(tmp_path / "p", 100)
    config = LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN, index_interval_bytes=512,
                       retention_ms=-1, retention_bytes=40 * 3100)
    files = SegmentFiles(open_max=4)
    log = PartitionLog.open(tmp_path / "p", config, files=files)
    # When retention by size deletes the oldest 60 or so / Then no segment file is opened for it
    assert log.enforce_retention().segments >= 59
    assert len(files) == 0
    log.close()


# --- Retention and timestamps ------------------------------------------------------


def test_a_record_stamped_far_in_the_future_does_not_keep_its_segment_past_retention(tmp_path):
    # Given a log with 1-minute retention whose clock we drive, and a record stamped
    # 2**63 - 1 ms (issue 11: now - max_timestamp was negative, so that segment and
    # every later one stayed for good)
    clock = FakeClock(now_ms=1_000_000)
    config = LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN, retention_ms=60_000)
    log = PartitionLog.open(tmp_path / "p", config, clock_ms=clock)
    log.append(b"f" * 3000, 1, 2**63 - 1)
    # And later records stamped with the clock, each segment written a minute after the last
    for _ in range(3):
        clock.now_ms += 60_000
        log.append(b"n" * 3000, 1, clock.now_ms)
    assert len(log.segments) == 4
    # When retention runs 1 ms before the third segment's last write is a minute old
    clock.now_ms -= 1
    kept = log.enforce_retention()
    # Then the future-stamped segment and the first stamped one went: their last
    # writes are more than a minute ago; the others are within it
    assert kept.segments == 2 and log.start_offset == 2
    # And a minute later every segment but the active one has gone
    clock.now_ms += 60_000 + 1
    assert log.enforce_retention().segments == 1 and log.start_offset == 3
    log.close()


def test_after_a_restart_a_segments_last_write_is_its_files_modification_time(tmp_path):
    # Given a closed log whose first segment holds a record stamped an hour ahead
    # of the wall clock, and whose file was last written two minutes ago
    config = LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN, retention_ms=60_000)
    log = PartitionLog.open(tmp_path / "p", config)
    now_ms = log._clock_ms()
    log.append(b"f" * 3000, 1, now_ms + 3_600_000)
    log.append(b"n" * 3000, 1, now_ms)
    log.close()
    first = log.segments[0].log_path
    two_minutes_ago_s = (now_ms - 120_000) / 1000
    os.utime(first, (two_minutes_ago_s, two_minutes_ago_s))
    # When it is reopened and retention runs
    reopened = PartitionLog.open(tmp_path / "p", config)
    # Then the first segment is deleted, though its record claims to be from the future
    assert reopened.enforce_retention().segments == 1 and reopened.start_offset == 1
    reopened.close()


def test_records_stamped_in_the_past_expire_by_their_timestamps_as_in_kafka(tmp_path):
    # Given a segment written just now whose records are stamped two minutes ago
    clock = FakeClock(now_ms=10_000_000)
    config = LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN, retention_ms=60_000)
    log = PartitionLog.open(tmp_path / "p", config, clock_ms=clock)
    log.append(b"o" * 3000, 1, clock.now_ms - 120_000)
    log.append(b"n" * 3000, 1, clock.now_ms)
    # When retention runs / Then it is deleted: its newest record is past retention
    assert log.enforce_retention().segments == 1
    log.close()


INVARIANTS_SCRIPT = """
import sys
from pathlib import Path
from plinth.shards.offset_index import OffsetIndex
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.time_index import TimeIndex

def offset_index_backwards():
    index = OffsetIndex(0)
    index.append(5, 10)
    index.append(4, 20)

def time_index_backwards():
    index = TimeIndex(0)
    index.append(100, 5)
    index.append(200, 4)

log = PartitionLog.open(Path(sys.argv[1]), LogConfig())
log.append(b"x", 2, 0)
attempts = {
    "empty batch": lambda: log.append(b"", 1, 0),
    "segment offset out of sequence": lambda: log.segments[-1].append(5, 0, 1, b"x"),
    "continue before the end": lambda: log.continue_at(1),
    "read past the end": lambda: log.read(0, 100, 3),
    "offset index backwards": offset_index_backwards,
    "time index backwards": time_index_backwards,
    "truncate past the end": lambda: log.truncate_to(3),
    "truncate inside an entry": lambda: log.truncate_to(1),
    "append entries checked against another end": lambda: log.append_checked(
        log.check_entries(b"")._replace(base_offset=7)),
}
unchecked = []
for name, attempt in attempts.items():
    try:
        attempt()
    except AssertionError:
        continue
    unchecked.append(name)
print("unchecked:", unchecked)
"""


def test_the_logs_invariants_are_checked_under_python_dash_o_too(tmp_path):
    import subprocess
    import sys

    # Given a script that breaks one invariant of each storage class in turn
    # When it runs with assert statements stripped (python -O)
    result = subprocess.run([sys.executable, "-O", "-c", INVARIANTS_SCRIPT, str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    # Then each broken invariant still raised AssertionError
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unchecked: []"


# --- Truncation (a follower cut back to where it agrees with its leader) ----------


def entry_boundaries(appended):
    """Every base offset of ``appended`` and the end offset after the last batch."""
    return [base_offset for base_offset, _, _ in appended] + [
        appended[-1][0] + appended[-1][1]]


def test_truncating_inside_the_active_segment_cuts_it_and_reports_the_cut(tmp_path):
    # Given a log of 5 entries in one segment
    log = PartitionLog.open(tmp_path, LogConfig())
    appended = append_batches(log, 5, size_max=200)
    size_bytes = log.size_bytes
    cut_offset = appended[3][0]
    # When it is truncated to the base offset of its 4th entry
    result = log.truncate_to(cut_offset)
    # Then the last two entries are gone, durably, and the result says so
    kept_bytes = sum(LOG_ENTRY_HEADER_BYTES + len(batch) for _, _, batch in appended[:3])
    assert (result.old_end_offset, result.end_offset) == (appended[-1][0] + appended[-1][1],
                                                           cut_offset)
    assert (result.segments_deleted, result.bytes, result.entries) == (
        0, size_bytes - kept_bytes, 2)
    assert (log.end_offset, log.flushed_end_offset, log.size_bytes) == (cut_offset, cut_offset,
                                                                         kept_bytes)
    assert os.path.getsize(log.segments[-1].log_path) == kept_bytes
    assert read_all(log) == appended[:3]


def test_truncating_into_an_older_segment_deletes_the_later_ones_and_appends_go_on_there(
        tmp_path):
    # Given a log of many segments, reopened so its older segments are unopened
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    log.close()
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    segments_before = len(log.segments)
    third = log.segments[2]
    middle = next(i for i, entry in enumerate(appended)
                  if third.base_offset < entry[0] < third.end_offset)
    # When it is truncated to an entry in the middle of its third segment
    result = log.truncate_to(appended[middle][0])
    # Then the later segments' files are gone and the third is the active one, cut
    assert result.segments_deleted == segments_before - 3
    assert [s.base_offset for s in log.segments] == [s.base_offset for s in log.segments[:3]]
    assert sorted(p.name for p in tmp_path.glob("*.log")) == [
        s.log_path.name for s in log.segments]
    assert log.segments[-1] is third and log.end_offset == appended[middle][0]
    assert read_all(log) == appended[:middle]
    # And appends continue at the cut, in that segment, and survive a reopening
    assert log.append(b"after the cut", 2, 0) == appended[middle][0]
    assert len(log.segments) == 3
    log.close()
    reopened = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    assert read_all(reopened) == appended[:middle] + [(appended[middle][0], 2, b"after the cut")]


def test_truncating_at_entry_boundaries_anywhere_keeps_exactly_the_entries_before_them(tmp_path):
    rng = random.Random(12)
    # Given a log of several segments, for every third of its entry boundaries and
    # its end (segment boundaries, starts, middles and ends of segments among them)
    source = PartitionLog.open(tmp_path / "source", SMALL_SEGMENTS)
    appended = append_batches(source, 40)
    boundaries = entry_boundaries(appended)
    for i, cut_offset in enumerate(boundaries[::3] + boundaries[-1:]):
        directory = tmp_path / str(i)
        log = PartitionLog.open(directory, SMALL_SEGMENTS)
        append_batches(log, 40)
        if rng.random() < 0.5:   # older segments unopened, or opened by a read
            log.close()
            log = PartitionLog.open(directory, SMALL_SEGMENTS)
        # When it is truncated there
        log.truncate_to(cut_offset)
        # Then exactly the entries before it remain, by every lookup
        kept = [entry for entry in appended if entry[0] < cut_offset]
        assert log.end_offset == cut_offset
        assert read_all(log) == kept
        assert log.offset_for_timestamp(50_000 + len(kept)) == cut_offset
        assert log.offset_for_timestamp(0) == log.start_offset
        # And reopening it (as after a crash) finds the same, with nothing to recover
        reopened = PartitionLog.open(directory, SMALL_SEGMENTS)
        assert reopened.recovery.bytes_truncated == 0
        assert read_all(reopened) == kept and reopened.end_offset == cut_offset
        reopened.close()
        # And entries appended after the cut are indexed and found by time too
        later = [(log.append(b"z" * 600, 1, 90_000 + k), 1, b"z" * 600) for k in range(8)]
        assert read_all(log) == kept + later
        assert log.offset_for_timestamp(90_005) == later[5][0]
        log.close()


def test_truncating_to_the_end_cuts_nothing(tmp_path):
    log = PartitionLog.open(tmp_path, LogConfig())
    append_batches(log, 3)
    end_offset = log.end_offset
    assert tuple(vars(log.truncate_to(end_offset)).values()) == (end_offset, end_offset, 0, 0, 0)
    assert log.end_offset == end_offset


def test_truncating_below_the_start_empties_the_log_to_start_there(tmp_path):
    # Given a log whose retention deleted its first segments
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN,
                                               retention_bytes=2 * SEGMENT_BYTES_MIN))
    append_batches(log, 60)
    log.enforce_retention()
    start_offset, segments, size_bytes = log.start_offset, len(log.segments), log.size_bytes
    assert start_offset > 10
    # When it is truncated below its start offset
    result = log.truncate_to(10)
    # Then it is empty and starts there, with one segment, and stays so when reopened
    assert (result.segments_deleted, result.bytes, result.end_offset) == (segments, size_bytes, 10)
    assert (log.start_offset, log.end_offset, log.size_bytes) == (10, 10, 0)
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["00000000000000000010.log"]
    assert log.append(b"rebuilt", 1, 0) == 10
    log.close()
    assert read_all(PartitionLog.open(tmp_path, LogConfig())) == [(10, 1, b"rebuilt")]


@pytest.mark.parametrize("where", ["inside an entry", "past the end", "in a gap"])
def test_truncating_anywhere_but_an_entry_boundary_fails_loudly_and_deletes_nothing(
        tmp_path, where):
    # Given a log of several segments, one of them after a gap
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 40)
    gap_end = log.end_offset + 100
    log.continue_at(gap_end)
    log.append(b"after the gap", 1, 0)
    files = sorted(tmp_path.iterdir())
    offset = {"inside an entry": next(b + 1 for b, count, _ in appended if count > 1),
              "past the end": log.end_offset + 1, "in a gap": gap_end - 50}[where]
    # When it is truncated there / Then a programmer error is raised and nothing changed
    with pytest.raises(AssertionError, match=str(offset)):
        log.truncate_to(offset)
    assert sorted(tmp_path.iterdir()) == files
    assert read_all(log, offset=gap_end) == [(gap_end, 1, b"after the gap")]


def test_a_truncation_the_disk_refuses_half_way_leaves_a_prefix_of_the_log(
        tmp_path, monkeypatch):
    # Given a log of several segments
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    appended = append_batches(log, 60)
    log.flush()
    second = log.segments[1]
    cut_offset = next(e[0] for e in appended if second.base_offset < e[0] < second.end_offset)
    # When truncating into the second segment, the disk refuses to cut it
    def refuse(fd, length):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "ftruncate", refuse)
    with pytest.raises(StorageError, match="cannot cut"):
        log.truncate_to(cut_offset)
    monkeypatch.undo()
    # Then reopening the log (as after a crash) finds the entries up to the second
    # segment's end: a prefix of the log, consistent, with nothing to recover
    reopened = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    assert reopened.recovery.bytes_truncated == 0
    assert reopened.end_offset == second.end_offset
    assert read_all(reopened) == [e for e in appended if e[0] < second.end_offset]


# --- Replicated entries (a follower appends its leader's entries as stored) ---------


def leader_entries(log, offset=None):
    """Every entry of ``log`` from ``offset`` on, as stored: what a leader's fetch serves."""
    offset = log.start_offset if offset is None else offset
    chunks = []
    while offset < log.end_offset:
        data = log.read(offset, 1 << 20, log.end_offset)
        chunks.append(bytes(data))
        *_, (last, _) = iter_entries(data)
        offset = last.end_offset
    return b"".join(chunks)


def test_a_follower_stores_its_leaders_entries_byte_for_byte_and_rolls_as_it_did(tmp_path):
    # Given a leader's log of many segments
    clock = FakeClock()
    leader = PartitionLog.open(tmp_path / "leader", SMALL_SEGMENTS, clock_ms=clock)
    appended = append_batches(leader, 60)
    # When a follower appends its entries in runs of a few entries each
    follower = PartitionLog.open(tmp_path / "follower", SMALL_SEGMENTS, clock_ms=clock)
    data = leader_entries(leader)
    boundaries = [0]
    for _, _, batch in appended:
        boundaries.append(boundaries[-1] + LOG_ENTRY_HEADER_BYTES + len(batch))
    for start, end in zip(boundaries[:-1:7], boundaries[7::7] + [boundaries[-1]]):
        assert follower.append_entries(memoryview(data)[start:end]) == follower.end_offset
    # Then the follower's segments are the leader's, byte for byte, and read the same
    assert [s.base_offset for s in follower.segments] == [s.base_offset for s in leader.segments]
    leader.close(), follower.close()
    for mine, theirs in zip(follower.segments, leader.segments):
        assert mine.log_path.read_bytes() == theirs.log_path.read_bytes()
        assert mine.index_path.read_bytes() == theirs.index_path.read_bytes()
        assert mine.time_index_path.read_bytes() == theirs.time_index_path.read_bytes()
    assert read_all(PartitionLog.open(tmp_path / "follower", SMALL_SEGMENTS)) == appended


def test_replicated_entries_are_not_fsynced_until_flush(tmp_path):
    leader = PartitionLog.open(tmp_path / "leader", LogConfig())
    append_batches(leader, 3)
    follower = PartitionLog.open(tmp_path / "follower", LogConfig())
    assert follower.append_entries(leader_entries(leader)) == leader.end_offset
    assert follower.flushed_end_offset == 0
    follower.flush()
    assert follower.flushed_end_offset == leader.end_offset


def test_a_flipped_byte_anywhere_in_replicated_entries_refuses_the_whole_run(tmp_path):
    # Given a leader's run of 3 entries and a follower holding the entries before them
    leader = PartitionLog.open(tmp_path / "leader", LogConfig())
    append_batches(leader, 2, size_max=60)
    follower = PartitionLog.open(tmp_path / "follower", LogConfig())
    follower.append_entries(leader_entries(leader))
    start = leader.end_offset
    append_batches(leader, 3, seed=1, size_max=60)
    run = leader_entries(leader, start)
    size_bytes = follower.size_bytes
    for position in range(len(run)):
        # When any one byte of the run is flipped
        flipped = bytearray(run)
        flipped[position] ^= 0x04
        # Then the whole run is refused, naming the directory and an offset, and
        # not a byte of it is stored
        with pytest.raises(CorruptDataError, match=rf"{tmp_path / 'follower'}: replicated "
                                                   rf"entries refused at offset \d+"):
            follower.append_entries(bytes(flipped))
        assert (follower.end_offset, follower.size_bytes) == (start, size_bytes)
    assert os.path.getsize(follower.segments[-1].log_path) == size_bytes
    # And the run as stored is taken
    assert follower.append_entries(run) == leader.end_offset


@pytest.mark.parametrize("case", ["a gap before them", "an overlap", "a torn last entry",
                                  "offsets not contiguous inside"])
def test_replicated_entries_must_run_on_from_the_logs_end_whole(tmp_path, case):
    # Given a leader's log of 4 entries and a follower holding the first one
    leader = PartitionLog.open(tmp_path / "leader", LogConfig())
    appended = append_batches(leader, 4, size_max=60)
    follower = PartitionLog.open(tmp_path / "follower", LogConfig())
    follower.append_entries(leader_entries(leader)[:LOG_ENTRY_HEADER_BYTES + len(appended[0][2])])
    second, third, fourth = (leader_entries(leader, appended[i][0]) for i in (1, 2, 3))
    second = second[:len(second) - len(third)]
    third = third[:len(third) - len(fourth)]
    run, offset = {"a gap before them": (third + fourth, appended[1][0]),
                   "an overlap": (leader_entries(leader), appended[1][0]),
                   "a torn last entry": (second + third[:-1], appended[2][0]),
                   "offsets not contiguous inside": (second + fourth, appended[2][0])}[case]
    # When it is given them / Then it refuses them all, naming where
    with pytest.raises(CorruptDataError, match=f"refused at offset {offset}"):
        follower.append_entries(run)
    assert follower.end_offset == appended[1][0]


def test_appending_replicated_entries_after_a_truncation_continues_at_the_cut(tmp_path):
    # Given a follower that holds entries its leader does not (a diverged tail)
    leader = PartitionLog.open(tmp_path / "leader", SMALL_SEGMENTS)
    common = append_batches(leader, 20)
    follower = PartitionLog.open(tmp_path / "follower", SMALL_SEGMENTS)
    follower.append_entries(leader_entries(leader))
    append_batches(follower, 20, seed=7)
    new = append_batches(leader, 20, seed=8)
    cut_offset = new[0][0]
    # When it truncates to where the leader's history diverges, then appends its entries
    follower.truncate_to(cut_offset)
    follower.append_entries(leader_entries(leader, cut_offset))
    # Then it holds exactly the leader's log, before and after a reopening
    assert read_all(follower) == common + new == read_all(leader)
    follower.close()
    assert read_all(PartitionLog.open(tmp_path / "follower", SMALL_SEGMENTS)) == common + new


def test_a_follower_rolls_by_age_before_the_same_entry_as_its_leader(tmp_path):
    # Given a leader and a follower whose empty active segments are older than segment_ms_max
    clock = FakeClock()
    config = LogConfig(segment_ms_max=60_000)
    leader = PartitionLog.open(tmp_path / "leader", config, clock_ms=clock)
    follower = PartitionLog.open(tmp_path / "follower", config, clock_ms=clock)
    clock.now_ms += 60_000
    # When the leader appends 3 batches and the follower takes them in one run
    append_batches(leader, 3)
    follower.append_entries(leader_entries(leader))
    # Then both rolled before the second entry (the first went to the empty segment)
    assert len(leader.segments) == 2
    assert [s.base_offset for s in follower.segments] == [s.base_offset for s in leader.segments]


def test_a_log_restarted_past_its_end_is_empty_there_and_takes_the_leaders_entries(tmp_path):
    # Given a leader whose retention deleted what a follower lacks
    leader = PartitionLog.open(tmp_path / "leader", LogConfig(
        segment_bytes_max=SEGMENT_BYTES_MIN, retention_bytes=2 * SEGMENT_BYTES_MIN))
    append_batches(leader, 60)
    leader.enforce_retention()
    follower = PartitionLog.open(tmp_path / "follower", SMALL_SEGMENTS)
    append_batches(follower, 3)
    old_end_offset = follower.end_offset
    # When the follower restarts its log at the leader's start offset
    result = follower.restart_at(leader.start_offset)
    # Then it is empty there, its old segment gone, and it takes the leader's entries
    assert (result.old_end_offset, result.end_offset, result.segments_deleted) == (
        old_end_offset, leader.start_offset, 1)
    assert (follower.start_offset, follower.end_offset) == (leader.start_offset,) * 2
    assert follower.append_entries(leader_entries(leader)) == leader.end_offset
    follower.close()
    assert read_all(PartitionLog.open(tmp_path / "follower", SMALL_SEGMENTS)) == read_all(leader)


# --- Tiered storage's configs (issue 14): read, resolved, not acted on yet ----------------

def test_a_topic_config_without_tiering_keys_gives_remote_storage_off_and_local_as_total():
    # Given a topic config stored before tiered storage existed / When it is read
    config = LogConfig.from_topic_config({"retention.ms": "60000", "retention.bytes": "5000000"})
    # Then remote storage is off and local retention follows retention.* (Kafka's -2)
    assert config.remote_storage_enable is False
    assert (config.local_retention_ms, config.local_retention_bytes) == (-2, -2)
    assert (config.local_retention_ms_resolved, config.local_retention_bytes_resolved) == \
        (60_000, 5_000_000)


@pytest.mark.parametrize("local_ms, total_ms, resolved_ms", [
    (-2, 86_400_000, 86_400_000),   # -2: as retention.ms
    (-2, -1, -1),                   # -2 of an unbounded log: unbounded
    (3_600_000, 86_400_000, 3_600_000),
    (-1, -1, -1),                   # keep everything locally, and everything in all
    (3_600_000, -1, 3_600_000),
])
def test_local_retention_minus_2_resolves_to_retention_and_other_values_stay(
        local_ms, total_ms, resolved_ms):
    # Given a tiered topic's config / When the log reads it
    config = LogConfig.from_topic_config({
        "remote.storage.enable": "true", "retention.ms": str(total_ms),
        "local.retention.ms": str(local_ms), "retention.bytes": "-1",
        "local.retention.bytes": "1048576"})
    # Then the configured values are kept as given, and resolved in one place
    assert config.remote_storage_enable is True
    assert config.local_retention_ms == local_ms
    assert config.local_retention_ms_resolved == resolved_ms
    assert config.local_retention_bytes_resolved == 1_048_576


@pytest.mark.parametrize("key, value, message", [
    ("local_retention_ms", -3, "local_retention_ms is -3; it must be at least -2"),
    ("local_retention_bytes", -3, "local_retention_bytes is -3; it must be at least -2"),
    ("remote_storage_enable", "true", "remote_storage_enable must be a bool, got 'true'"),
])
def test_log_config_refuses_tiering_values_outside_their_meaning(key, value, message):
    with pytest.raises(InvalidConfigError, match=message):
        LogConfig(**{key: value})


def test_local_retention_does_not_delete_anything_yet(tmp_path):
    # Given a tiered log that keeps everything in all but asks its disk to keep 4 KiB
    config = LogConfig(segment_bytes_max=4096, retention_ms=-1, retention_bytes=-1,
                       remote_storage_enable=True, local_retention_ms=1,
                       local_retention_bytes=4096)
    plog = PartitionLog.open(tmp_path / "p", config)
    for _ in range(20):
        plog.append(b"x" * 1000, 1, 1_000)
    segments_before = len(plog.segments)
    # When retention runs (nothing is uploaded: there is no uploader yet)
    result = plog.enforce_retention()
    # Then nothing was deleted: local retention acts only on uploaded segments
    assert result.segments == 0 and len(plog.segments) == segments_before > 1
    assert plog.start_offset == 0
    plog.close()


def test_deleting_segments_before_an_offset_deletes_only_the_segments_that_end_there(tmp_path):
    # Given a log of several 4 KiB segments
    config = LogConfig(segment_bytes_max=4096, retention_ms=-1, retention_bytes=-1)
    plog = PartitionLog.open(tmp_path / "p", config)
    for _ in range(20):
        plog.append(b"x" * 1000, 1, 1_000)
    first, second = plog.segments[0], plog.segments[1]
    # When the segments before an offset inside the second segment are deleted
    result = plog.delete_segments_before(second.end_offset - 1)
    # Then only the first went: the second still holds offsets at or past it
    assert (result.segments, result.bytes) == (1, first.size_bytes)
    assert plog.start_offset == result.start_offset == second.base_offset
    assert not first.log_path.exists() and second.log_path.exists()
    # And even an offset past the end never deletes the active segment
    plog.delete_segments_before(plog.end_offset + 100)
    assert len(plog.segments) == 1 and plog.start_offset == plog.active_base_offset
    assert plog.end_offset == 20
    plog.close()


def test_roll_active_rolls_a_written_active_segment_and_leaves_an_empty_one(tmp_path):
    # Given a log whose active segment holds entries
    log = PartitionLog.open(tmp_path / "t-0", SMALL_SEGMENTS)
    appended = append_batches(log, 2)
    end_offset = log.end_offset
    # When it is rolled (a sealed log, for its upload)
    assert log.roll_active()
    # Then the written segment is rolled whole, a new empty one starts at the end,
    # and every entry still reads
    assert [(s.base_offset, s.end_offset) for s in log.segments] == \
        [(0, end_offset), (end_offset, end_offset)]
    assert read_all(log) == appended
    # And an empty active segment is not rolled again
    assert not log.roll_active() and len(log.segments) == 2
    log.close()
