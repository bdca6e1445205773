"""Seek by time into object storage: the exact first record of a remote segment stamped at or after a time.

The remote half of shards/time_lookup.py (ListOffsets by timestamp, Kafka's
offsets_for_times). The loop thread finds the remote segment that holds the
answer, if any (time_lookup.record_at_time: the first one below the local log
whose newest record is recent enough) and, since it never waits for a store,
hands a ``RemoteTimeRead`` to the shard's remote reader thread
(remote_fetcher.py, the same queue, store, chunk cache and bounds as remote
fetches); the reader calls ``find_in_remote_segment`` and posts a
``RemoteTimeResult`` back to the loop, which answers the request.

What one look-up reads, at most:

1. the segment's ``.timeindex`` object, whole (12 bytes an entry, one entry a
   INDEX_INTERVAL_BYTES of log at most: 768 KiB for a 256 MiB segment), CRC
   checked against the manifest; and its ``.index`` object (8 bytes an entry),
   which remote fetches of the segment read too. The reader keeps the
   REMOTE_INDEXES_CACHED_MAX most recently used of each in memory, so a second
   look-up in the segment reads neither;
2. one stretch of the ``.log`` object. The time index's first entry stamped at
   or after the time, at offset O, bounds the answer: every entry up to the
   offset index entry just before O is older (time_index.py: each entry's
   timestamp is the running maximum, added at offset index points whenever it
   grows), so the first entry recent enough lies between that offset index
   entry and O (or the segment's end, when no time index entry is recent
   enough): one index interval plus that one entry (BATCH_BYTES_MAX at most).
   It is read as remote fetches read (read_remote_range: through the chunk
   cache for a cloud store, one ranged get of REMOTE_CHUNK_BYTES, aligned, two
   when the stretch crosses a chunk boundary; every entry's CRC checked), and
   the first recent enough entry is decoded (time_lookup.first_record_at).

So a look-up in a segment not seen before costs three GETs (the two index
objects, one chunk) and less than 2 * REMOTE_CHUNK_BYTES plus the indexes,
whatever the segment's size. Only when deleteRecords' floor lies inside the
segment past that entry are the entries from the floor read on, chunk by chunk,
until one qualifies or the segment ends (None: the loop asks again from the
segment's end, where the next segment answers).

Errors are the remote fetch's (remote_fetcher.py), never a guess: the store
down or slow, RemoteStorageUnavailableError (retriable); a bad entry or index,
CorruptDataError naming the partition, the offset and the object (the
segment's cached chunks and indexes are dropped first, so a retry reads the
store again). The loop waits at most REMOTE_TIME_LOOKUP_WAIT_MS_MAX for the
reader, then answers RequestTimedOutError (retriable), and a look-up of the
same partition, segment, time and floor joins the read pending
(remote_fetch_waits.py), so a client retrying a slow store queues no second
read and gets the record once the store answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from plinth import limits
from plinth.errors import BrokerError
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, scan_whole_entries
from plinth.shards.offset_index import OffsetIndex
from plinth.shards.time_index import TimeIndex
from plinth.shards.time_lookup import TimeLookup, first_record_at
from plinth.shards.tier.chunk_cache import RemoteChunkCache
from plinth.shards.tier.remote_segment import TIME_INDEX, RemoteSegment
from plinth.shards.tier.remote_store import RemoteStore
from plinth.shards.tier.remote_transfer import entry_bytes_at, read_remote_range, read_small_object

__all__ = ["RemoteTimeRead", "RemoteTimeResult", "find_in_remote_segment",
           "load_remote_time_index"]


class RemoteTimeRead(NamedTuple):
    """One look-up by time for the reader, built by the loop thread. ``offset`` is
    the first offset that may answer (the segment's base, or deleteRecords' floor);
    ``answer`` is only carried back and called on the loop thread (the reader never
    calls it), once: with the read's result, or with requestTimedOut when its wait
    ended (remote_fetch_waits.py). The fields ``key``, ``segment``, ``offset`` and ``received_s`` are
    those of a RemoteRead, so the loop checks both alike (remote_fetcher.py)."""

    key: tuple[str, int]
    segment: RemoteSegment
    timestamp_ms: int
    offset: int
    received_s: float   # when the loop got the request (time.monotonic())
    answer: Callable[[TimeLookup | None, BrokerError | None], None]


class RemoteTimeResult(NamedTuple):
    """What the reader hands back: the record found (None: none in the segment at or
    after ``read.offset``) or the error to answer with."""

    read: RemoteTimeRead
    found: TimeLookup | None
    error: BrokerError | None


def load_remote_time_index(store: RemoteStore, segment: RemoteSegment) -> TimeIndex:
    """The segment's time index, read whole and checked. Any thread."""
    data = read_small_object(store, segment, TIME_INDEX)
    return TimeIndex.from_bytes(data, segment.base_offset,
                                f"{store.url} {segment.object_key(TIME_INDEX)}")


def find_in_remote_segment(store: RemoteStore, segment: RemoteSegment, timestamp_ms: int,
                           from_offset: int, *, offset_index: OffsetIndex,
                           time_index: TimeIndex,
                           cache: RemoteChunkCache | None) -> TimeLookup | None:
    """The first record of ``segment`` at or after ``from_offset`` stamped at or after
    ``timestamp_ms``, or None (module docstring: what it reads). The reader thread
    (or a test's)."""
    position = offset_index.lookup(_scan_from(segment, timestamp_ms, from_offset, time_index))[1]
    length = limits.INDEX_INTERVAL_BYTES + LOG_ENTRY_HEADER_BYTES   # the stretch, first
    while position < segment.size_bytes:
        chunk = read_remote_range(store, segment, position, length, offset=from_offset,
                                  cache=cache)
        if not len(chunk):   # the next entry is longer than ``length``: read it whole
            length = entry_bytes_at(store, segment, position, from_offset, cache)
            continue
        for _, header, batch in scan_whole_entries(chunk, False, position):
            if header.end_offset <= from_offset or header.max_timestamp_ms < timestamp_ms:
                continue
            found = first_record_at(segment.topic, segment.partition, header, batch,
                                    timestamp_ms, from_offset)
            if found is not None:
                return found
        position += len(chunk)
        length = limits.REMOTE_CHUNK_BYTES   # past a floor inside the segment: on, by chunks
    return None


def _scan_from(segment: RemoteSegment, timestamp_ms: int, from_offset: int,
               time_index: TimeIndex) -> int:
    """An offset whose offset index entry no answer precedes: the one before the time
    index's first entry recent enough (or before the segment's end), or the floor if
    that is later."""
    reaching = time_index.first_reaching(timestamp_ms)
    before = (segment.end_offset if reaching is None else reaching) - 1
    return max(before, from_offset)
