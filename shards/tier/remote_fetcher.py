"""Fetches below a partition's local log start, read from object storage off the loop thread.

Kafka's RemoteLogReader. The shard's loop thread (shard_server.py) owns the
sockets and the partitions and must never wait for a store, so a fetch whose
offset lies below the local log start but in a remote segment
(``Partition.remote``, remote_log_view.py) is handed, as a ``RemoteRead``, to
this module's one reader thread per shard:

    loop thread                         reader thread
    ---------------------------------   --------------------------------------
    remote_segment_for(part, offset)
      (a hole: OffsetOutOfRangeError)
    RemoteFetcher.submit(read)   ---->  bounded queue (REMOTE_FETCHES_QUEUED_MAX;
      (full: TooManyRequestsError,        full is answered at once, retriable)
       the loop never blocks)           read_remote_entries through the shard's
                                          RemoteChunkCache (read-ahead), every
                                          entry's CRC checked (remote_transfer.py)
    ShardServer._remote_fetched  <----  ``done(RemoteReadResult)``: the server
      replies with _reply, counts it      posts it to the loop (ShardServer._post)

The loop does not wait for the reader's answer longer than
REMOTE_FETCH_WAIT_MS_MAX (Kafka's remote.fetch.max.wait.ms): past that the
fetch is answered with no records and the read goes on, its late result only
warming the chunk cache; and a fetch of an offset already being read joins
that read rather than queuing another (remote_fetch_waits.py, loop thread).
A look-up by time (below) is joined alike, waits at most
REMOTE_TIME_LOOKUP_WAIT_MS_MAX and is then answered requestTimedOut
(retriable: its client's retry joins the read still going on):

    loop thread                         reader thread
    ---------------------------------   --------------------------------------
    RemoteFetchWaits.join(read)?
      (joined: nothing queued)
    submit(read); RemoteFetchWaits.add ---->  reads (a hung store: seconds)
    _run_timers: the wait ended: a
      fetch answered empty, a look-up
      requestTimedOut; the read goes on
    _remote_fetched: RemoteFetchWaits  <----  done(result): a failed read is
      .settle: the requests still           logged at WARNING (rate-limited:
      waiting, if any, are answered         REMOTE_FETCH_FAILED_LOG_INTERVAL_S
      (none: the result is dropped,         per partition), naming the partition,
      counted once all the same)            the offset, the store and the error

What a remote fetch answers: whole entries starting with the one that holds
the offset, up to ``bytes_max`` (the first entry always whole), never past the
segment's end (the consumer asks again for the rest, and the next segment may
be remote too, or local) and never an entry starting at or past the high
watermark the loop saw when it queued the read. Errors, never wrong or partial
data:

- the store is down, slow or answering 5xx: RemoteStorageUnavailableError
  (retriable, "unavailable" on the wire), within the reader's store's bounded
  timeouts (REMOTE_FETCH_*_TIMEOUT_S); a read that waited in the queue longer
  than REMOTE_FETCH_QUEUED_S_MAX gets it without reading;
- a bad entry (CRC, header, offsets outside the segment) or index:
  CorruptDataError naming the partition, the offset and the object; the
  segment's cached chunks and index are dropped first, so a retry reads the
  store again;
- an object of the segment is gone and the partition's view no longer holds
  the segment (total retention deleted it after the loop chose it, the
  window the uploader leaves between a new view and the deletion): an
  UnavailableError (retriable), so that the consumer's retry is answered from
  the newer view: the next segment, or OffsetOutOfRangeError below the new log
  start (``answer_for_deleted``, called by the loop, which owns the view);
- the store refused for good (an object gone from a segment the view still
  holds, denied credentials): its RemoteStorageError ("storageError" on the wire).

Dropping cached chunks. The chunk cache is the reader thread's alone, but what
makes its chunks useless is seen on the loop thread: a partition deleted or
leaving the shard (ShardServer.delete_partition: ``drop_partition``), remote
segments deleted by retention (RemoteLogManager, the view that no longer holds
them: ``drop_segments``). Left in the cache, a deleted topic's records would
stay readable on the local disk until evicted. The loop queues the drop
(bounded: REMOTE_CACHE_DROPS_PENDING_MAX; past that the next pass empties the
whole cache) and wakes the reader (a wake-up takes a place in the read queue
while it waits, one at most), which applies it, files and accounting,
after every read the loop queued before asking and before any it queued after:

    loop thread                          reader thread
    submit(read n)                       ...
    drop_partition(...): "after read n"  serves read n (may cache chunks of it)
    (the partition is gone: no read      applies the drop: its chunks go, and
     of it is queued after this)           an INFO line says how many, how big

so a read that was already queued cannot bring a dropped partition's chunks
back, and one queued after the drop (the partition moved back here) keeps
its chunks. A drop that finds nothing cached is not logged. At ``stop`` the
reader applies every drop still pending before it ends (one it cannot reach
in the grace period goes with the cache at the next start: a cache is
emptied when it opens).

The reader keeps the REMOTE_INDEXES_CACHED_MAX most recently used remote
offset indexes in memory (each is read whole from the store), and the cache's
hit and miss counts travel back with every result, so the loop's ShardStats
(loop thread only) can show them.

Look-ups by time. The same queue also takes ``RemoteTimeRead``s
(remote_time_lookup.py: ListOffsets by timestamp whose record is in object
storage), served in turn with the reads, with the same bounds and errors, and
answered with a ``RemoteTimeResult`` through the same ``done``; the loop joins
and bounds them as it does fetches (remote_fetch_waits.py: one read per
partition, segment, time and floor; REMOTE_TIME_LOOKUP_WAIT_MS_MAX). For them
the reader also keeps the REMOTE_INDEXES_CACHED_MAX most recently used remote
time indexes in memory, so a retry after a late read is quick.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from plinth import limits
from plinth.errors import (
    BrokerError, CorruptDataError, InternalError, OffsetOutOfRangeError, RemoteObjectNotFoundError,
    RemoteStorageUnavailableError, StorageError, TooManyRequestsError, UnavailableError)
from plinth.format.log_entry import scan_whole_entries
from plinth.log_limit import LogLimit
from plinth.shards.offset_index import OffsetIndex
from plinth.shards.time_index import TimeIndex
from plinth.shards.time_lookup import TimeLookup
from plinth.shards.tier.chunk_cache import RemoteChunkCache
from plinth.shards.tier.remote_segment import RemoteSegment
from plinth.shards.tier.remote_store import CLOUD_SCHEMES, RemoteStore, open_remote_store
from plinth.shards.tier.remote_time_lookup import (
    RemoteTimeRead, RemoteTimeResult, find_in_remote_segment, load_remote_time_index)
from plinth.shards.tier.remote_transfer import load_remote_index, read_remote_entries

log = logging.getLogger(__name__)

__all__ = ["RemoteFetcher", "RemoteRead", "RemoteReadResult", "answer_for_deleted",
           "partition_read", "remote_segment_for"]

CACHE_DIR_NAME = "tier-cache"   # under the shard's data dir; no partition's dir name
_WAKE = object()   # the reader's queue: apply the drops the loop asked for


class _CacheDrop(NamedTuple):
    """Chunks the loop asked the reader to drop, once it has taken ``after_reads`` reads."""

    after_reads: int
    what: str                      # for the log: "deleted t-0 (topic id ...)", "3 segments of
                                   # t-0 deleted by total retention"
    topic_id: str | None           # with ``partition``: all of it; None: see ``segment_ids``
    partition: int
    segment_ids: tuple[str, ...]   # these segments (topic_id None); none and no topic: all


class RemoteRead(NamedTuple):
    """One fetch for the reader, built by the loop thread. ``envelope`` is only
    carried back (the reader never touches its frames)."""

    envelope: list
    request_id: int
    key: tuple[str, int]
    segment: RemoteSegment
    offset: int
    bytes_max: int
    end_offset_max: int   # no entry starting here or later: the high watermark, when queued
    received_s: float     # when the loop got the request (time.monotonic())


class RemoteReadResult(NamedTuple):
    """What the reader hands back to the loop: ``data`` or ``error``, and the chunk
    cache's counters after the read."""

    read: RemoteRead
    data: bytes | memoryview
    error: BrokerError | None
    cache_hits: int
    cache_misses: int
    cache_bytes: int


def remote_segment_for(part, offset: int) -> RemoteSegment:
    """The remote segment of ``part`` (a Partition) holding ``offset``, an offset below
    its local log start. OffsetOutOfRangeError naming both ranges if none holds it
    (a hole: the remote log ends before the local one starts, or has a gap). Loop thread."""
    remote = part.remote
    segment = remote.segment_for_offset(offset)
    if segment is None:
        raise OffsetOutOfRangeError(
            f"offset {offset} of {part.name} is in no segment: object storage holds "
            f"[{remote.log_start_offset}, {remote.end_offset}) with {len(remote.segments)} "
            f"segments, the local log [{part.log.start_offset}, {part.log.end_offset}]")
    return segment


def partition_read(read: RemoteRead, partitions: dict):
    """The partition (of ``partitions``, key -> Partition) whose records ``read`` read,
    or None if it is gone: deleted, or deleted and created again under the same name
    while the read waited (another topic id: the records are not the new one's, and
    its offsets must not be answered with them). Loop thread."""
    part = partitions.get(read.key)
    if part is None or part.topic_id != read.segment.topic_id:
        return None
    return part


def answer_for_deleted(error: BrokerError, read: RemoteRead, part) -> BrokerError:
    """The error to answer a remote read with (loop thread, ``part`` the Partition or None):
    a missing object of a segment the partition's view no longer holds was deleted
    by retention while it was read, and is retriable (module docstring); any other
    error is answered as it is."""
    if not isinstance(error, RemoteObjectNotFoundError):
        return error
    segment_id = read.segment.segment_id
    if part is not None and any(s.segment_id == segment_id for s in part.remote.segments):
        return error   # still in the view: the store lost it, retrying will not help
    return UnavailableError(
        f"offset {read.offset} of {read.key[0]}-{read.key[1]}: {read.segment.describe()} was "
        f"deleted by retention while it was read (the log now starts at "
        f"{part.log_start_offset if part is not None else 'an unknown offset'}); retry")


class RemoteFetcher:
    """One shard's reader thread, its queue, its store and its chunk cache.

    ``start`` and ``stop``: the thread that starts and stops the shard (the actor's);
    ``submit``, ``drop_partition`` and ``drop_segments``: the loop thread (one
    thread: the order of reads and drops is the loop's); everything else runs on
    the reader thread.
    ``done(result)`` is called on the reader thread for every read it takes (it
    posts the result to the loop)."""

    def __init__(self, shard_id: str, store: RemoteStore, cache: RemoteChunkCache | None,
                 done: Callable[[RemoteReadResult], None]):
        self.shard_id = shard_id
        self._store = store
        self._cache = cache
        self._done = done
        self._queue: queue.Queue = queue.Queue(maxsize=limits.REMOTE_FETCHES_QUEUED_MAX)
        self._indexes: OrderedDict[str, OffsetIndex] = OrderedDict()   # segment id -> index, LRU first
        self._time_indexes: OrderedDict[str, TimeIndex] = OrderedDict()   # the same, by time
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reads_submitted = 0   # loop thread
        self._reads_taken = 0       # reader thread
        self._drops: list[_CacheDrop] = []   # under _drops_lock; after_reads never decreasing
        self._drops_lock = threading.Lock()
        self._wake_queued = False   # under _drops_lock: a _WAKE is in the queue
        # Failed reads, one WARNING per partition per interval: a store that is down
        # fails every consumer's fetch, several times a second.
        self._failures_log = LogLimit(log, interval_s=limits.REMOTE_FETCH_FAILED_LOG_INTERVAL_S)

    @classmethod
    def open(cls, shard_id: str, url: str, data_dir: Path, cache_bytes: int,
             done: Callable[[RemoteReadResult], None]) -> RemoteFetcher:
        """A fetcher on the store at ``url`` (the server's --tier-url), with a chunk cache
        of ``cache_bytes`` under ``data_dir`` (emptied: a cache does not outlive its
        process) for a cloud store; a ``file://`` store is a local disk already, read
        directly (a cache in front of it only copies: README, "Hot against cold
        reads"). Its store's calls are bounded by REMOTE_FETCH_*_TIMEOUT_S."""
        store = open_remote_store(url, request_timeout_s=limits.REMOTE_FETCH_REQUEST_TIMEOUT_S,
                                  connect_timeout_s=limits.REMOTE_FETCH_CONNECT_TIMEOUT_S,
                                  retry_timeout_s=limits.REMOTE_FETCH_RETRY_TIMEOUT_S,
                                  missing_root_ok=True)   # the server checked it at start
        cache = None
        if urlsplit(url).scheme.lower() in CLOUD_SCHEMES:
            cache = RemoteChunkCache(Path(data_dir) / CACHE_DIR_NAME, cache_bytes)
        return cls(shard_id, store, cache, done)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.shard_id}-remote-reader",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace_period_s: float) -> None:
        """Stop taking reads and join the thread (a read in progress ends within the
        store's timeouts; reads still queued are dropped: the shard is stopping)."""
        self._stopping.set()
        try:
            self._queue.put_nowait(None)   # wakes a reader waiting on an empty queue
        except queue.Full:
            pass   # it is busy: it sees _stopping before its next read
        if self._thread is not None:
            self._thread.join(grace_period_s)
            if self._thread.is_alive():
                log.warning("%s: the remote reader did not stop within %.1f s (a store call "
                            "in progress)", self.shard_id, grace_period_s)
            self._thread = None

    def submit(self, read: RemoteRead | RemoteTimeRead) -> None:
        """Queue ``read`` (loop thread); TooManyRequestsError (retriable) if the queue is full."""
        try:
            self._queue.put_nowait(read)
        except queue.Full:
            raise TooManyRequestsError(
                f"{self.shard_id} has {limits.REMOTE_FETCHES_QUEUED_MAX} remote fetches queued, "
                f"the limit; offset {read.offset} of {read.key[0]}-{read.key[1]} is in "
                f"{read.segment.describe()}: retry") from None
        self._reads_submitted += 1

    def drop_partition(self, name: str, topic_id: str, partition: int, why: str) -> None:
        """Have the reader drop every cached chunk of the partition (``name`` "t-0") of
        the topic with id ``topic_id``, after the reads queued so far (module
        docstring); ``why``: "deleted", "moved away". Loop thread."""
        self._ask(_CacheDrop(self._reads_submitted, f"{why} {name} (topic id {topic_id})",
                             topic_id, partition, ()))

    def drop_segments(self, name: str, segment_ids: tuple[str, ...], why: str) -> None:
        """Have the reader drop every cached chunk of these segments of partition
        ``name``, after the reads queued so far (module docstring); ``why``: who
        deleted them. Loop thread."""
        if segment_ids:
            self._ask(_CacheDrop(self._reads_submitted,
                                 f"{len(segment_ids)} segments of {name} {why}", None, -1,
                                 tuple(segment_ids)))

    def _ask(self, drop: _CacheDrop) -> None:
        """Queue ``drop`` for the reader and wake it. Loop thread; never blocks."""
        if self._cache is None:
            return   # a file:// store: nothing is cached
        with self._drops_lock:
            if len(self._drops) >= limits.REMOTE_CACHE_DROPS_PENDING_MAX:
                # The reader is far behind: one drop of everything, after every read so far.
                self._drops = [_CacheDrop(drop.after_reads, f"all ({len(self._drops) + 1} drops "
                                          f"pending, over the limit)", None, -1, ())]
            else:
                self._drops.append(drop)
            if self._wake_queued:
                return
            self._wake_queued = True
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:   # busy: it applies the drops as it takes its next read
            with self._drops_lock:
                self._wake_queued = False

    # --- The reader thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            read = self._queue.get()
            if read is _WAKE:
                with self._drops_lock:
                    self._wake_queued = False
            self._apply_drops(self._reads_taken)   # those asked for before this read
            if read is None or self._stopping.is_set():
                self._apply_drops(None)   # the queued reads are dropped: all of them
                return
            if read is _WAKE:
                continue
            self._reads_taken += 1
            if type(read) is RemoteTimeRead:
                result = RemoteTimeResult(read, *self._serve_time(read))
            else:
                data, error = self._serve(read)
                cache = self._cache
                result = RemoteReadResult(read, data, error, *(
                    (cache.hits, cache.misses, cache.cached_bytes) if cache else (0, 0, 0)))
            try:
                self._done(result)
            except Exception:   # the loop's queue stayed full for a control call's timeout
                log.exception("%s: the answer to a remote read of offset %d of %s-%d was lost",
                              self.shard_id, read.offset, *read.key)

    def _apply_drops(self, after_reads_max: int | None) -> None:
        """Drop the cached chunks the loop asked for after at most ``after_reads_max``
        reads (None: every drop asked for), and log what went. Reader thread."""
        with self._drops_lock:
            count = len(self._drops) if after_reads_max is None else sum(
                1 for drop in self._drops if drop.after_reads <= after_reads_max)
            due, self._drops = self._drops[:count], self._drops[count:]
        for drop in due:
            try:
                if drop.topic_id is not None:
                    chunks, dropped_bytes = self._cache.discard_partition(drop.topic_id,
                                                                          drop.partition)
                elif drop.segment_ids:
                    chunks, dropped_bytes = 0, 0
                    for segment_id in drop.segment_ids:
                        dropped = self._cache.discard(segment_id)
                        chunks, dropped_bytes = chunks + dropped[0], dropped_bytes + dropped[1]
                else:
                    chunks, dropped_bytes = self._cache.clear()
            except StorageError as error:   # a file that cannot be deleted: the disk's fault
                log.error("%s: dropping the cached chunks of %s: %s", self.shard_id, drop.what,
                          error)
                continue
            if chunks:
                log.info("%s: dropped %d cached chunks (%d bytes) of %s from the tier cache; "
                         "%d bytes cached", self.shard_id, chunks, dropped_bytes, drop.what,
                         self._cache.cached_bytes)

    def _waited_too_long(self, read: RemoteRead | RemoteTimeRead,
                         what: str) -> BrokerError | None:
        """The error for a read that waited in the queue over REMOTE_FETCH_QUEUED_S_MAX."""
        waited_s = time.monotonic() - read.received_s
        if waited_s <= limits.REMOTE_FETCH_QUEUED_S_MAX:
            return None
        return RemoteStorageUnavailableError(
            f"{self.shard_id}: {what} of {read.key[0]}-{read.key[1]} waited {waited_s:.1f} s "
            f"for the reader, over {limits.REMOTE_FETCH_QUEUED_S_MAX} s; the store is slow: retry")

    def _serve(self, read: RemoteRead) -> tuple[bytes | memoryview, BrokerError | None]:
        """(data, None) or (b"", the error to answer with)."""
        what = f"remote fetch of offset {read.offset}"
        late = self._waited_too_long(read, what)
        if late is not None:
            self._log_failed(read, what, late)
            return b"", late
        try:
            return self.read(read.segment, read.offset, read.bytes_max, read.end_offset_max), None
        except BrokerError as error:
            self._log_failed(read, what, error)
            return b"", error
        except Exception as error:   # a bug or an unexpected OS error: answered, logged
            log.exception("%s: remote fetch of offset %d of %s", self.shard_id, read.offset,
                          read.segment.describe())
            return b"", InternalError(f"{self.shard_id}: remote fetch of offset {read.offset} of "
                                      f"{read.segment.describe()}: {type(error).__name__}: {error}")

    def _serve_time(self, read: RemoteTimeRead) -> tuple[TimeLookup | None, BrokerError | None]:
        """(the record found or None, None) or (None, the error to answer with)."""
        what = f"look-up of time {read.timestamp_ms} ms from offset {read.offset}"
        late = self._waited_too_long(read, what)
        if late is not None:
            self._log_failed(read, what, late)
            return None, late
        try:
            return self.find_time(read.segment, read.timestamp_ms, read.offset), None
        except BrokerError as error:
            self._log_failed(read, what, error)
            return None, error
        except Exception as error:   # a bug or an unexpected OS error: answered, logged
            log.exception("%s: %s in %s", self.shard_id, what, read.segment.describe())
            return None, InternalError(f"{self.shard_id}: {what} in {read.segment.describe()}: "
                                       f"{type(error).__name__}: {error}")

    def _log_failed(self, read: RemoteRead | RemoteTimeRead, what: str,
                    error: BrokerError) -> None:
        """A WARNING for a failed read, at most one per partition per
        REMOTE_FETCH_FAILED_LOG_INTERVAL_S (Kafka's RemoteLogReader logs each: here a
        store that is down would write one per consumer fetch). Reader thread."""
        name = f"{read.key[0]}-{read.key[1]}"
        self._failures_log.warning(
            name, "%s: %s of %s failed, reading %s from the store %s: %s: %s", self.shard_id,
            what, name, read.segment.describe(), self._store.url, error.code_name, error)

    def find_time(self, segment: RemoteSegment, timestamp_ms: int,
                  from_offset: int) -> TimeLookup | None:
        """The first record of ``segment`` at or after ``from_offset`` stamped at or after
        ``timestamp_ms``, or None (remote_time_lookup.py). Reader thread (or a test's,
        while no reader thread runs)."""
        try:
            return find_in_remote_segment(
                self._store, segment, timestamp_ms, from_offset, offset_index=self._index(segment),
                time_index=self._time_index(segment), cache=self._cache)
        except CorruptDataError:
            if self._cache is not None:   # as ``read``: a retry reads the store again
                self._cache.discard(segment.segment_id)
            self._indexes.pop(segment.segment_id, None)
            self._time_indexes.pop(segment.segment_id, None)
            raise

    def read(self, segment: RemoteSegment, offset: int, bytes_max: int,
             end_offset_max: int) -> bytes | memoryview:
        """Whole, checked entries of ``segment`` from the one holding ``offset`` (module
        docstring). Reader thread (or a test's, while no reader thread runs)."""
        try:
            data = read_remote_entries(self._store, segment, offset, bytes_max,
                                       offset_index=self._index(segment), cache=self._cache)
        except CorruptDataError:
            # Whatever was cached of it may be what is bad: a retry reads the store again.
            if self._cache is not None:
                self._cache.discard(segment.segment_id)
            self._indexes.pop(segment.segment_id, None)
            raise
        return entries_within(data, end_offset_max)

    def _index(self, segment: RemoteSegment) -> OffsetIndex:
        return _cached(self._indexes, segment, lambda: load_remote_index(self._store, segment))

    def _time_index(self, segment: RemoteSegment) -> TimeIndex:
        return _cached(self._time_indexes, segment,
                       lambda: load_remote_time_index(self._store, segment))


def _cached(indexes: OrderedDict, segment: RemoteSegment, load: Callable[[], object]):
    """``segment``'s entry of ``indexes`` (an LRU of REMOTE_INDEXES_CACHED_MAX), loaded
    if missing."""
    index = indexes.get(segment.segment_id)
    if index is not None:
        indexes.move_to_end(segment.segment_id)
        return index
    index = indexes[segment.segment_id] = load()
    if len(indexes) > limits.REMOTE_INDEXES_CACHED_MAX:
        indexes.popitem(last=False)
    return index


def entries_within(data: bytes | memoryview, end_offset_max: int,
                   bytes_max: int | None = None) -> bytes | memoryview:
    """The leading entries of ``data`` (whole, checked) that start before
    ``end_offset_max`` and, if ``bytes_max`` is given, end within it (the first entry
    always, as a read answers). Any thread."""
    end = 0
    for position, header, _ in scan_whole_entries(data, False):
        entry_end = position + header.entry_bytes
        if header.base_offset >= end_offset_max or \
                (bytes_max is not None and end and entry_end > bytes_max):
            break
        end = entry_end
    return data if end == len(data) else data[:end]
