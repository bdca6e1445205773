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

The reader keeps the REMOTE_INDEXES_CACHED_MAX most recently used remote
offset indexes in memory (each is read whole from the store), and the cache's
hit and miss counts travel back with every result, so the loop's ShardStats
(loop thread only) can show them.
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
    RemoteStorageUnavailableError, TooManyRequestsError, UnavailableError)
from plinth.format.log_entry import scan_whole_entries
from plinth.shards.offset_index import OffsetIndex
from plinth.shards.tier.chunk_cache import RemoteChunkCache
from plinth.shards.tier.remote_segment import RemoteSegment
from plinth.shards.tier.remote_store import CLOUD_SCHEMES, RemoteStore, open_remote_store
from plinth.shards.tier.remote_transfer import load_remote_index, read_remote_entries

log = logging.getLogger(__name__)

__all__ = ["RemoteFetcher", "RemoteRead", "RemoteReadResult", "answer_for_deleted",
           "partition_read", "remote_segment_for"]

CACHE_DIR_NAME = "tier-cache"   # under the shard's data dir; no partition's dir name


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
    ``submit``: the loop thread; everything else runs on the reader thread.
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
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

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
                                  retry_timeout_s=limits.REMOTE_FETCH_RETRY_TIMEOUT_S)
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

    def submit(self, read: RemoteRead) -> None:
        """Queue ``read`` (loop thread); TooManyRequestsError (retriable) if the queue is full."""
        try:
            self._queue.put_nowait(read)
        except queue.Full:
            raise TooManyRequestsError(
                f"{self.shard_id} has {limits.REMOTE_FETCHES_QUEUED_MAX} remote fetches queued, "
                f"the limit; offset {read.offset} of {read.key[0]}-{read.key[1]} is in "
                f"{read.segment.describe()}: retry") from None

    # --- The reader thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            read = self._queue.get()
            if read is None or self._stopping.is_set():
                return
            data, error = self._serve(read)
            cache = self._cache
            try:
                self._done(RemoteReadResult(read, data, error, *(
                    (cache.hits, cache.misses, cache.cached_bytes) if cache else (0, 0, 0))))
            except Exception:   # the loop's queue stayed full for a control call's timeout
                log.exception("%s: the answer to remote fetch %d was lost", self.shard_id,
                              read.request_id)

    def _serve(self, read: RemoteRead) -> tuple[bytes | memoryview, BrokerError | None]:
        """(data, None) or (b"", the error to answer with)."""
        waited_s = time.monotonic() - read.received_s
        if waited_s > limits.REMOTE_FETCH_QUEUED_S_MAX:
            return b"", RemoteStorageUnavailableError(
                f"{self.shard_id}: remote fetch of offset {read.offset} of {read.key[0]}-"
                f"{read.key[1]} waited {waited_s:.1f} s for the reader, over "
                f"{limits.REMOTE_FETCH_QUEUED_S_MAX} s; the store is slow: retry")
        try:
            return self.read(read.segment, read.offset, read.bytes_max, read.end_offset_max), None
        except BrokerError as error:
            return b"", error
        except Exception as error:   # a bug or an unexpected OS error: answered, logged
            log.exception("%s: remote fetch of offset %d of %s", self.shard_id, read.offset,
                          read.segment.describe())
            return b"", InternalError(f"{self.shard_id}: remote fetch of offset {read.offset} of "
                                      f"{read.segment.describe()}: {type(error).__name__}: {error}")

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
        return _entries_before(data, end_offset_max)

    def _index(self, segment: RemoteSegment) -> OffsetIndex:
        index = self._indexes.get(segment.segment_id)
        if index is not None:
            self._indexes.move_to_end(segment.segment_id)
            return index
        index = self._indexes[segment.segment_id] = load_remote_index(self._store, segment)
        if len(self._indexes) > limits.REMOTE_INDEXES_CACHED_MAX:
            self._indexes.popitem(last=False)
        return index


def _entries_before(data: bytes | memoryview, end_offset_max: int) -> bytes | memoryview:
    """The leading entries of ``data`` (whole, checked) that start before ``end_offset_max``."""
    end = 0
    for position, header, _ in scan_whole_entries(data, False):
        if header.base_offset >= end_offset_max:
            break
        end = position + header.entry_bytes
    return data if end == len(data) else data[:end]
