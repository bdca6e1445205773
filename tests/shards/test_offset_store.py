"""offset_store.py: committed offsets (with their metadata) and settings in a compacted
log on disk, deletions, and each group's last write time surviving restarts and
compaction; logs written before metadata still read."""

from __future__ import annotations

import errno
import logging
import os
import struct

import pytest

from plinth import limits
from plinth.errors import NotLeaderError, StorageError
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import BatchBuilder, decode_records
from plinth.shards.offset_store import DIR_NAME, OffsetStore
from plinth.shards.partition_log import LogConfig, PartitionLog
from tests.support import LostWriteback


class WallClock:
    def __init__(self, now_ms: int = 5_000_000):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def test_a_deleted_group_stays_deleted_after_a_reopen_and_others_are_untouched(tmp_path):
    # Given two groups with offsets and settings
    store = OffsetStore.open(tmp_path)
    store.commit("gone", {("t", 0): 1}, {"assignor": "range"})
    store.commit("kept", {("t", 0): 2})
    # When one is deleted
    store.delete(["gone", "never-was"])
    assert store.groups() == {"kept"} and store.offsets("gone") == {}
    store.close()
    # Then after a reopen (replay and compaction) it is still gone, the other kept
    store = OffsetStore.open(tmp_path)
    assert store.groups() == {"kept"} and store.offsets("kept") == {("t", 0): 2}
    assert store.setting("gone", "assignor") is None
    store.close()
    # And a group of that name may start afresh
    store = OffsetStore.open(tmp_path)
    store.commit("gone", {("t", 1): 9})
    store.close()
    store = OffsetStore.open(tmp_path)
    assert store.offsets("gone") == {("t", 1): 9}
    store.close()


def test_deleted_offsets_stay_deleted_after_reopens_and_compaction(tmp_path):
    # Given a group with offsets of two topics and a setting
    store = OffsetStore.open(tmp_path)
    store.commit("g", {("gone", 0): 5, ("gone", 1): 6, ("kept", 0): 7}, {"assignor": "range"})
    # When the offsets of one topic are deleted (and one the group never had)
    store.delete_offsets("g", [("gone", 0), ("gone", 1), ("never", 0)])
    assert store.offsets("g") == {("kept", 0): 7}
    store.close()
    # Then they stay deleted after a reopen that replays the tombstones, and after the
    # next, which reads the compacted log; the rest of the group is untouched
    for _ in range(2):
        store = OffsetStore.open(tmp_path)
        assert store.offsets("g") == {("kept", 0): 7}
        assert store.setting("g", "assignor") == "range"
        store.close()
    # And an offset of the deleted key may be committed again
    store = OffsetStore.open(tmp_path)
    store.commit("g", {("gone", 0): 1})
    store.close()
    store = OffsetStore.open(tmp_path)
    assert store.offsets("g") == {("kept", 0): 7, ("gone", 0): 1}
    store.close()


def test_a_groups_last_write_time_survives_reopens_and_compaction(tmp_path):
    # Given a group written at T, rewritten many times until T + 10 s
    wall = WallClock()
    store = OffsetStore.open(tmp_path, wall)
    for n in range(20):
        store.commit("g", {("t", 0): n})
        wall.now_ms += 500
    written_ms = store.written_ms("g")
    store.close()
    # When the store is reopened twice (the first compacts), an hour later
    wall.now_ms += 3_600_000
    for _ in range(2):
        store = OffsetStore.open(tmp_path, wall)
        # Then its last write time is still the last commit's, not the reopen's
        assert store.written_ms("g") == written_ms
        store.close()


def test_compaction_keeps_at_most_the_retention_of_age_for_long_expired_groups(tmp_path):
    # Given a group last written long before the retention
    wall = WallClock()
    store = OffsetStore.open(tmp_path, wall)
    store.commit("old", {("t", 0): 1})
    store.commit("old", {("t", 0): 2})
    store.close()
    # When the store is reopened (and compacted) far later
    wall.now_ms += 3 * limits.OFFSETS_RETENTION_MS
    store = OffsetStore.open(tmp_path, wall)
    # Then the group's write time is at most one retention ago: it is already due
    assert store.written_ms("old") == wall.now_ms - limits.OFFSETS_RETENTION_MS
    store.close()


# --- Metadata committed with offsets --------------------------------------------------

def test_metadata_committed_with_an_offset_survives_a_reopen_and_compaction(tmp_path):
    # Given offsets committed with metadata (one non-ASCII, one at the limit), one without
    store = OffsetStore.open(tmp_path)
    at_limit = "m" * limits.OFFSET_METADATA_BYTES_MAX
    store.commit("g", {("t", 0): 7, ("t", 1): 8, ("t", 2): 9},
                 metadata={("t", 0): "hello", ("t", 1): "état", ("t", 2): ""})
    store.commit("g", {("u", 0): 1}, metadata={("u", 0): at_limit})
    store.commit("g", {("u", 0): 2}, metadata={("u", 0): at_limit})   # garbage: compacts
    expected = {("t", 0): "hello", ("t", 1): "état", ("u", 0): at_limit}
    assert store.metadata("g") == expected
    store.close()
    # When it is reopened twice (the first replays and compacts, the second reads the
    # compacted log)
    for _ in range(2):
        store = OffsetStore.open(tmp_path)
        # Then every offset has its metadata back, the one committed without has none
        assert store.offsets("g") == {("t", 0): 7, ("t", 1): 8, ("t", 2): 9, ("u", 0): 2}
        assert store.metadata("g") == expected
        store.close()
    assert store.compaction.records_read == store.compaction.records_kept == 4


def test_a_later_commit_without_metadata_or_a_deletion_drops_the_earlier_metadata(tmp_path):
    # Given two offsets committed with metadata
    store = OffsetStore.open(tmp_path)
    store.commit("g", {("t", 0): 1, ("gone", 0): 1}, metadata={("t", 0): "a", ("gone", 0): "b"})
    # When one is committed again without metadata and the other's topic is deleted
    store.commit("g", {("t", 0): 2})
    store.delete_offsets("g", [("gone", 0)])
    # Then neither has metadata, now nor after a reopen
    assert store.metadata("g") == {}
    store.close()
    store = OffsetStore.open(tmp_path)
    assert store.offsets("g") == {("t", 0): 2} and store.metadata("g") == {}
    store.close()


def test_an_offset_record_from_before_metadata_still_reads_as_an_offset_without_it(tmp_path):
    # Given an offsets log written by a Plinth without metadata: each offset's value is
    # exactly 8 bytes, Int64 LE (and a record committed with metadata after the upgrade)
    write_raw_records(tmp_path, [(b"o\0g\0t\0" + b"0", struct.pack("<q", 41)),
                                 (b"o\0g\0t\0" + b"1", struct.pack("<q", 42) + b"new")])
    # When the store opens it
    store = OffsetStore.open(tmp_path)
    # Then the old record is an offset without metadata, the new one has its metadata
    assert store.offsets("g") == {("t", 0): 41, ("t", 1): 42}
    assert store.metadata("g") == {("t", 1): "new"}
    # And a commit without metadata still writes exactly the old 8-byte value
    store.commit("g", {("t", 0): 43})
    store.close()
    assert raw_values(tmp_path)[-1] == struct.pack("<q", 43)


def test_an_offset_record_shorter_than_its_offset_is_skipped_and_the_rest_read(
        tmp_path, caplog):
    # Given an offsets log whose middle record's value is 3 bytes (no record this store
    # writes: a bit of corruption the batch CRC did not see, or a foreign writer)
    write_raw_records(tmp_path, [(b"o\0g\0t\0" + b"0", struct.pack("<q", 5)),
                                 (b"o\0g\0t\0" + b"1", b"abc"),
                                 (b"o\0g\0t\0" + b"2", struct.pack("<q", 6) + b"m")])
    # When the store opens it
    with caplog.at_level(logging.WARNING):
        store = OffsetStore.open(tmp_path)
    # Then it skips that record, saying how long its value was, and reads the others
    assert store.offsets("g") == {("t", 0): 5, ("t", 2): 6}
    assert store.metadata("g") == {("t", 2): "m"}
    assert "a value of 3 bytes" in caplog.text
    store.close()


def test_compaction_cuts_records_with_large_metadata_into_batches_of_bounded_bytes(
        tmp_path, monkeypatch):
    # Given 12 offsets each with metadata at the limit, committed twice (so the log
    # holds garbage to compact), and a compaction batch bound of about two records
    monkeypatch.setattr(limits, "OFFSETS_COMPACT_BATCH_BYTES_MAX",
                        2 * limits.OFFSET_METADATA_BYTES_MAX)
    at_limit = "x" * limits.OFFSET_METADATA_BYTES_MAX
    offsets = {("t", p): p for p in range(12)}
    store = OffsetStore.open(tmp_path)
    for _ in range(2):
        store.commit("g", offsets, metadata={tp: at_limit for tp in offsets})
    store.close()
    # When the store reopens and compacts
    store = OffsetStore.open(tmp_path)
    store.close()
    # Then the compacted log holds the 12 records in batches of 2 (the second record,
    # a little over 4 KiB like each, passes the bound and ends its batch), and they
    # read back whole
    assert batch_record_counts(tmp_path) == [2] * 6
    store = OffsetStore.open(tmp_path)
    assert store.offsets("g") == offsets
    assert store.metadata("g") == {tp: at_limit for tp in offsets}
    store.close()


def write_raw_records(shard_dir, records: list[tuple[bytes, bytes]]) -> None:
    """Records written to a shard's offsets log directly, one batch, as another
    version of the store (or corruption) might have left them."""
    plog = PartitionLog.open(shard_dir / DIR_NAME, LogConfig(retention_ms=-1, retention_bytes=-1))
    builder = BatchBuilder()
    for key, value in records:
        builder.append(key, value, 1_000)
    plog.append(builder.build(), builder.record_count, 1_000)
    plog.close()


def _entries(shard_dir):
    plog = PartitionLog.open(shard_dir / DIR_NAME, LogConfig(retention_ms=-1, retention_bytes=-1))
    try:
        data = plog.read(plog.start_offset, 1 << 26, plog.end_offset)
        return [(header, bytes(batch)) for header, batch in iter_entries(data)]
    finally:
        plog.close()


def batch_record_counts(shard_dir) -> list[int]:
    return [header.record_count for header, _ in _entries(shard_dir)]


def raw_values(shard_dir) -> list[bytes]:
    return [record.value for header, batch in _entries(shard_dir)
            for record in decode_records(DIR_NAME, 0, header.base_offset, batch, 0)]


# --- A replicated slot's store (OffsetStore.load) ---------------------------------------

class SlotLog:
    """The shard's side of a replicated slot: appends to a real partition log (what
    ShardServer._slot_append does, without the followers), or refuses like a deposed
    leader."""

    def __init__(self, directory):
        self.log = PartitionLog.open(directory, SLOT_CONFIG)
        self.refusal: Exception | None = None

    def append(self, batch: bytes, record_count: int, now_ms: int) -> int:
        if self.refusal is not None:
            raise self.refusal
        return self.log.append(batch, record_count, now_ms)


SLOT_CONFIG = LogConfig(retention_ms=-1, retention_bytes=-1)


def test_a_slot_store_writes_through_the_replicated_append_and_replays_without_compacting(
        tmp_path):
    # Given a slot's store with a group rewritten several times, then deleted, and another
    slot = SlotLog(tmp_path / "slot")
    store = OffsetStore.load(slot.log, slot.append)
    for n in range(3):
        store.commit("g", {("t", 0): n}, {"assignor": "range"})
    store.delete(["g"])
    store.commit("h", {("t", 1): 4})
    end_offset = slot.log.end_offset
    store.close()
    # Then every record went to the slot's log, and closing the store left it open
    assert store.replicated and end_offset == 8 and slot.log.end_offset == 8
    # When the next leader replays it
    replayed = OffsetStore.load(slot.log, slot.append)
    # Then it has what the first store had, and the log is not rewritten (replicas would
    # differ): every record is still there
    assert replayed.groups() == {"h"} and replayed.offsets("h") == {("t", 1): 4}
    assert (replayed.compaction.records_read, replayed.compaction.records_kept) == (8, 1)
    assert slot.log.start_offset == 0 and slot.log.end_offset == 8
    slot.log.close()


def test_commits_the_disk_refuses_are_logged_once_per_outage_and_their_end_once(
        tmp_path, monkeypatch, caplog):
    # Given a shard's store whose disk refuses three commits in a row, then takes them
    store = OffsetStore.open(tmp_path)
    store.commit("g", {("t", 0): 1})

    def read_only(fd, buffers):
        raise OSError(errno.EROFS, "Read-only file system")
    with caplog.at_level(logging.INFO, logger="plinth.shards.offset_store"):
        monkeypatch.setattr(os, "writev", read_only)
        for offset in (2, 3, 4):
            with pytest.raises(StorageError):
                store.commit("g", {("t", 0): offset})
        monkeypatch.undo()
        store.commit("g", {("t", 0): 9})
    # Then the outage is one WARNING naming the store, the cause and who gets the error,
    # and its end one INFO (tester T-fd saw commits refused with no line at all)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    assert lines[0][1].startswith(f"appends to {tmp_path / DIR_NAME} fail: cannot append ")
    assert lines[0][1].endswith("Read-only file system; offset commits get StorageError until "
                                "the disk takes writes again (said once until then)")
    assert lines[1][1] == f"appends to {tmp_path / DIR_NAME} succeed again, after 3 failed"
    assert store.offsets("g") == {("t", 0): 9}
    store.close()


def test_a_commit_whose_fsync_fails_is_cut_so_later_commits_survive_a_reopen(tmp_path,
                                                                              monkeypatch):
    # Given a store whose disk loses the writeback of its next fsync (the next one
    # succeeds, as the kernel reports a failed writeback once)
    store = OffsetStore.open(tmp_path)
    store.commit("g", {("t", 0): 1})
    fsync = LostWriteback(monkeypatch)
    fsync.armed = True
    # When a commit's fsync fails, and the next commit succeeds
    with pytest.raises(StorageError, match="cannot fsync"):
        store.commit("g", {("t", 0): 2})
    store.commit("g", {("t", 0): 3})
    store.close()
    # Then after a reopen the acknowledged commit is there (before: the replay stopped
    # at the lost commit's zeros, and the later one was lost with it)
    store = OffsetStore.open(tmp_path)
    assert store.offsets("g") == {("t", 0): 3}
    store.close()


def test_a_slot_store_whose_append_is_refused_keeps_its_state(tmp_path):
    # Given a slot's store with a commit
    slot = SlotLog(tmp_path / "slot")
    store = OffsetStore.load(slot.log, slot.append)
    store.commit("g", {("t", 0): 1})
    # When its shard stops leading and refuses the next append
    slot.refusal = NotLeaderError("deposed")
    with pytest.raises(NotLeaderError):
        store.commit("g", {("t", 0): 2})
    # Then the store still answers the last commit that was written
    assert store.offsets("g") == {("t", 0): 1}
    slot.log.close()


def test_a_slot_log_with_a_corrupt_batch_replays_the_commits_before_it(tmp_path):
    # Given a slot log of three commits, the middle one's bytes rotten on disk
    slot = SlotLog(tmp_path / "slot")
    store = OffsetStore.load(slot.log, slot.append)
    store.commit("g", {("t", 0): 1})
    middle = slot.log.end_offset
    store.commit("g", {("t", 0): 2})
    store.commit("g", {("t", 1): 3})
    slot.log.flush()
    slot.log.close()
    (segment,) = (tmp_path / "slot").glob("*.log")
    data = bytearray(segment.read_bytes())
    first_size = len(data) // 3   # the three batches are the same size
    data[first_size + first_size // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    # When the log is recovered and replayed (as a shard that leads the slot next does)
    recovered = PartitionLog.open(tmp_path / "slot", SLOT_CONFIG)
    replayed = OffsetStore.load(recovered, slot.append)
    # Then recovery cut the log at the bad batch, and the store has the commit before it
    # only (the replica then fetches the rest from its leader: test_shard_server_group_slots)
    assert recovered.end_offset == middle
    assert replayed.offsets("g") == {("t", 0): 1}
    recovered.close()


def test_a_slot_log_whose_prefix_retention_deleted_replays_from_its_last_snapshot(tmp_path):
    # Given a slot's store: group g (offsets and a setting) and group h, written at T
    wall = WallClock()
    slot = SlotLog(tmp_path / "slot")
    store = OffsetStore.load(slot.log, slot.append, wall)
    store.commit("g", {("t", 0): 1}, {"assignor": "range"})
    store.commit("h", {("t", 1): 2})
    store.commit("g", {("t", 0): 3}, metadata={("t", 0): "kept by the snapshot"})
    written_ms = store.written_ms("g")
    # Then no snapshot is due before the interval has passed since its first record, one is after
    assert not store.snapshot_due(wall.now_ms)
    wall.now_ms += limits.OFFSETS_SNAPSHOT_INTERVAL_MS
    assert store.snapshot_due(wall.now_ms)
    # When it writes one (every live record again, and its marker), and more records follow
    snapshot_at = slot.log.end_offset
    assert store.write_snapshot() == 3
    assert not store.snapshot_due(wall.now_ms)
    store.delete(["h"])
    wall.now_ms += 1000
    store.commit("g", {("t", 1): 5})
    # And retention deletes everything before the snapshot (a copy of the log from there)
    cut = PartitionLog.open(tmp_path / "cut", SLOT_CONFIG)
    cut.restart_at(snapshot_at)
    position = snapshot_at
    while position < slot.log.end_offset:
        position = cut.append_entries(slot.log.read(position, 1 << 20, slot.log.end_offset))
    # Then replaying what is left gives the same groups, offsets and settings
    replayed = OffsetStore.load(cut, slot.append, wall)
    assert replayed.groups() == store.groups() == {"g"}
    assert replayed.offsets("g") == {("t", 0): 3, ("t", 1): 5}
    assert replayed.metadata("g") == {("t", 0): "kept by the snapshot"}
    assert replayed.settings("g") == {"assignor": "range"}
    # And it knows when the snapshot was written; g's write time is its last commit's
    assert replayed.snapshot.written_ms == wall.now_ms - 1000
    assert replayed.written_ms("g") == store.written_ms("g") > written_ms
    cut.close()
    slot.log.close()
