"""One partition on a shard (shards/partition.py): its log on a real disk, its high
watermark, its idempotent producers, and what survives a corrupt log."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import time
from types import SimpleNamespace

import pytest

from plinth import limits
from plinth.errors import (
    CorruptDataError, InvalidTimestampError, OffsetOutOfRangeError, OutOfOrderSequenceError,
    RecordTooLargeError, StorageError)
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, build_entry_header, iter_entries
from plinth.format.record_batch import BatchBuilder, summarize_batch
from plinth.shards.leader_epochs import (
    CHECKPOINT_FILE, NO_EPOCH, EpochEntry, load_leader_epochs)
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig
from plinth.shards.replication import divergence
from plinth.shards.shard_calls import OPENED_NEEDS_REPAIR
from plinth.shards.producer_state import snapshot_offsets, snapshot_path
from plinth.shards.tier.remote_log_view import EMPTY_REMOTE_LOG
from plinth.shards.tier.tier_policy import held_remotely

NOW_MS = time.time_ns() // 1_000_000


def batch_of(values, producer_id=-1, base_sequence=-1, timestamps_ms=None) -> bytes:
    builder = BatchBuilder()
    for value, timestamp_ms in zip(values, timestamps_ms or [NOW_MS] * len(values)):
        builder.append(None, value, timestamp_ms, None)
    return builder.build(producer_id=producer_id, base_sequence=base_sequence)


def open_partition(directory, config=LogConfig(), initial_offset=0, producers=None) -> Partition:
    """A partition opened as the shard opens one that takes writes."""
    part = Partition.open(directory, "t", 3, config, initial_offset)
    part.take_writes(initial_offset, producers)
    return part


def append(part: Partition, batch: bytes) -> int:
    """As the shard does: a duplicate gets its first offsets, anything else is appended."""
    summary = summarize_batch(batch)
    base_offset = part.producers.check(part.name, summary.producer_id, summary.base_sequence,
                                       summary.record_count)
    return part.append(batch, summary) if base_offset is None else base_offset


def test_a_partition_is_named_and_keyed_by_its_topic_and_number(tmp_path):
    part = open_partition(tmp_path / "t-3")
    assert (part.key, part.name) == (("t", 3), "t-3")


def test_after_a_crash_the_records_before_a_torn_entry_are_readable_and_the_rest_is_cut(tmp_path):
    # Given a partition that wrote three batches, the last one torn by a crash
    part = open_partition(tmp_path / "t-3")
    for value in (b"a", b"b", b"c"):
        append(part, batch_of([value]))
    part.log.close()
    log_path = part.log.segments[-1].log_path
    torn = log_path.read_bytes()[:-5]
    log_path.write_bytes(torn)
    # When it is opened again
    reopened = open_partition(tmp_path / "t-3")
    # Then the two whole batches are readable, durable, and the torn one is gone
    assert reopened.high_watermark == reopened.log.end_offset == 2
    assert reopened.log.flushed_end_offset == 2
    data = reopened.log.read(0, 1 << 20, reopened.high_watermark)
    assert [h.base_offset for h, _ in iter_entries(data)] == [0, 1]
    assert reopened.log.recovery.bytes_truncated == len(torn) - len(data)
    # And the next batch takes the torn one's offset
    assert append(reopened, batch_of([b"c again"])) == 2


def test_a_retry_of_a_batch_cut_by_recovery_is_stored_again_not_taken_for_a_duplicate(tmp_path):
    # Given an idempotent producer's two batches, the second one's entry then corrupted
    part = open_partition(tmp_path / "t-3")
    assert append(part, batch_of([b"x"], producer_id=4, base_sequence=0)) == 0
    assert append(part, batch_of([b"y"], producer_id=4, base_sequence=1)) == 1
    part.log.close()
    log_path = part.log.segments[-1].log_path
    data = bytearray(log_path.read_bytes())
    data[-1] ^= 0xFF   # the last byte of the second batch: its CRC no longer matches
    log_path.write_bytes(data)
    # When the partition is opened and the producer retries the second batch
    reopened = open_partition(tmp_path / "t-3")
    # Then it is appended again at offset 1, and the first batch is still a duplicate
    assert append(reopened, batch_of([b"y"], producer_id=4, base_sequence=1)) == 1
    assert append(reopened, batch_of([b"x"], producer_id=4, base_sequence=0)) == 0
    assert reopened.log.end_offset == 2


def test_a_corrupt_producer_snapshot_is_ignored_and_the_active_segment_still_recognises_retries(
        tmp_path):
    # Given a partition whose log rolled (saving its producers) and whose snapshot file
    # was then damaged
    small = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", small)
    value = b"v" * (limits.SEGMENT_BYTES_MIN // 3)
    for sequence in range(4):
        append(part, batch_of([value], producer_id=8, base_sequence=sequence))
    assert len(part.log.segments) > 1
    part.log.close()
    snapshot_path(tmp_path / "t-3", part.log.active_base_offset).write_text('{"base_offset": ')
    # When it is opened / Then a retry of the last batch (in the active segment) is known
    reopened = open_partition(tmp_path / "t-3", small)
    assert append(reopened, batch_of([value], producer_id=8, base_sequence=3)) == 3
    assert reopened.log.end_offset == 4


def test_a_damaged_producers_snapshot_is_set_aside_and_its_cost_logged_at_start(
        tmp_path, caplog):
    # Given a partition whose log rolled (saving its producers), whose active segment's
    # snapshot then had 3 bytes overwritten at byte 20 (the tester's dd)
    small = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", small)
    value = b"v" * (limits.SEGMENT_BYTES_MIN // 3)
    for sequence in range(4):
        append(part, batch_of([value], producer_id=8, base_sequence=sequence))
    part.log.close()
    active = part.log.active_base_offset
    path = snapshot_path(tmp_path / "t-3", active)
    data = bytearray(path.read_bytes())
    data[20:23] = b"\x01\x02\x03"
    path.write_bytes(bytes(data))
    # When it is opened / Then a WARNING names the file, its size and the cost, and the
    # file is set aside so that no later start reads it as a snapshot
    with caplog.at_level(logging.WARNING, logger="plinth.shards.partition"):
        reopened = open_partition(tmp_path / "t-3", small)
    [record] = [r for r in caplog.records if "producers snapshot" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert f"producers snapshot {path} ({len(data)} bytes) is damaged: not JSON" in \
        record.getMessage()
    assert (f"kept as {path.name}.corrupt" in record.getMessage() and
            f"a batch written before offset {active} may be stored twice" in record.getMessage())
    assert not path.exists() and (tmp_path / "t-3" / f"{path.name}.corrupt").exists()
    assert active not in snapshot_offsets(tmp_path / "t-3")
    # And the active segment's batches are still recognised as retries
    assert append(reopened, batch_of([value], producer_id=8, base_sequence=3)) == 3


def test_a_roll_saves_the_producers_as_they_were_before_the_new_segments_first_batch(tmp_path):
    # Given producer 1's batch, then producer 2's batches until the log rolls
    part = open_partition(tmp_path / "t-3", LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN))
    started_ms = time.time_ns() // 1_000_000
    append(part, batch_of([b"first"], producer_id=1, base_sequence=0))
    value = b"v" * (limits.SEGMENT_BYTES_MIN // 3)
    sequence = 0
    while len(part.log.segments) == 1:
        append(part, batch_of([value], producer_id=2, base_sequence=sequence))
        sequence += 1
    # Then the snapshot names the new segment and holds every batch before it, and
    # when each producer was last seen
    saved = json.loads(snapshot_path(tmp_path / "t-3", part.log.active_base_offset).read_text())
    assert saved["base_offset"] == part.log.active_base_offset == sequence
    assert [entry[:2] for entry in saved["producers"]] == [
        [1, [[0, 1, 0]]], [2, [[s, 1, 1 + s] for s in range(sequence - 1)][-5:]]]
    ended_ms = time.time_ns() // 1_000_000
    assert all(started_ms <= entry[2] <= ended_ms for entry in saved["producers"])


def test_after_a_restart_a_retry_of_a_batch_written_before_the_roll_is_still_a_duplicate(tmp_path):
    # Given producer 1's batch, then producer 2's batches until the log rolled, then a restart
    small = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", small)
    append(part, batch_of([b"first"], producer_id=1, base_sequence=0))
    value = b"v" * (limits.SEGMENT_BYTES_MIN // 3)
    for sequence in range(4):
        append(part, batch_of([value], producer_id=2, base_sequence=sequence))
    part.log.close()
    reopened = open_partition(tmp_path / "t-3", small)
    assert reopened.log.active_base_offset > 1   # producer 1's batch is in an older segment
    # When producer 1 retries its batch / Then it gets its offset and nothing is stored
    end_offset = reopened.log.end_offset
    assert append(reopened, batch_of([b"first"], producer_id=1, base_sequence=0)) == 0
    assert reopened.log.end_offset == end_offset


def test_the_high_watermark_only_moves_forward_and_never_past_the_log_end(tmp_path):
    # Given a partition with two records, readable up to 1
    part = Partition.open(tmp_path / "t-3", "t", 3, LogConfig())
    append(part, batch_of([b"a"]))
    append(part, batch_of([b"b"]))
    assert part.advance(1) and not part.advance(1)
    # When it would move back, or past the log's end / Then that is an error naming it
    for bad in (0, 3):
        with pytest.raises(AssertionError, match=rf"t-3 in {tmp_path / 't-3'} would move from "
                                                 rf"1 to {bad}.* end offset 2"):
            part.advance(bad)
    assert part.high_watermark == 1


def test_writes_that_come_back_continue_at_the_later_offset_with_the_moved_producers(tmp_path):
    # Given a partition sealed here at offset 2, after its producer 6 wrote
    part = open_partition(tmp_path / "t-3")
    append(part, batch_of([b"a", b"b"], producer_id=6, base_sequence=0))
    part.sealed = True
    # When its writes come back at offset 9, with the other shard's producer snapshot
    part.take_writes(9, [[7, [[0, 1, 8]]]])
    # Then it takes writes from 9 on and knows the moved producers, not its own old ones
    assert (part.sealed, part.high_watermark, part.log.end_offset) == (False, 9, 9)
    assert append(part, batch_of([b"dup"], producer_id=7, base_sequence=0)) == 8
    assert append(part, batch_of([b"new"], producer_id=6, base_sequence=0)) == 9


def test_an_append_the_disk_refuses_raises_a_storage_error_and_leaves_the_log_as_it_was(
        tmp_path, monkeypatch):
    # Given a partition with one record, on a disk that then refuses writes
    part = open_partition(tmp_path / "t-3")
    append(part, batch_of([b"kept"]))
    size_bytes = part.log.size_bytes

    def full_disk(fd, buffers):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "writev", full_disk)
    # When a batch is appended / Then StorageError names the cause and the file
    with pytest.raises(StorageError, match=r"No space left") as caught:
        append(part, batch_of([b"refused"]))
    assert str(part.log.directory) in str(caught.value)
    # And once the disk has room, the next batch takes the refused one's offset
    monkeypatch.undo()
    assert append(part, batch_of([b"later"])) == 1
    assert part.log.size_bytes > size_bytes + LOG_ENTRY_HEADER_BYTES


def test_appends_the_disk_refuses_are_logged_once_per_outage_and_their_end_once(
        tmp_path, monkeypatch, caplog):
    # Given a partition whose disk refuses three appends in a row, then takes them again,
    # then refuses one more (a second outage)
    part = open_partition(tmp_path / "t-3")
    append(part, batch_of([b"kept"]))

    def read_only(fd, buffers):
        raise OSError(errno.EROFS, "Read-only file system")
    with caplog.at_level(logging.INFO, logger="plinth.shards.partition"):
        monkeypatch.setattr(os, "writev", read_only)
        for _ in range(3):
            with pytest.raises(StorageError):
                append(part, batch_of([b"refused"]))
        monkeypatch.undo()
        append(part, batch_of([b"later"]))
        append(part, batch_of([b"and later"]))
        monkeypatch.setattr(os, "writev", read_only)
        with pytest.raises(StorageError):
            append(part, batch_of([b"refused again"]))
    # Then each outage is one WARNING naming the partition and the cause, and its end one
    # INFO saying how many appends failed; nothing per refused or accepted batch besides
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert lines[0][1].startswith(f"appends to t-3 fail: cannot append ")
    assert "Read-only file system" in lines[0][1] and str(part.log.directory) in lines[0][1]
    assert lines[1][1] == "appends to t-3 succeed again, after 3 failed"


# --- Batch size --------------------------------------------------------------------

def test_a_batch_over_the_topics_max_message_bytes_is_refused_and_one_at_it_is_stored(tmp_path):
    # Given a partition of a topic whose max.message.bytes is the size of a batch
    fits = batch_of([b"x" * 100])
    part = open_partition(tmp_path / "t-3", LogConfig(batch_bytes_max=len(fits)))
    # When a larger batch is appended (batches grow a word at a time)
    larger = batch_of([b"x" * 108])
    assert len(larger) > len(fits)
    # Then it is refused, naming the partition, its size and the limit, and nothing is
    # stored; a batch of the limit's size is
    with pytest.raises(RecordTooLargeError) as caught:
        append(part, larger)
    assert str(caught.value).startswith(
        f"t-3: a batch of {len(larger)} bytes is over the topic's "
        f"max.message.bytes={len(fits)}")
    assert part.log.end_offset == 0
    assert append(part, fits) == 0


@pytest.mark.parametrize("values, advice", [
    ([b"x" * 300], "its one record is too large alone: make it smaller, or raise "
                   "max.message.bytes"),
    ([b"x" * 150, b"y" * 150], "2 records: Plinth's producer splits such a batch")])
def test_a_batch_over_max_message_bytes_is_refused_with_advice_that_fits_its_record_count(
        tmp_path, values, advice):
    part = open_partition(tmp_path / "t-3", LogConfig(batch_bytes_max=200))
    with pytest.raises(RecordTooLargeError, match=advice):
        append(part, batch_of(values))


# --- Timestamps ------------------------------------------------------------------

HOUR_MS = 3_600_000
WINDOWED = LogConfig(timestamp_before_ms_max=24 * HOUR_MS, timestamp_after_ms_max=HOUR_MS)


def append_at(part: Partition, batch: bytes, now_ms: int) -> int:
    return part.append(batch, summarize_batch(batch), now_ms)


def test_a_record_stamped_further_ahead_than_the_after_window_is_refused_naming_it_all(tmp_path):
    # Given a partition taking timestamps from a day before to an hour after the clock
    part = open_partition(tmp_path / "t-3", WINDOWED)
    # When a batch holds one record stamped an hour and 1 ms ahead
    batch = batch_of([b"ok", b"ahead"], timestamps_ms=[NOW_MS, NOW_MS + HOUR_MS + 1])
    # Then it is refused, naming the partition, the timestamp, the window and the key
    with pytest.raises(InvalidTimestampError) as caught:
        append_at(part, batch, NOW_MS)
    message = str(caught.value)
    assert message.startswith(f"t-3: a record's timestamp {NOW_MS + HOUR_MS + 1} ms is "
                              f"{HOUR_MS + 1} ms after the shard's clock ({NOW_MS} ms)")
    assert "message.timestamp.after.max.ms=3600000" in message
    assert f"window is {24 * HOUR_MS} ms before to {HOUR_MS} ms after" in message
    # And nothing was stored
    assert part.log.end_offset == 0


def test_a_record_stamped_further_back_than_the_before_window_is_refused(tmp_path):
    part = open_partition(tmp_path / "t-3", WINDOWED)
    old_ms = NOW_MS - 24 * HOUR_MS - 1
    with pytest.raises(InvalidTimestampError, match=rf"timestamp {old_ms} ms is {24 * HOUR_MS + 1} "
                                                    r"ms before .*message.timestamp.before.max.ms"):
        append_at(part, batch_of([b"old", b"ok"], timestamps_ms=[old_ms, NOW_MS]), NOW_MS)
    assert part.log.end_offset == 0


def test_records_at_the_edges_of_the_window_are_stored(tmp_path):
    part = open_partition(tmp_path / "t-3", WINDOWED)
    edges = [NOW_MS - 24 * HOUR_MS, NOW_MS + HOUR_MS]
    assert append_at(part, batch_of([b"first", b"last"], timestamps_ms=edges), NOW_MS) == 0
    assert part.log.end_offset == 2


def test_by_default_any_past_time_and_an_hour_ahead_are_taken(tmp_path):
    # Given a partition with the topic defaults (Kafka's unlimited before, an hour after)
    part = open_partition(tmp_path / "t-3")
    # When records stamped at the epoch and an hour ahead are appended / Then both are stored
    assert append_at(part, batch_of([b"epoch"], timestamps_ms=[0]), NOW_MS) == 0
    assert append_at(part, batch_of([b"ahead"], timestamps_ms=[NOW_MS + HOUR_MS]), NOW_MS) == 1
    # And the largest Int64, which wedged readers and retention before issue 11, is refused
    with pytest.raises(InvalidTimestampError, match="message.timestamp.after.max.ms=3600000"):
        append_at(part, batch_of([b"far"], timestamps_ms=[2**63 - 1]), NOW_MS)


def test_a_refused_batch_does_not_register_its_producer(tmp_path):
    # Given an idempotent producer's first batch, refused for its timestamp
    part = open_partition(tmp_path / "t-3", WINDOWED)
    ahead = batch_of([b"x"], producer_id=3, base_sequence=0, timestamps_ms=[NOW_MS + 2 * HOUR_MS])
    with pytest.raises(InvalidTimestampError):
        append_at(part, ahead, NOW_MS)
    # When it sends the batch again with a good timestamp / Then it is stored, not a duplicate
    assert len(part.producers) == 0
    assert append(part, batch_of([b"x"], producer_id=3, base_sequence=0)) == 0
    assert part.log.end_offset == 1


# --- Producers' last-seen times -------------------------------------------------------------

def test_a_snapshot_saved_before_producers_had_a_last_seen_time_still_recognises_retries(tmp_path):
    # Given a partition whose log rolled, and whose producers.json is in the format
    # written before issue 11 ([producer id, batches], no last-seen time)
    small = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", small)
    value = b"v" * (limits.SEGMENT_BYTES_MIN // 3)
    append(part, batch_of([b"first"], producer_id=1, base_sequence=0))
    for sequence in range(4):
        append(part, batch_of([value], producer_id=2, base_sequence=sequence))
    part.log.close()
    path = snapshot_path(tmp_path / "t-3", part.log.active_base_offset)
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({"base_offset": saved["base_offset"],
                                "producers": [entry[:2] for entry in saved["producers"]]}))
    # When it is opened and producer 1 retries its batch, written before the roll
    reopened = open_partition(tmp_path / "t-3", small)
    assert append(reopened, batch_of([b"first"], producer_id=1, base_sequence=0)) == 0
    # Then it is a duplicate, and the producer counts as seen when the active segment
    # was last written (never earlier than it really was)
    active_written_ms = reopened.log.segments[-1].last_written_ms
    assert [entry[2] for entry in reopened.producers.snapshot()] == [active_written_ms] * 2


def test_the_producers_rebuilt_from_the_active_segment_keep_the_snapshots_times(tmp_path):
    # Given producer 1 seen a day ago (the snapshot says so) and producer 2 in the active segment
    small = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", small)
    value = b"v" * (limits.SEGMENT_BYTES_MIN // 3)
    day_ago_ms = NOW_MS - 24 * HOUR_MS
    append_at(part, batch_of([b"first"], 1, 0, timestamps_ms=[day_ago_ms]), day_ago_ms)
    sequence = 0
    while len(part.log.segments) == 1:
        append(part, batch_of([value], producer_id=2, base_sequence=sequence))
        sequence += 1
    part.log.close()
    # When it is opened
    reopened = open_partition(tmp_path / "t-3", small)
    # Then producer 1 keeps its time and producer 2 is seen at the active segment's last write
    seen = {entry[0]: entry[2] for entry in reopened.producers.snapshot()}
    assert seen == {1: day_ago_ms, 2: reopened.log.segments[-1].last_written_ms}


# --- Replication: leader epochs, the follower path, truncation, repair ---------------


def append_as_leader(part: Partition, batch: bytes, leader_epoch: int) -> int:
    """As the shard does for a partition it leads in ``leader_epoch``."""
    summary = summarize_batch(batch)
    base_offset = part.producers.check(part.name, summary.producer_id, summary.base_sequence,
                                       summary.record_count)
    if base_offset is not None:
        return base_offset
    return part.append(batch, summary, leader_epoch=leader_epoch)


def entries_from(leader: Partition, offset: int) -> bytes:
    """The leader's entries from ``offset`` to its log end, as stored (a fetch's payload)."""
    chunks = []
    while offset < leader.log.end_offset:
        data = leader.log.read(offset, 1 << 20, leader.log.end_offset)
        chunks.append(bytes(data))
        *_, (last, _) = iter_entries(data)
        offset = last.end_offset
    return b"".join(chunks)


def replicate(leader: Partition, follower: Partition) -> int:
    """What a follower's fetcher does: the leader's entries from the follower's end,
    with the epochs that start inside them."""
    offset = follower.log.end_offset
    epoch_starts = [(e.epoch, e.start_offset) for e in leader.leader_epochs.entries
                    if e.start_offset >= offset]
    return follower.append_replicated(entries_from(leader, offset), epoch_starts)


def test_a_leader_assigns_a_new_epoch_at_the_batchs_base_offset_and_saves_it(tmp_path):
    # Given a partition led in epoch 0, then in epoch 2
    part = open_partition(tmp_path / "t-3")
    for value in (b"a", b"b"):
        append_as_leader(part, batch_of([value]), 0)
    # When it appends a batch in epoch 2
    assert append_as_leader(part, batch_of([b"c", b"d"]), 2) == 2
    append_as_leader(part, batch_of([b"e"]), 2)
    # Then epoch 2 starts at that batch, in memory and in the checkpoint file
    expected = (EpochEntry(0, 0), EpochEntry(2, 2))
    assert part.leader_epochs.entries == expected
    assert load_leader_epochs(part.log.directory).entries == expected


def test_a_new_epoch_the_disk_refuses_to_save_appends_nothing(tmp_path, monkeypatch):
    # Given a partition led in epoch 0, on a disk that then refuses writes
    part = open_partition(tmp_path / "t-3")
    append_as_leader(part, batch_of([b"a"]), 0)

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full_disk)
    # When it appends the first batch of epoch 1
    # Then StorageError names the partition, and neither the epoch nor the batch is kept,
    # so the batch cannot be acknowledged without its epoch on disk
    with pytest.raises(StorageError, match=r"leader epochs of t-3 .*No space left"):
        append_as_leader(part, batch_of([b"b"]), 1)
    monkeypatch.undo()
    assert part.log.end_offset == 1
    assert part.leader_epochs.entries == load_leader_epochs(part.log.directory).entries == (
        EpochEntry(0, 0),)


def test_a_partition_of_factor_1_writes_no_leader_epoch_checkpoint(tmp_path):
    # Given a partition appended to without a leader epoch, as today
    part = open_partition(tmp_path / "t-3")
    append(part, batch_of([b"a"]))
    part.log.close()
    reopened = open_partition(tmp_path / "t-3")
    # Then it has no epochs, no checkpoint file and does not need repair
    assert reopened.leader_epochs.entries == ()
    assert not (tmp_path / "t-3" / CHECKPOINT_FILE).exists()
    assert not reopened.needs_repair


def test_epochs_whose_entries_recovery_cut_are_forgotten_when_the_partition_opens(tmp_path):
    # Given a partition whose first batch of epoch 3 was torn by a crash
    part = open_partition(tmp_path / "t-3")
    append_as_leader(part, batch_of([b"a"]), 1)
    append_as_leader(part, batch_of([b"b"]), 3)
    part.log.close()
    log_path = part.log.segments[-1].log_path
    log_path.write_bytes(log_path.read_bytes()[:-3])
    # When it is opened again
    reopened = open_partition(tmp_path / "t-3")
    # Then epoch 3, which now wrote nothing, is forgotten, in the file too
    assert reopened.log.end_offset == 1
    assert reopened.leader_epochs.entries == (EpochEntry(1, 0),)
    assert load_leader_epochs(tmp_path / "t-3").entries == (EpochEntry(1, 0),)


def partition_with_epochs_1_and_3(directory) -> Partition:
    """A closed partition led in epoch 1 (offset 0), then 3 (offset 1)."""
    part = open_partition(directory)
    append_as_leader(part, batch_of([b"a"]), 1)
    append_as_leader(part, batch_of([b"b"]), 3)
    part.log.close()
    return part


@pytest.mark.parametrize("damage", [
    lambda data: data.replace(b"\n3 1\n", b"\n3 0\n"),   # one digit (the tester's sed)
    lambda data: data[:-2],                                  # torn
])
def test_a_bad_leader_epoch_checkpoint_is_set_aside_and_the_replica_needs_repair(
        tmp_path, caplog, damage):
    # Given a replica of a replicated partition whose checkpoint was damaged
    partition_with_epochs_1_and_3(tmp_path / "t-3")
    path = tmp_path / "t-3" / CHECKPOINT_FILE
    data = path.read_bytes()
    path.write_bytes(damage(data))
    assert path.read_bytes() != data
    # When it is opened / Then it opens, its records all there, with an empty history,
    # the file kept aside, an ERROR naming the file, and the replica needs repair (its
    # history is fetched from its leader before it counts as in sync or leads)
    with caplog.at_level(logging.ERROR, logger="plinth.shards.partition"):
        reopened = open_partition(tmp_path / "t-3")
    assert reopened.log.end_offset == 2 and reopened.leader_epochs.entries == ()
    assert not path.exists()
    assert (tmp_path / "t-3" / (CHECKPOINT_FILE + ".corrupt")).read_bytes() == damage(data)
    assert f"leader-epoch checkpoint {path}, line" in caplog.text
    assert "kept as leader-epoch-checkpoint.corrupt" in caplog.text
    assert reopened.needs_repair and reopened.open_state() == OPENED_NEEDS_REPAIR
    reopened.log.close()
    # And a second start keeps the mark (not in sync until caught up), reads no bad file
    again = open_partition(tmp_path / "t-3")
    assert again.needs_repair and again.leader_epochs.entries == ()


def test_a_bad_leader_epoch_checkpoint_of_a_one_copy_partition_is_set_aside_and_it_opens(
        tmp_path, caplog):
    partition_with_epochs_1_and_3(tmp_path / "t-3")
    path = tmp_path / "t-3" / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:-2])
    with caplog.at_level(logging.ERROR, logger="plinth.shards.partition"):
        reopened = Partition.open(tmp_path / "t-3", "t", 3, LogConfig(), one_copy=True)
    assert reopened.log.end_offset == 2 and not reopened.needs_repair
    assert (tmp_path / "t-3" / (CHECKPOINT_FILE + ".corrupt")).exists()
    assert "no record is lost" in caplog.text


def test_a_follower_whose_history_was_lost_is_cut_back_to_its_leaders_first_epoch(tmp_path):
    # Given a leader in epochs 0 and 2, and a follower that holds other entries in the
    # same offsets (it had led in epoch 1) and lost its checkpoint
    leader = open_partition(tmp_path / "leader" / "t-3")
    for i, epoch in enumerate((0, 0, 2)):
        append_as_leader(leader, batch_of([b"L%d" % i]), epoch)
    follower = open_partition(tmp_path / "follower" / "t-3")
    append_as_leader(follower, batch_of([b"F0"]), 0)
    append_as_leader(follower, batch_of([b"F1"]), 1)
    follower.log.close()
    checkpoint = tmp_path / "follower" / "t-3" / CHECKPOINT_FILE
    checkpoint.write_bytes(checkpoint.read_bytes()[:-2])
    follower = open_partition(tmp_path / "follower" / "t-3")
    assert follower.leader_epochs.entries == ()
    # When it fetches (no epoch: it has none) / Then the leader's lookup says it diverges
    # at the leader's first epoch's start, and cut back there it refetches the leader's
    # entries and history: it keeps nothing the leader disagrees with
    fetch_offset = follower.log.end_offset
    found = divergence(leader.leader_epochs, fetch_offset, NO_EPOCH, leader.log.end_offset)
    assert found == EpochEntry(0, 0)
    follower.truncate_to(found.start_offset)
    assert follower.log.end_offset == 0
    replicate(leader, follower)
    assert entries_from(follower, 0) == entries_from(leader, 0)
    assert follower.leader_epochs.entries == leader.leader_epochs.entries


def test_a_follower_stores_the_leaders_entries_epochs_and_producer_sequences(tmp_path):
    # Given a leader that stored an idempotent producer's batches in epochs 0 and 2
    leader = open_partition(tmp_path / "leader" / "t-3")
    batches = [batch_of([b"x%d" % i, b"y%d" % i], producer_id=9, base_sequence=2 * i)
               for i in range(4)]
    for i, batch in enumerate(batches):
        append_as_leader(leader, batch, 0 if i < 2 else 2)
    # When a follower replicates them
    follower = open_partition(tmp_path / "follower" / "t-3")
    assert replicate(leader, follower) == 8
    # Then it holds the same entries and epochs (saved)
    assert entries_from(follower, 0) == entries_from(leader, 0)
    assert follower.leader_epochs.entries == (EpochEntry(0, 0), EpochEntry(2, 4))
    assert load_leader_epochs(follower.log.directory).entries == follower.leader_epochs.entries
    # And, should it lead, it recognises the producer's retry and its next sequence
    assert append_as_leader(follower, batches[3], 3) == 6
    with pytest.raises(OutOfOrderSequenceError):
        append_as_leader(follower, batch_of([b"gap"], producer_id=9, base_sequence=11), 3)
    assert append_as_leader(follower, batch_of([b"next"], producer_id=9, base_sequence=8), 3) == 8


def test_a_follower_remembers_producers_across_its_rolls_and_a_restart(tmp_path):
    # Given a leader of small segments with batches of one producer, the last one
    # alone in its segment (so only a snapshot saved at the roll knows the ones before)
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN, index_interval_bytes=512)
    leader = open_partition(tmp_path / "leader" / "t-3", config)
    batches = []
    while len(leader.log.segments) < 4:
        batches.append(batch_of([b"v" * 300], producer_id=5, base_sequence=len(batches)))
        append_as_leader(leader, batches[-1], 0)
    # When a follower replicates them in one run, rolling several times, and restarts
    follower = open_partition(tmp_path / "follower" / "t-3", config)
    replicate(leader, follower)
    assert len(follower.log.segments) == 4
    follower.log.close()
    reopened = open_partition(tmp_path / "follower" / "t-3", config)
    # Then a retry of the batch just before its last roll is still a duplicate
    active_base_offset = reopened.log.active_base_offset
    assert append_as_leader(reopened, batches[active_base_offset - 1], 1) == active_base_offset - 1


def test_a_flipped_byte_in_replicated_entries_refuses_the_run_and_changes_nothing(tmp_path):
    # Given a leader with a batch in a new epoch, and a follower behind it
    leader = open_partition(tmp_path / "leader" / "t-3")
    append_as_leader(leader, batch_of([b"a"], producer_id=1, base_sequence=0), 0)
    follower = open_partition(tmp_path / "follower" / "t-3")
    replicate(leader, follower)
    append_as_leader(leader, batch_of([b"b"], producer_id=1, base_sequence=1), 4)
    append_as_leader(leader, batch_of([b"c"], producer_id=1, base_sequence=2), 4)
    run = bytearray(entries_from(leader, 1))
    # When the follower is given that run with a byte of its last batch flipped
    run[-2] ^= 0x20
    with pytest.raises(CorruptDataError, match=r"refused at offset 2"):
        follower.append_replicated(bytes(run), [(4, 1)])
    # Then nothing of it is kept: no entry, no epoch, no producer sequence
    assert follower.log.end_offset == 1
    assert follower.leader_epochs.entries == (EpochEntry(0, 0),)
    assert load_leader_epochs(follower.log.directory).entries == (EpochEntry(0, 0),)
    assert follower.producers.check("t-3", 1, 1, 1) is None
    # And the run as stored is taken
    assert replicate(leader, follower) == 3


def leader_and_follower(tmp_path, leader_epoch: int) -> tuple[Partition, Partition]:
    """A leader with one entry ("a") in ``leader_epoch``, and a follower holding it."""
    leader = open_partition(tmp_path / "leader" / "t-3")
    append_as_leader(leader, batch_of([b"a"]), leader_epoch)
    follower = open_partition(tmp_path / "follower" / "t-3")
    replicate(leader, follower)
    return leader, follower


@pytest.mark.parametrize("epoch_starts, offset", [([(4, 2)], 2), ([(4, 5)], 5), ([(0, 1)], 1)])
def test_an_epoch_that_would_start_anywhere_but_at_a_new_batch_is_refused(
        tmp_path, epoch_starts, offset):
    # Given a follower in epoch 3 and a run of two 2-record batches from offset 1
    leader, follower = leader_and_follower(tmp_path, 3)
    append_as_leader(leader, batch_of([b"b", b"c"]), 4)
    append_as_leader(leader, batch_of([b"d", b"e"]), 4)
    # When an epoch start is inside a batch, past the run, or older than epoch 3
    # Then the run is refused, naming the offset, and nothing is appended
    with pytest.raises(CorruptDataError, match=f"refused at offset {offset} .*leader epoch"):
        follower.append_replicated(entries_from(leader, 1), epoch_starts)
    assert follower.log.end_offset == 1
    # And an epoch the follower has, starting before the run, is not news
    assert follower.append_replicated(entries_from(leader, 1), [(3, 0), (4, 1)]) == 5
    assert follower.leader_epochs.entries == (EpochEntry(3, 0), EpochEntry(4, 1))


def diverged_pair(tmp_path):
    """Replica A led epoch 1 and wrote offsets 0..3, of which B replicated 0..1;
    B now leads epoch 2 and wrote its own offset 2 (A's 2..3 were never committed)."""
    a = open_partition(tmp_path / "a" / "t-3")
    for i in range(2):
        append_as_leader(a, batch_of([b"common%d" % i], producer_id=7, base_sequence=i), 1)
    b = open_partition(tmp_path / "b" / "t-3")
    replicate(a, b)
    for i in range(2, 4):
        append_as_leader(a, batch_of([b"lost%d" % i], producer_id=7, base_sequence=i), 1)
    a.advance(3)
    append_as_leader(b, batch_of([b"new leader"], producer_id=8, base_sequence=0), 2)
    return a, b


def test_truncating_cuts_the_log_the_epochs_the_high_watermark_and_the_producers(tmp_path):
    # Given a replica whose last two entries its new leader does not have
    a, b = diverged_pair(tmp_path)
    # When it truncates to where the leader says its epoch 1 ends
    end_epoch, end_offset = b.leader_epochs.end_offset_for(1, b.log.end_offset)
    assert (end_epoch, end_offset) == (1, 2)
    result = a.truncate_to(end_offset)
    # Then the log ends there, the high watermark is clamped to it
    assert (result.old_end_offset, result.end_offset, result.entries) == (4, 2, 2)
    assert (a.log.end_offset, a.high_watermark) == (2, 2)
    assert a.leader_epochs.entries == (EpochEntry(1, 0),)
    # And a retry of a cut batch is stored again, not answered as a duplicate
    assert a.producers.check("t-3", 7, 2, 1) is None
    assert a.producers.check("t-3", 7, 1, 1) == 1
    # And it then replicates its leader's entries and epoch from the cut on
    assert replicate(b, a) == 3
    assert entries_from(a, 0) == entries_from(b, 0)
    assert a.leader_epochs.entries == b.leader_epochs.entries == (EpochEntry(1, 0),
                                                                  EpochEntry(2, 2))


def test_a_truncation_then_a_crash_leaves_a_log_and_epochs_that_agree(tmp_path):
    # Given a replica truncated to where its new leader's history agrees
    a, b = diverged_pair(tmp_path)
    append_as_leader(a, batch_of([b"lost4"], producer_id=7, base_sequence=4), 3)
    a.truncate_to(2)
    # When it crashes (it is opened again without being closed)
    reopened = open_partition(tmp_path / "a" / "t-3")
    # Then its log ends at the cut, nothing to recover, its epochs agree with it
    assert reopened.log.recovery.bytes_truncated == 0 and not reopened.needs_repair
    assert reopened.log.end_offset == 2
    assert reopened.leader_epochs.entries == (EpochEntry(1, 0),)
    # And replication continues at the cut
    assert replicate(b, reopened) == 3


def test_truncating_below_the_log_start_restarts_it_empty_with_no_epochs_or_producers(
        tmp_path):
    # Given a replica whose retention deleted its first segments
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN,
                       retention_bytes=2 * limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", config)
    append_as_leader(part, batch_of([b"early"], producer_id=4, base_sequence=0), 1)
    for i in range(40):
        append_as_leader(part, batch_of([b"v" * 300], producer_id=3, base_sequence=i), 1)
    part.log.enforce_retention()
    assert part.log.start_offset > 5
    # When it is truncated below its start (its leader's log diverged before it)
    part.truncate_to(5)
    # Then it is empty at that offset, with no epochs and no producers
    assert (part.log.start_offset, part.log.end_offset, part.high_watermark) == (5, 5, 5)
    assert part.leader_epochs.entries == () == load_leader_epochs(tmp_path / "t-3").entries
    assert len(part.producers) == 0
    # And the producer snapshot saved when it rolled, of batches now gone, is removed
    assert snapshot_offsets(tmp_path / "t-3") == []


def test_a_partition_whose_recovery_cut_entries_needs_repair_until_it_has_caught_up(tmp_path):
    # Given a partition whose last entry was corrupted
    part = open_partition(tmp_path / "t-3")
    for value in (b"a", b"b", b"c"):
        append_as_leader(part, batch_of([value]), 1)
    part.log.close()
    log_path = part.log.segments[-1].log_path
    data = bytearray(log_path.read_bytes())
    data[-1] ^= 0xFF
    log_path.write_bytes(data)
    # When it is opened, and opened again (a second restart cuts nothing)
    assert open_partition(tmp_path / "t-3").needs_repair
    part = open_partition(tmp_path / "t-3")
    # Then it still needs repair
    assert part.log.recovery.bytes_truncated == 0 and part.needs_repair
    # And only once it holds its leader's high watermark durably is it repaired, for good
    leader = open_partition(tmp_path / "leader" / "t-3")
    for value in (b"a", b"b", b"c", b"d"):
        append_as_leader(leader, batch_of([value]), 1)
    assert not part.note_caught_up(4)
    replicate(leader, part)
    assert not part.note_caught_up(4)   # not fsynced yet
    part.log.flush()
    assert part.note_caught_up(4) and not part.needs_repair
    assert not open_partition(tmp_path / "t-3").needs_repair


def test_truncating_back_before_a_roll_forgets_the_producer_snapshot_of_the_cut_segment(
        tmp_path):
    # Given a partition of small segments that rolled, saving its producers at the roll
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN, index_interval_bytes=512)
    part = open_partition(tmp_path / "t-3", config)
    while len(part.log.segments) < 3:
        append_as_leader(part, batch_of([b"v" * 300], producer_id=5,
                                        base_sequence=part.log.end_offset), 0)
    saved_path = snapshot_path(tmp_path / "t-3", part.log.active_base_offset)
    assert json.loads(saved_path.read_text())["base_offset"] == part.log.active_base_offset
    # When it is truncated back into its first segment
    part.truncate_to(2)
    # Then the snapshot, which describes batches that were cut, is gone: a later
    # segment starting at its offset must not be seeded with it
    assert not saved_path.exists() and snapshot_offsets(tmp_path / "t-3") == []
    # And the producer, whose remembered batches were all cut, may send on from anywhere
    assert part.producers.check("t-3", 5, 2, 1) is None


def test_a_replicated_entry_whose_header_and_batch_disagree_on_the_record_count_is_refused(
        tmp_path):
    # Given an entry whose header (CRC and all) says 3 records for a batch of 2
    batch = batch_of([b"a", b"b"])
    entry = build_entry_header(0, NOW_MS, 3, batch) + batch
    follower = open_partition(tmp_path / "t-3")
    # When a follower is given it / Then it is refused, naming the counts, and not stored
    with pytest.raises(CorruptDataError, match=r"refused at offset 0 .*3 records, its batch 2"):
        follower.append_replicated(entry, [(1, 0)])
    assert follower.log.end_offset == 0 and follower.leader_epochs.entries == ()


def refuse_append_as_leader(part: Partition, monkeypatch, leader_epoch: int) -> None:
    """The first append of ``leader_epoch``, which the disk refuses after the epoch is saved."""
    def full_disk(fd, buffers):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(StorageError):
        append_as_leader(part, batch_of([b"refused"]), leader_epoch)
    monkeypatch.undo()


def test_an_epoch_a_deposed_leader_assigned_without_writing_does_not_block_its_new_leader(
        tmp_path, monkeypatch):
    # Given a leader of epoch 1 whose first append in epoch 3 the disk refused
    a = open_partition(tmp_path / "a" / "t-3")
    append_as_leader(a, batch_of([b"a"]), 1)
    b = open_partition(tmp_path / "b" / "t-3")
    replicate(a, b)
    refuse_append_as_leader(a, monkeypatch, 3)
    assert a.leader_epochs.entries == (EpochEntry(1, 0), EpochEntry(3, 1))
    # When the other replica leads in epoch 2 and the first one follows it
    append_as_leader(b, batch_of([b"b"]), 2)
    a.truncate_to(b.leader_epochs.end_offset_for(1, b.log.end_offset).start_offset)
    # Then its truncation (which cut no entry) forgot epoch 3, which wrote nothing,
    # and it takes the new leader's entries and epoch 2
    assert a.leader_epochs.entries == (EpochEntry(1, 0),)
    assert replicate(b, a) == 2
    assert a.leader_epochs.entries == (EpochEntry(1, 0), EpochEntry(2, 1))
    assert load_leader_epochs(a.log.directory).entries == a.leader_epochs.entries


def test_a_follower_forgets_an_epoch_it_assigned_without_writing_when_it_replicates(
        tmp_path, monkeypatch):
    # Given a replica holding an epoch it assigned as leader but never wrote in
    a = open_partition(tmp_path / "a" / "t-3")
    append_as_leader(a, batch_of([b"a"]), 1)
    b = open_partition(tmp_path / "b" / "t-3")
    replicate(a, b)
    refuse_append_as_leader(a, monkeypatch, 3)
    # When it replicates the new leader's epoch 2 without truncating first (no divergence)
    append_as_leader(b, batch_of([b"b"]), 2)
    # Then the entries and epoch 2 are taken
    assert replicate(b, a) == 2
    assert a.leader_epochs.entries == (EpochEntry(1, 0), EpochEntry(2, 1))


def catch_up(leader: Partition, follower: Partition) -> None:
    """The follower's side of the protocol (design12.md): fetch with the epoch of its last
    entry; on divergence truncate to min(the leader's end of that epoch, its own), again
    until the histories agree; then take everything the leader has."""
    for _ in range(100):
        fetch_offset = follower.log.end_offset
        last_epoch = follower.leader_epochs.epoch_at(fetch_offset - 1)
        if last_epoch == NO_EPOCH:
            break
        epoch, end_offset = leader.leader_epochs.end_offset_for(last_epoch, leader.log.end_offset)
        if epoch == last_epoch and end_offset >= fetch_offset:
            break
        own_end = follower.leader_epochs.end_offset_for(epoch, fetch_offset).start_offset
        follower.truncate_to(max(min(end_offset, own_end), 0))
    else:
        raise AssertionError(f"{follower.log.directory} did not converge")
    replicate(leader, follower)


def test_two_replicas_that_lead_in_turn_converge_after_every_change_of_leader(tmp_path):
    rng = random.Random(1212)
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN, index_interval_bytes=256)
    replicas = [open_partition(tmp_path / name / "t-3", config) for name in ("a", "b")]
    leader, epoch, sequence, changes = 0, 1, 0, 0
    written_in = {}   # batch bytes -> the epoch its leader wrote it in
    for step in range(300):
        lead, follow = replicas[leader], replicas[1 - leader]
        action = rng.random()
        if action < 0.5:
            # Given the leader appends batches of an idempotent producer
            for _ in range(rng.randrange(1, 4)):
                batch = batch_of([b"r%d" % sequence] * rng.randrange(1, 4),
                                 producer_id=100 + changes, base_sequence=sequence)
                sequence += summarize_batch(batch).record_count
                append_as_leader(lead, batch, epoch)
                written_in[batch] = epoch
        elif action < 0.75:
            # And the follower fetches a prefix of what the follower lacks
            offset = follow.log.end_offset
            data = entries_from(lead, offset) if offset <= lead.log.end_offset else b""
            ends = [0] + [h.entry_bytes for h, _ in iter_entries(data)]
            cut = sum(ends[:rng.randrange(len(ends))])
            if cut:
                follow.append_replicated(data[:cut], [
                    (e.epoch, e.start_offset) for e in lead.leader_epochs.entries
                    if e.start_offset >= offset])
        elif action < 0.9:
            # When leadership moves (uncleanly: the new leader may lack entries)
            # (its producer, which may have lost batches, starts again as a new one)
            leader, epoch, changes, sequence = 1 - leader, epoch + 1, changes + 1, 0
            # Then the old leader, now following, converges to the new leader's log
            catch_up(replicas[leader], replicas[1 - leader])
            assert entries_from(replicas[0], 0) == entries_from(replicas[1], 0), step
            assert replicas[0].leader_epochs.entries == replicas[1].leader_epochs.entries, step
            # And its epochs say which leader epoch wrote each of its batches
            for header, batch in iter_entries(entries_from(replicas[0], 0)):
                assert replicas[0].leader_epochs.epoch_at(header.base_offset) == written_in[
                    bytes(batch)], step
        else:
            # And a replica crashes now and then (reopened without being closed: its
            # files are let go, nothing written, as a killed process's are)
            crashed = rng.randrange(2)
            for segment in replicas[crashed].log.segments:
                segment.release()
            replicas[crashed] = open_partition(tmp_path / ("a", "b")[crashed] / "t-3", config)
            assert not replicas[crashed].needs_repair
    assert changes > 30
    for replica in replicas:
        replica.log.close()


def test_retention_keeps_the_only_segment_of_a_log_taking_writes_and_deletes_a_sealed_ones(
        tmp_path):
    # Given two partitions of one segment each, whose record is an hour past retention,
    # one of them sealed (its writes moved away)
    config = LogConfig(retention_ms=1000)
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    live, sealed = (open_partition(tmp_path / name, config) for name in ("t-0", "t-1"))
    for part in (live, sealed):
        append(part, batch_of([b"v"], timestamps_ms=[hour_ago_ms]))
    sealed.sealed = True
    # When retention runs, Then the one taking writes keeps its active segment
    assert live.enforce_retention().segments == 0
    assert (live.log.start_offset, live.log.end_offset, live.log.segment_count) == (0, 1, 1)
    # And the sealed one's record goes, the log kept at its end offset
    assert sealed.enforce_retention().segments == 1
    assert (sealed.log.start_offset, sealed.log.end_offset) == (1, 1)


def test_retention_moves_the_first_leader_epoch_to_the_new_start_offset(tmp_path):
    # Given a partition led in epochs 1 then 2, of small segments, that keeps 2 of them
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN,
                       retention_bytes=2 * limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", config)
    for i in range(10):
        append_as_leader(part, batch_of([b"v" * 300]), 1)
    for i in range(30):
        append_as_leader(part, batch_of([b"v" * 300]), 2)
    # When retention deletes segments past the start of epoch 2
    result = part.enforce_retention()
    # Then epoch 1 is gone and epoch 2 starts at the new start offset, saved
    start_offset = part.log.start_offset
    assert result.segments and start_offset > 10
    assert part.leader_epochs.entries == (EpochEntry(2, start_offset),)
    assert load_leader_epochs(tmp_path / "t-3").entries == part.leader_epochs.entries


def test_local_retention_of_a_tiered_log_deletes_only_the_uploaded_prefix_and_fits_the_epochs(
        tmp_path):
    # Given a tiered partition led in epochs 1 then 2, of small segments, that keeps
    # nothing locally and everything in all
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN, remote_storage_enable=True,
                       local_retention_bytes=0, local_retention_ms=0)
    part = open_partition(tmp_path / "t-3", config)
    for i in range(10):
        append_as_leader(part, batch_of([b"v" * 300]), 1)
    for i in range(30):
        append_as_leader(part, batch_of([b"v" * 300]), 2)
    segments = part.log.segments
    assert len(segments) >= 4
    # When nothing is uploaded, nothing goes, though every segment is past local retention
    assert part.enforce_local_retention(None).segments == 0
    assert part.log.segments == segments
    # When the uploads reached the middle of the third segment
    uploaded_end = segments[2].base_offset + 1
    result = part.enforce_local_retention(held_remotely(EMPTY_REMOTE_LOG, uploaded_end))
    # Then the two segments wholly uploaded go, and no other
    assert result.segments == 2 and part.log.start_offset == segments[2].base_offset
    # And the epochs start at the new local start (no remote view here), saved
    assert part.leader_epochs.entries[0].start_offset == part.log.start_offset
    assert load_leader_epochs(tmp_path / "t-3").entries == part.leader_epochs.entries


def test_a_partition_whose_directory_was_lost_can_be_marked_as_needing_repair(tmp_path):
    # Given a partition with records, whose directory is then deleted while it is down
    part = open_partition(tmp_path / "t-3")
    assert part.directory_created   # a new partition
    append_as_leader(part, batch_of([b"a"]), 1)
    part.log.close()
    assert not open_partition(tmp_path / "t-3").directory_created
    shutil.rmtree(tmp_path / "t-3")
    # When it is opened again, it says it created the directory
    part = open_partition(tmp_path / "t-3")
    assert part.directory_created and not part.needs_repair
    # Then the shard, which knew the partition, marks it; the mark survives a restart
    part.mark_needs_repair("the shard's manifest knew t-3 but its directory was missing")
    part = open_partition(tmp_path / "t-3")
    assert part.needs_repair and not part.directory_created
    # And it is cleared once the partition has caught up with its leader
    assert part.note_caught_up(0) and not open_partition(tmp_path / "t-3").needs_repair


def test_a_follower_behind_its_leaders_log_start_restarts_there_with_no_history(tmp_path):
    # Given a leader whose retention deleted the offsets a follower lacks
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN,
                       retention_bytes=2 * limits.SEGMENT_BYTES_MIN)
    leader = open_partition(tmp_path / "leader" / "t-3", config)
    follower = open_partition(tmp_path / "follower" / "t-3", config)
    append_as_leader(leader, batch_of([b"old"], producer_id=6, base_sequence=0), 1)
    replicate(leader, follower)
    for i in range(1, 40):
        append_as_leader(leader, batch_of([b"v" * 300], producer_id=6, base_sequence=i), 2)
    leader.enforce_retention()
    assert leader.log.start_offset > follower.log.end_offset
    # When the follower restarts its log at the leader's start offset
    follower.restart_at(leader.log.start_offset)
    # Then it is empty there, with no epochs and no producers, saved so
    assert (follower.log.start_offset, follower.log.end_offset, follower.high_watermark) == (
        (leader.log.start_offset,) * 3)
    assert follower.leader_epochs.entries == () and len(follower.producers) == 0
    assert load_leader_epochs(follower.log.directory).entries == ()
    # And it replicates the leader's log from there, epochs and producers included
    replicate(leader, follower)
    assert entries_from(follower, follower.log.start_offset) == entries_from(
        leader, leader.log.start_offset)
    assert follower.leader_epochs.entries == leader.leader_epochs.entries
    assert append_as_leader(follower, batch_of([b"v" * 300], producer_id=6, base_sequence=39),
                            3) == 39


def test_a_tiered_follower_restarted_at_its_leaders_local_start_keeps_no_epoch_of_its_own(
        tmp_path):
    # Given a replica of a tiered topic that led it in epoch 0 from offset 0, whose
    # remote log (object storage) starts at 0
    follower = open_partition(tmp_path / "t-3")
    append_as_leader(follower, batch_of([b"a"]), 0)
    follower.remote = SimpleNamespace(log_start_offset=0, is_empty=False)
    # When, a follower now, it restarts empty at its new leader's local start
    follower.restart_at(13288)
    # Then it keeps no epoch, saved so: its epoch 0 claimed offsets its new leader wrote
    # in a later epoch, and each fetch was answered with a divergence
    assert follower.leader_epochs.entries == ()
    assert load_leader_epochs(follower.log.directory).entries == ()


def test_retention_removes_the_producer_snapshots_of_the_segments_it_deletes(tmp_path):
    # Given a partition of small segments, one producer snapshot saved at each roll
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN,
                       retention_bytes=2 * limits.SEGMENT_BYTES_MIN)
    part = open_partition(tmp_path / "t-3", config)
    for i in range(40):
        append(part, batch_of([b"v" * 300], producer_id=3, base_sequence=i))
    rolls = [segment.base_offset for segment in part.log.segments[1:]]
    assert snapshot_offsets(tmp_path / "t-3") == rolls
    # When retention deletes the oldest segments
    part.enforce_retention()
    # Then the snapshots kept are those at or after the new start: the one before the
    # first segment left, and one per later roll
    assert snapshot_offsets(tmp_path / "t-3") == [o for o in rolls if o >= part.log.start_offset]
    assert part.log.start_offset in snapshot_offsets(tmp_path / "t-3")


# --- Deleted records: the log start floor ------------------------------------------

def partition_with_segments(directory, batches: int = 12) -> Partition:
    """A partition of ``batches`` one-record batches over several small segments."""
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN)
    part = open_partition(directory, config)
    for i in range(batches):
        append(part, batch_of([bytes([i]) * (limits.SEGMENT_BYTES_MIN // 3)]))
    part.log.flush()
    part.advance(part.log.end_offset)
    return part


def test_delete_records_moves_the_log_start_inside_a_segment_and_deletes_the_segments_below(tmp_path):
    # Given a partition of 12 records over several segments
    part = partition_with_segments(tmp_path / "t-3")
    segment_bases = [s.base_offset for s in part.log.segments]
    assert len(segment_bases) >= 4
    inside = segment_bases[2] + 1   # not a segment's base offset
    assert inside not in segment_bases
    # When the records before an offset inside the third segment are deleted
    low_watermark = part.delete_records(inside)
    # Then the log start offset is exactly that offset, the two segments wholly
    # below it are gone, and the one holding it stays
    assert low_watermark == part.log_start_offset == inside
    assert part.log.start_offset == segment_bases[2]
    assert [s.base_offset for s in part.log.segments] == segment_bases[2:]


def test_the_local_start_offset_never_falls_below_the_log_start_that_delete_records_raised(
        tmp_path):
    # Given a partition whose deleted records' first segment is still on disk
    part = partition_with_segments(tmp_path / "t-3")
    inside = part.log.segments[2].base_offset + 1
    part.delete_records(inside)
    assert part.log.start_offset < inside
    # Then the first offset served from the disk is the log start, as Kafka's local log
    # start offset is never below its log start offset
    assert part.local_start_offset == part.log_start_offset == inside


def test_delete_records_minus_one_deletes_up_to_the_high_watermark(tmp_path):
    part = partition_with_segments(tmp_path / "t-3")
    assert part.delete_records(-1) == part.high_watermark == 12


def test_deleting_every_record_of_a_one_segment_log_frees_its_disk_and_writes_go_on(tmp_path):
    # Given a partition whose records all sit in its active segment
    part = open_partition(tmp_path / "t-3", LogConfig())
    for i in range(5):
        append(part, batch_of([bytes([i]) * 1000]))
    part.advance(part.log.end_offset)
    full_segment = part.log.segments[0].log_path
    # When every record is deleted (to the high watermark)
    assert part.delete_records(-1) == 5
    # Then the segment that held them is gone: the log is one empty segment at the end
    assert not full_segment.exists()
    assert [(s.base_offset, s.is_empty) for s in part.log.segments] == [(5, True)]
    assert part.log.size_bytes == 0 and part.log_start_offset == 5
    # And writes go on at the next offset, and a reopen finds the same log
    assert append(part, batch_of([b"after"])) == 5
    part.log.close()
    reopened = open_partition(tmp_path / "t-3", LogConfig())
    assert (reopened.log_start_offset, reopened.log.end_offset) == (5, 6)


def test_a_follower_whose_adopted_floor_reaches_its_log_end_deletes_its_one_segment(tmp_path):
    part = open_partition(tmp_path / "t-3", LogConfig())
    for i in range(4):
        append(part, batch_of([bytes([i]) * 1000]))
    part.advance(part.log.end_offset)
    assert part.adopt_leader_floor(4)
    deleted = part.enforce_retention()
    assert (deleted.segments, deleted.start_offset) == (1, 4)
    assert part.log.size_bytes == 0


def test_delete_records_inside_the_only_segment_keeps_it(tmp_path):
    part = open_partition(tmp_path / "t-3", LogConfig())
    for i in range(4):
        append(part, batch_of([bytes([i]) * 1000]))
    part.advance(part.log.end_offset)
    assert part.delete_records(3) == 3
    assert [s.base_offset for s in part.log.segments] == [0]
    assert part.enforce_retention().segments == 0


def test_retention_of_one_segment_with_a_floor_inside_it_returns_without_looking_further(
        tmp_path, monkeypatch):
    # Given a one-segment partition whose records were deleted up to inside its segment
    part = open_partition(tmp_path / "t-3", LogConfig())
    for i in range(4):
        append(part, batch_of([bytes([i]) * 1000]))
    part.advance(part.log.end_offset)
    assert part.delete_records(3) == 3

    # When retention runs (the slow path's steps made to fail if they are called)
    def not_called(*args, **kwargs):
        raise AssertionError("a floor inside the only segment took retention's slow path")
    monkeypatch.setattr(part, "delete_segments_below_floor", not_called)
    monkeypatch.setattr(part.log, "enforce_retention", not_called)
    result = part.enforce_retention()
    # Then it took the fast path: nothing deleted, the segment kept
    assert (result.segments, result.bytes, result.start_offset) == (0, 0, 0)
    assert [s.base_offset for s in part.log.segments] == [0]
    # And a floor moved to the log's end (a follower's, adopted) still deletes the
    # segment on the next pass
    monkeypatch.undo()
    assert part.adopt_leader_floor(4)
    assert (part.enforce_retention().segments, part.log.size_bytes) == (1, 0)


def test_delete_records_below_the_log_start_changes_nothing(tmp_path):
    part = partition_with_segments(tmp_path / "t-3")
    part.delete_records(7)
    assert part.delete_records(3) == 7
    assert part.floor == 7


@pytest.mark.parametrize("offset", [13, -2, -100])
def test_delete_records_past_the_high_watermark_or_negative_is_out_of_range(tmp_path, offset):
    part = partition_with_segments(tmp_path / "t-3")
    with pytest.raises(OffsetOutOfRangeError, match=r"t-3.*log start offset 0 to its high "
                                                    r"watermark 12"):
        part.delete_records(offset)
    assert part.log_start_offset == 0 and part.floor == 0


def test_the_floor_survives_a_reopen(tmp_path):
    # Given records deleted up to an offset inside a segment
    part = partition_with_segments(tmp_path / "t-3")
    part.delete_records(5)
    part.log.close()
    # When the partition is opened again
    reopened = open_partition(tmp_path / "t-3", part.log.config)
    # Then it starts at that offset, not at its first segment's base
    assert reopened.log_start_offset == 5
    assert reopened.log.start_offset < 5


def test_a_torn_floor_file_serves_every_stored_record_again_rather_than_hide_acknowledged_ones(
        tmp_path, caplog):
    # Given a partition whose records below 5 were deleted, then its floor file torn
    part = partition_with_segments(tmp_path / "t-3")
    part.delete_records(5)
    first_stored = part.stored_start_offset
    part.log.close()
    floor_path = tmp_path / "t-3" / "log-start-floor"
    floor_path.write_bytes(floor_path.read_bytes()[:11])
    # When it is opened again
    reopened = open_partition(tmp_path / "t-3", part.log.config)
    # Then every record its segments hold is served (none acknowledged is hidden),
    # it says so loudly with the way back, and the bad file is kept aside
    assert reopened.log_start_offset == first_stored < 5
    assert reopened.log.end_offset == 12
    assert "lost its log start floor" in caplog.text and "delete-records" in caplog.text
    assert (tmp_path / "t-3" / "log-start-floor.corrupt").exists()
    # And deleting the records again puts the floor back, durably
    assert reopened.delete_records(5) == 5
    reopened.log.close()
    assert open_partition(tmp_path / "t-3", part.log.config).log_start_offset == 5


def test_a_follower_adopts_its_leaders_floor_only_up_to_its_own_high_watermark(tmp_path):
    part = partition_with_segments(tmp_path / "t-3")
    part.high_watermark = 8   # behind its leader
    assert part.adopt_leader_floor(10)
    assert part.log_start_offset == 8
    assert not part.adopt_leader_floor(4)   # never down
    assert part.log_start_offset == 8


def test_a_tiered_partition_keeps_its_segments_below_the_floor_for_local_retention(tmp_path):
    config = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN, remote_storage_enable=True)
    part = open_partition(tmp_path / "t-3", config)
    for i in range(9):
        append(part, batch_of([bytes([i]) * (limits.SEGMENT_BYTES_MIN // 3)]))
    part.advance(part.log.end_offset)
    segments = len(part.log.segments)
    assert part.delete_records(6) == 6
    assert len(part.log.segments) == segments


def test_a_partition_the_disk_refuses_to_create_is_a_storage_error_and_leaves_no_directory(
        tmp_path):
    import resource
    import signal

    from plinth.errors import StorageError

    # Given a process that may write no file past 8 bytes (the kernel's EFBIG stands
    # for a full disk: both refuse the write of a new partition's first file)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8, hard))
    try:
        # When a new partition is opened
        with pytest.raises(StorageError) as refused:
            Partition.open(tmp_path / "g-0", "g", 0, LogConfig())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    # Then the error names the partition's directory and the cause, and nothing of it
    # is left for a later create of the topic to open
    assert str(tmp_path / "g-0") in str(refused.value) and "File too large" in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_a_followers_refused_append_is_said_as_a_followers_outage_not_as_producers(
        tmp_path, monkeypatch, caplog):
    # Given a follower holding its leader's first entry, whose disk is then full
    leader, follower = leader_and_follower(tmp_path, 1)
    append_as_leader(leader, batch_of([b"b"]), 1)

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full_disk)   # (replicated entries go whole)
    # When it appends what it fetched
    with caplog.at_level(logging.WARNING), pytest.raises(StorageError):
        replicate(leader, follower)
    # Then its outage line says what it stops: the replica's own copy, no producer's
    # write (T-ext: "producers get StorageError", of a follower)
    (line,) = [r.getMessage() for r in caplog.records if "appends to t-3 fail" in r.getMessage()]
    assert line.endswith("this replica fetches its leader's entries again, out of the in-sync "
                         "set, until the disk takes writes again (said once until then)"), line
