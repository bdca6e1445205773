"""One partition's remote segments and their states, journaled (shards/tier/remote_log_metadata.py)."""

from __future__ import annotations

import os

import pytest

from plinth import limits
from plinth.shards.tier.remote_log_metadata import (
    JOURNAL_FILE, RemoteLogMetadata, SegmentState, recover_journal)
from plinth.shards.tier.remote_segment import ObjectDigest, RemoteSegment, new_segment_id


def remote_segment(base_offset, end_offset, *, size_bytes=1000, max_timestamp_ms=0,
                   created_ms=0):
    objects = {kind: ObjectDigest(size_bytes if kind == "log" else 8, 0)
               for kind in ("log", "index", "timeindex", "leader-epochs")}
    return RemoteSegment(topic="t", topic_id="5c0e3b6a91d24f7e8a1b2c3d4e5f6071", partition=0, segment_id=new_segment_id(),
                         base_offset=base_offset, end_offset=end_offset,
                         max_timestamp_ms=max_timestamp_ms, leader_epoch=0,
                         created_ms=created_ms, objects=objects)


def uploaded(metadata, *segments):
    for segment in segments:
        metadata.copy_started(segment, 1)
        metadata.copy_finished(segment.segment_id, 2)
    return list(segments)


@pytest.fixture
def metadata(tmp_path):
    metadata, recovery = RemoteLogMetadata.open(tmp_path)
    assert recovery.bytes_truncated == 0
    yield metadata
    metadata.close()


def reopen(metadata):
    metadata.close()
    return RemoteLogMetadata.open(metadata.directory)


def test_every_state_survives_a_restart(metadata):
    # Given one segment in each state
    started, finished, deleting, deleted = (remote_segment(i * 100, i * 100 + 100)
                                            for i in range(4))
    metadata.copy_started(started, 1)
    uploaded(metadata, finished, deleting, deleted)
    metadata.delete_started(deleting.segment_id, 3)
    metadata.delete_started(deleted.segment_id, 3)
    metadata.delete_finished(deleted.segment_id, 4)
    # When the shard restarts
    reopened, recovery = reopen(metadata)
    # Then each is in its state, and the deleted one is forgotten
    assert recovery.bytes_truncated == 0 and recovery.entries_valid == 10
    assert [reopened.state_of(s.segment_id) for s in (started, finished, deleting, deleted)] == [
        SegmentState.COPY_SEGMENT_STARTED, SegmentState.COPY_SEGMENT_FINISHED,
        SegmentState.DELETE_SEGMENT_STARTED, None]
    assert reopened.copies_unfinished() == [started]
    assert reopened.deletes_unfinished() == [deleting]
    assert reopened.finished_segments() == [finished]
    reopened.close()


def test_a_torn_tail_is_cut_and_the_recovery_says_how_much_and_why(metadata):
    # Given two finished segments, and a third whose entry was torn by a crash
    first, second = uploaded(metadata, remote_segment(0, 100), remote_segment(100, 200))
    metadata.copy_started(remote_segment(200, 300), 5)
    path = metadata.journal_path
    whole_bytes = path.stat().st_size
    os.truncate(path, whole_bytes - 7)
    # When it is reopened
    reopened, recovery = reopen(metadata)
    # Then the torn entry is cut, and the recovery reports it
    assert recovery.entries_valid == 4
    assert 0 < recovery.bytes_truncated < whole_bytes
    assert "torn entry" in recovery.reason
    assert path.stat().st_size == whole_bytes - 7 - recovery.bytes_truncated
    assert reopened.finished_segments() == [first, second]
    assert reopened.copies_unfinished() == []
    # and appending after the cut works, and survives another restart
    third = uploaded(reopened, remote_segment(200, 300))[0]
    again, recovery = reopen(reopened)
    assert recovery.bytes_truncated == 0 and again.finished_segments() == [first, second, third]
    again.close()


def test_a_flipped_byte_cuts_the_journal_at_that_entry(metadata):
    first, second = uploaded(metadata, remote_segment(0, 100), remote_segment(100, 200))
    path = metadata.journal_path
    data = bytearray(path.read_bytes())
    _, records = recover_journal(path)
    assert len(records) == 4
    data[-30] ^= 0x04   # inside the last entry's payload: the second segment's COPY_SEGMENT_FINISHED
    path.write_bytes(bytes(data))
    reopened, recovery = reopen(metadata)
    assert "CRC mismatch" in recovery.reason and recovery.entries_valid == 3
    assert reopened.finished_segments() == [first]
    assert reopened.copies_unfinished() == [second]
    reopened.close()


def test_garbage_after_the_entries_is_cut(metadata, tmp_path):
    uploaded(metadata, remote_segment(0, 100))
    with open(metadata.journal_path, "ab") as journal:
        journal.write(b"\xff" * 100)
    reopened, recovery = reopen(metadata)
    assert recovery.bytes_truncated == 100 and "over" in recovery.reason
    assert len(reopened.finished_segments()) == 1
    reopened.close()


def test_a_state_change_out_of_order_is_a_programmer_error_and_writes_nothing(metadata):
    segment = remote_segment(0, 100)
    with pytest.raises(AssertionError, match="unknown"):
        metadata.copy_finished(segment.segment_id, 1)
    metadata.copy_started(segment, 1)
    with pytest.raises(AssertionError, match="COPY_SEGMENT_STARTED"):
        metadata.delete_finished(segment.segment_id, 1)
    with pytest.raises(AssertionError, match="already tracked"):
        metadata.copy_started(segment, 1)
    reopened, recovery = reopen(metadata)
    assert recovery.entries_valid == 1 and recovery.bytes_truncated == 0
    reopened.close()


def test_a_missing_journal_is_an_empty_metadata(tmp_path):
    metadata, recovery = RemoteLogMetadata.open(tmp_path / "new")
    assert tuple(recovery) == (0, 0, "")
    assert metadata.view().log_start_offset is None and metadata.view().end_offset is None
    assert metadata.view().remote_bytes == 0 and metadata.view().segment_for_offset(0) is None
    assert (tmp_path / "new" / JOURNAL_FILE).exists()
    metadata.close()


def test_the_reader_finds_the_segment_holding_an_offset(metadata):
    a, b, c = uploaded(metadata, remote_segment(0, 100), remote_segment(100, 250),
                       remote_segment(250, 300))
    assert [metadata.view().segment_for_offset(offset) for offset in (0, 99, 100, 249, 250, 299)] == [
        a, a, b, b, c, c]
    assert metadata.view().segment_for_offset(300) is None
    assert (metadata.view().log_start_offset, metadata.view().end_offset, metadata.view().remote_bytes) == (
        0, 300, 3000)


def test_where_two_uploads_overlap_the_later_leaders_wins(metadata):
    old = uploaded(metadata, remote_segment(0, 200, created_ms=1))[0]
    newer = uploaded(metadata, remote_segment(100, 300, created_ms=2))[0]
    assert metadata.view().segment_for_offset(50) == old
    assert metadata.view().segment_for_offset(150) == newer


def test_a_segment_being_deleted_is_no_longer_read_or_counted(metadata):
    a, b = uploaded(metadata, remote_segment(0, 100), remote_segment(100, 200))
    metadata.delete_started(a.segment_id, 5)
    assert metadata.view().segment_for_offset(50) is None
    assert metadata.view().log_start_offset == 100 and metadata.view().remote_bytes == 1000


def test_retention_deletes_a_prefix_by_time_and_by_bytes_counting_local_bytes(metadata):
    # Given four 1,000-byte segments, newest record at 10, 20, 30, 40 ms
    segments = uploaded(metadata, *(remote_segment(i * 100, i * 100 + 100, max_timestamp_ms=(i + 1) * 10)
                                    for i in range(4)))
    # Then by time: those older than now - retention_ms
    assert metadata.segments_past_retention(now_ms=100, retention_ms=75, retention_bytes=-1,
                                            local_only_bytes=0) == segments[:2]
    # and by bytes: while the log without one still holds retention_bytes, local included
    assert metadata.segments_past_retention(now_ms=0, retention_ms=-1, retention_bytes=2500,
                                            local_only_bytes=500) == segments[:2]
    assert metadata.segments_past_retention(now_ms=0, retention_ms=-1, retention_bytes=2500,
                                            local_only_bytes=0) == segments[:1]
    # and only a prefix goes: a segment that stays keeps every later one
    assert metadata.segments_past_retention(now_ms=100, retention_ms=75, retention_bytes=3500,
                                            local_only_bytes=0) == segments[:2]
    # and with both disabled nothing goes
    assert metadata.segments_past_retention(now_ms=0, retention_ms=-1, retention_bytes=-1,
                                            local_only_bytes=0) == []


def test_segments_wholly_below_the_delete_records_floor_go_whatever_their_age_and_size(metadata):
    # Given three segments [0, 100), [100, 200), [200, 300) that no retention would delete
    segments = uploaded(metadata, *(remote_segment(i * 100, i * 100 + 100) for i in range(3)))
    # When deleteRecords raised the log start floor to 150 (inside the second)
    doomed = metadata.segments_past_retention(now_ms=0, retention_ms=-1, retention_bytes=-1,
                                              local_only_bytes=0, log_start_floor=150)
    # Then the first goes, the one holding the new start stays; at 200 both go
    assert doomed == segments[:1]
    assert metadata.segments_past_retention(now_ms=0, retention_ms=-1, retention_bytes=-1,
                                            local_only_bytes=0, log_start_floor=200) == \
        segments[:2]


def test_a_journal_with_many_dead_entries_is_compacted_on_open(metadata, monkeypatch):
    monkeypatch.setattr(limits, "REMOTE_METADATA_ENTRIES_DEAD_MAX", 10)
    kept = uploaded(metadata, remote_segment(0, 100))[0]
    for i in range(1, 5):
        segment = uploaded(metadata, remote_segment(i * 100, i * 100 + 100))[0]
        metadata.delete_started(segment.segment_id, 3)
        metadata.delete_finished(segment.segment_id, 4)
    started = remote_segment(900, 1000)
    metadata.copy_started(started, 5)
    size_before = metadata.journal_path.stat().st_size
    reopened, _ = reopen(metadata)
    assert reopened.journal_path.stat().st_size < size_before
    _, records = recover_journal(reopened.journal_path)
    assert len(records) == 3
    assert reopened.finished_segments() == [kept] and reopened.copies_unfinished() == [started]
    reopened.close()


def test_the_finished_segments_are_read_from_a_journal_without_writing_to_it(metadata):
    from plinth.shards.tier.remote_log_metadata import finished_segments_in_journal

    # Given a journal with a finished copy, a started one, and a torn tail
    finished, started = remote_segment(0, 100), remote_segment(100, 200)
    uploaded(metadata, finished)
    metadata.copy_started(started, 3)
    with open(metadata.journal_path, "ab") as journal:
        journal.write(b"\x10\x00")
    size_bytes = metadata.journal_path.stat().st_size
    # When another thread reads what is readable from it
    segments = finished_segments_in_journal(metadata.directory)
    # Then it is the finished copy only, and the file is as it was (its owner cuts it)
    assert [s.segment_id for s in segments] == [finished.segment_id]
    assert metadata.journal_path.stat().st_size == size_bytes
    assert finished_segments_in_journal(metadata.directory / "nowhere") == []
