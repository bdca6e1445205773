"""One partition on a shard (shards/partition.py): its log on a real disk, its high
watermark, its idempotent producers, and what survives a corrupt log."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from plinth import limits
from plinth.errors import InvalidTimestampError, StorageError
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, iter_entries
from plinth.format.record_batch import BatchBuilder, summarize_batch
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig
from plinth.shards.producer_state import SNAPSHOT_FILE

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
    (tmp_path / "t-3" / SNAPSHOT_FILE).write_text('{"base_offset": ')
    # When it is opened / Then a retry of the last batch (in the active segment) is known
    reopened = open_partition(tmp_path / "t-3", small)
    assert append(reopened, batch_of([value], producer_id=8, base_sequence=3)) == 3
    assert reopened.log.end_offset == 4


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
    saved = json.loads((tmp_path / "t-3" / SNAPSHOT_FILE).read_text())
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
    path = tmp_path / "t-3" / SNAPSHOT_FILE
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
