"""Remote log bytes cached on the local disk, in fixed chunks, bounded in bytes, least recently read dropped first.

One instance per shard, used by one thread (the one that reads remote
segments), every method. Reads of a remote segment's .log object
(remote_transfer.py) go through ``read``: the object is cut into aligned
chunks of ``chunk_bytes`` (REMOTE_CHUNK_BYTES), each fetched from the store
with one ranged get the first time it is needed and kept as a file:

    <cache dir>/<segment id>-<chunk number, 8 digits>      the chunk's bytes

A chunk is written to a temporary name and renamed, so a file under its real
name is whole; nothing is fsynced, and the directory is emptied when the cache
opens: a cache does not outlive its process, so a torn or stale file is never
read. The files together hold at most ``capacity_bytes`` (the shard's
``--tier-cache-bytes``): after each fetch the least recently read chunks are
deleted until they fit.

Read-ahead: when a read starts where the previous read of the same segment
ended (a consumer reading in order), a missing chunk is fetched together with
up to REMOTE_READAHEAD_CHUNKS - 1 chunks after it, in one ranged get, so the
next reads hit the cache. Nothing runs in the background.

The cache checks nothing: the reader checks every entry's CRC after assembling
a range, and on a CRC error drops the segment's chunks (``discard``), so that
a retry fetches them again from the store.

Chunks are keyed by segment id, random for each upload (remote_segment.py): a
segment deleted from the store never comes back under its id, and a topic
created again under a deleted one's name has other segments. Each cached
segment also remembers its topic id and partition, so that the chunks of a
partition that is deleted or leaves the shard can be dropped
(``discard_partition``: by topic id, never by name, so a topic created again
under the same name keeps its chunks). The reader drops them when the loop asks
(remote_fetcher.py): a deleted topic's records, or remote segments retention
deleted, do not stay readable on the local disk until eviction.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from plinth import limits
from plinth.errors import StorageError
from plinth.shards.tier.remote_segment import LOG, RemoteSegment
from plinth.shards.tier.remote_store import RemoteStore

__all__ = ["RemoteChunkCache"]

CHUNK_NUMBER_DIGITS = 8


@dataclass
class _CachedSegment:
    """Whose a segment with chunks in the cache is, and which of its chunks are there."""

    topic_id: str
    partition: int
    numbers: set[int] = field(default_factory=set)


class RemoteChunkCache:
    """Chunks of remote .log objects as local files, LRU, bounded. One thread only."""

    def __init__(self, directory: Path, capacity_bytes: int, *,
                 chunk_bytes: int = limits.REMOTE_CHUNK_BYTES,
                 readahead_chunks: int = limits.REMOTE_READAHEAD_CHUNKS):
        if chunk_bytes < 1 or readahead_chunks < 1 or capacity_bytes < 0:
            raise AssertionError(f"chunk cache of {capacity_bytes} bytes, chunks of {chunk_bytes} "
                                 f"bytes, read-ahead {readahead_chunks}: sizes must be positive")
        self.directory = Path(directory)
        self.capacity_bytes = capacity_bytes
        self.chunk_bytes = chunk_bytes
        self.readahead_chunks = readahead_chunks
        self._chunks: OrderedDict[tuple[str, int], int] = OrderedDict()   # -> size, LRU first
        self._segments: dict[str, _CachedSegment] = {}   # segment id -> its chunks, while any
        self._cached_bytes = 0
        self._read_ends: dict[str, int] = {}   # segment id -> where its last read ended
        self.hits = 0
        self.misses = 0
        shutil.rmtree(self.directory, ignore_errors=True)   # nothing survives a restart
        try:
            self.directory.mkdir(parents=True)
        except OSError as error:
            raise StorageError(f"cannot create the tier cache {self.directory}: {error}") from error

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def read(self, store: RemoteStore, segment: RemoteSegment, position: int,
             length: int) -> bytes | memoryview:
        """``length`` bytes of the segment's .log object from ``position`` (fewer where
        it ends), from cached chunks, fetching the missing ones."""
        end = min(position + length, segment.size_bytes)
        if position < 0 or position >= end:
            raise AssertionError(f"{segment.describe()}: read of {length} bytes at {position}, "
                                 f"outside its {segment.size_bytes} bytes")
        sequential = self._read_ends.get(segment.segment_id) == position
        first, last = position // self.chunk_bytes, (end - 1) // self.chunk_bytes
        pieces, number = [], first   # contiguous buffers, from chunk ``first`` on
        while number <= last:
            key = (segment.segment_id, number)
            if key in self._chunks:
                pieces.append(self._cached(key))
                number += 1
                continue
            # Every missing chunk of this read in one request, and read-ahead if in order.
            wanted = max(last - number + 1, self.readahead_chunks if sequential else 1)
            count = self._missing_run(segment, number, wanted)
            pieces.append(self._fetch(store, segment, number, count))
            number += count
        self._read_ends[segment.segment_id] = end
        if len(self._read_ends) > limits.REMOTE_CACHE_SEGMENTS_TRACKED_MAX:
            self._read_ends.pop(next(iter(self._read_ends)))
        start = position - first * self.chunk_bytes
        if len(pieces) == 1:
            return memoryview(pieces[0])[start:start + end - position]   # no copy
        return b"".join(pieces)[start:start + end - position]

    def discard(self, segment_id: str) -> tuple[int, int]:
        """Drop every cached chunk of a segment (a CRC error in it, or it was deleted),
        files and accounting; (chunks, bytes) dropped."""
        self._read_ends.pop(segment_id, None)
        cached = self._segments.get(segment_id)
        if cached is None:
            return 0, 0
        chunks, bytes_before = len(cached.numbers), self._cached_bytes
        for number in sorted(cached.numbers):
            self._drop((segment_id, number))
        return chunks, bytes_before - self._cached_bytes

    def discard_partition(self, topic_id: str, partition: int) -> tuple[int, int]:
        """Drop every cached chunk of the partition's segments (the topic with this id
        was deleted, or the partition left the shard); (chunks, bytes) dropped."""
        chunks, bytes_dropped = 0, 0
        for segment_id in [segment_id for segment_id, cached in self._segments.items()
                           if (cached.topic_id, cached.partition) == (topic_id, partition)]:
            dropped = self.discard(segment_id)
            chunks, bytes_dropped = chunks + dropped[0], bytes_dropped + dropped[1]
        return chunks, bytes_dropped

    def clear(self) -> tuple[int, int]:
        """Drop every cached chunk; (chunks, bytes) dropped."""
        chunks, bytes_dropped = len(self._chunks), self._cached_bytes
        for key in list(self._chunks):
            self._drop(key)
        self._read_ends.clear()
        return chunks, bytes_dropped

    def _cached(self, key: tuple[str, int]) -> bytes:
        self._chunks.move_to_end(key)
        try:
            data = self._path(key).read_bytes()
        except OSError as error:
            raise StorageError(f"cannot read cached chunk {self._path(key)}: {error}") from error
        self.hits += 1
        return data

    def _fetch(self, store: RemoteStore, segment: RemoteSegment, number: int,
               count: int) -> bytes | memoryview:
        """Chunks ``number`` .. ``number + count - 1`` in one ranged get, cached."""
        self.misses += 1
        start = number * self.chunk_bytes
        fetched = store.get_range(segment.object_key(LOG), start,
                                  min(count * self.chunk_bytes, segment.size_bytes - start))
        for index in range(count):
            self._store_chunk(segment, number + index,
                              fetched[index * self.chunk_bytes:(index + 1) * self.chunk_bytes])
        return fetched

    def _missing_run(self, segment: RemoteSegment, number: int, count_max: int) -> int:
        """How many chunks from ``number`` (missing) on are missing, up to ``count_max``."""
        chunks_in_segment = -(-segment.size_bytes // self.chunk_bytes)
        count = 1
        while (count < count_max and number + count < chunks_in_segment
               and (segment.segment_id, number + count) not in self._chunks):
            count += 1
        return count

    def _store_chunk(self, segment: RemoteSegment, number: int,
                     data: bytes | memoryview) -> None:
        if not data or len(data) > self.capacity_bytes:
            return
        key = (segment.segment_id, number)
        path = self._path(key)
        temporary = path.with_name(path.name + ".tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except OSError as error:
            raise StorageError(f"cannot write cached chunk {path}: {error}") from error
        self._chunks[key] = len(data)
        self._cached_bytes += len(data)
        cached = self._segments.get(segment.segment_id)
        if cached is None:
            cached = self._segments[segment.segment_id] = _CachedSegment(segment.topic_id,
                                                                         segment.partition)
        cached.numbers.add(number)
        while self._cached_bytes > self.capacity_bytes:
            self._drop(next(iter(self._chunks)))

    def _drop(self, key: tuple[str, int]) -> None:
        self._cached_bytes -= self._chunks.pop(key)
        cached = self._segments[key[0]]
        cached.numbers.discard(key[1])
        if not cached.numbers:
            del self._segments[key[0]]
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"cannot delete cached chunk {self._path(key)}: {error}") from error

    def _path(self, key: tuple[str, int]) -> Path:
        return self.directory / f"{key[0]}-{key[1]:0{CHUNK_NUMBER_DIGITS}d}"

    def __repr__(self) -> str:
        return (f"RemoteChunkCache({self.directory}, {self._cached_bytes}/{self.capacity_bytes} "
                f"bytes in {len(self._chunks)} chunks, {self.hits} hits, {self.misses} misses)")
