"""Seek by time: the first record of a partition stamped at or after a given time.

Runs on the shard's loop thread only (shard_server.py answers listOffsets with
it), like every reader of a Partition: nothing changes the log between the
index look-up and the read.

The answer is Kafka's (ListOffsets by timestamp, KafkaConsumer.offsets_for_times):
the EXACT first record, in offset order, whose timestamp is >= the one asked,
with that record's timestamp; or none (offset -1, timestamp -1). Timestamps
are the producers' and need not grow with offsets, so "first" is by offset,
not by time.

How. The time index (time_index.py, per segment) and the log entries' headers
know times per batch only: PartitionLog.offset_for_timestamp finds the first
batch whose largest timestamp is >= the one asked, which therefore holds the
answer. That one batch is then read (one entry, CRC-checked) and decoded
(format/batch_formats.decode, after decompression for a compressed Kafka
batch) to find the record. This is done here, in the shard, not by the
caller, because the shard has the entry at hand (one pread), the answer then
travels as two integers to every caller alike (a Plinth client, the Kafka
listener, the controller merging a partition that spans shards) and no batch
bytes cross the network; the cost is one batch decode per look-up, at most
BATCH_BYTES_MAX, which the shard already spends to check a produced batch.

``MAX_TIMESTAMP`` (Kafka's -3, ListOffsets v7) asks for the record with the
largest timestamp: the first one stamped at the partition's largest timestamp.

Only records below the high watermark are answered (a consumer could not read
the others yet), and none below the log start offset (deleteRecords' floor may
sit inside a batch: from there the batches are read one by one).

Tiered storage (issue 14). Offsets below the local log's start that only
object storage holds are answered exactly too, but not here: the loop thread
never waits for a store. If a remote segment there is the first whose newest
record is recent enough, ``record_at_time`` answers ``InRemoteSegment`` (that
segment, the timestamp, the first offset that may answer) and the caller hands
it to the shard's remote reader thread (tier/remote_time_lookup.py), which
reads the segment's time index and offset index objects and one stretch of its
log (one chunk through the chunk cache) and finds the record as the local path
does, with ``first_record_at``. If no record of that segment at or after the
offset qualifies (deleteRecords' floor inside it), the caller asks again from
the segment's end (``from_offset``), once at most: the next segment holds one.
A store that is down is answered with its retriable error, never with a guess.
"""

from __future__ import annotations

from typing import NamedTuple

from plinth.errors import CorruptDataError
from plinth.format import batch_formats
from plinth.format.log_entry import scan_whole_entries
# The wire's values (protocol.py): MAX_TIMESTAMP is Kafka's -3 (ListOffsets v7);
# an answer's offset and timestamp when no record qualifies are -1.
from plinth.protocol import MAX_TIMESTAMP, OFFSET_NONE, TIMESTAMP_UNKNOWN
from plinth.shards.partition import Partition
from plinth.shards.tier.remote_segment import RemoteSegment

__all__ = ["InRemoteSegment", "TimeLookup", "first_record_at", "record_at_time"]


class TimeLookup(NamedTuple):
    """The answer: an offset and its record's timestamp; (-1, -1) for none."""

    offset: int = OFFSET_NONE
    timestamp_ms: int = TIMESTAMP_UNKNOWN


NOT_FOUND = TimeLookup()


class InRemoteSegment(NamedTuple):
    """Not answered yet: the first record at or after ``from_offset`` stamped at or
    after ``timestamp_ms`` (MAX_TIMESTAMP resolved) is in ``segment``, a segment only
    object storage holds, if anywhere in it (module docstring)."""

    segment: RemoteSegment
    timestamp_ms: int
    from_offset: int


def record_at_time(part: Partition, timestamp_ms: int,
                   from_offset: int = 0) -> TimeLookup | InRemoteSegment:
    """The first record of ``part`` at or after ``from_offset`` (and its log start
    offset), below its high watermark, stamped at or after ``timestamp_ms`` (>= 0),
    or at its largest timestamp for MAX_TIMESTAMP; or, when it is in object
    storage, where to look for it (InRemoteSegment). Loop thread. Raises
    CorruptDataError (naming the file) if the batch read is."""
    if timestamp_ms == MAX_TIMESTAMP:
        timestamp_ms = _largest_timestamp_ms(part)
        if timestamp_ms is None:
            return NOT_FOUND
    elif timestamp_ms < 0:
        raise AssertionError(f"time look-up of {part.name} at {timestamp_ms} ms: the caller "
                             f"checks that a timestamp is >= 0 or {MAX_TIMESTAMP}")
    floor = max(part.log_start_offset, from_offset)   # deleteRecords': nothing below it
    remote = _remote_only_at_time(part, timestamp_ms, floor)
    if remote is not None:
        return remote
    return _local_at_time(part, timestamp_ms, floor)


def _largest_timestamp_ms(part: Partition) -> int | None:
    """The largest timestamp of the local and remote logs, None if both are empty."""
    stamps = [segment.max_timestamp_ms for segment in part.remote.segments]
    local_ms = part.log.max_timestamp_ms()
    if local_ms is not None:
        stamps.append(local_ms)
    return max(stamps) if stamps else None


def _remote_only_at_time(part: Partition, timestamp_ms: int,
                         floor: int) -> InRemoteSegment | None:
    """The first remote segment below the local log, ending past ``floor``, whose
    newest record is stamped at or after ``timestamp_ms``, else None."""
    local_start = part.log.start_offset
    for segment in part.remote.segments:
        if segment.base_offset >= local_start:
            break
        if segment.end_offset <= floor:
            continue
        if segment.max_timestamp_ms >= timestamp_ms:
            return InRemoteSegment(segment, timestamp_ms, max(segment.base_offset, floor))
    return None


def _local_at_time(part: Partition, timestamp_ms: int, log_start: int) -> TimeLookup:
    """The exact record from the local log: the batch from the time index, decoded.
    A record below ``log_start`` (deleteRecords' floor, inside a segment, or the end
    of a remote segment already looked in) is not an answer: the batches from the
    floor on are read, one at a time, up to the high watermark."""
    base_offset = part.log.offset_for_timestamp(timestamp_ms)
    if base_offset >= log_start:
        return _record_in_batch_at(part, base_offset, timestamp_ms, log_start, must=True)
    offset = log_start
    while offset < part.high_watermark:   # each read moves past one whole batch
        found = _record_in_batch_at(part, offset, timestamp_ms, log_start, must=False)
        if isinstance(found, TimeLookup):
            return found
        offset = found
    return NOT_FOUND


def _record_in_batch_at(part: Partition, offset: int, timestamp_ms: int, log_start: int,
                        must: bool) -> TimeLookup | int:
    """The first record at or after ``log_start`` stamped at or after ``timestamp_ms``
    in the batch holding ``offset``; if none, the offset after that batch, unless
    ``must`` (the time index chose it: CorruptDataError)."""
    if offset >= part.high_watermark:
        return NOT_FOUND
    entries = part.log.read(offset, 1, part.high_watermark)   # the first entry, whole
    _, header, batch = next(scan_whole_entries(entries, verify_crc=False))
    found = first_record_at(part.topic, part.partition, header, batch, timestamp_ms, log_start)
    if found is not None:
        return found
    if not must:
        return header.base_offset + header.record_count
    raise CorruptDataError(
        f"{part.log.directory}: the batch at offset {header.base_offset} has max timestamp "
        f"{header.max_timestamp_ms} ms in its log entry, but none of its {header.record_count} "
        f"records is stamped at or after {timestamp_ms} ms")


def first_record_at(topic: str, partition: int, header, batch, timestamp_ms: int,
                    from_offset: int) -> TimeLookup | None:
    """The first record of one log entry (``header``, its ``batch`` bytes: a
    scan_whole_entries item) at or after ``from_offset`` stamped at or after
    ``timestamp_ms``, decoded (decompressed if need be), or None. Any thread."""
    for record in batch_formats.decode(header.attributes, topic, partition,
                                       header.base_offset, batch):
        if record.timestamp_ms >= timestamp_ms and record.offset >= from_offset:
            return TimeLookup(record.offset, record.timestamp_ms)
    return None
