"""Remote log bytes cached on disk in chunks (shards/tier/chunk_cache.py)."""

from __future__ import annotations

import os
import random

import pytest

from plinth.errors import CorruptDataError
from plinth.format.log_entry import build_entry_header
from plinth.shards.tier.chunk_cache import RemoteChunkCache
from plinth.shards.tier.remote_segment import LOG, ObjectDigest, RemoteSegment, new_segment_id
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import read_remote_range


class CountingStore:
    """The memory store, counting its ranged gets (the cache's only calls)."""

    def __init__(self):
        self.store = open_remote_store("memory://")
        self.url = self.store.url
        self.ranged_gets = 0

    def put(self, key, data, **kwargs):
        self.store.put(key, data, **kwargs)

    def get_range(self, key, start, length):
        self.ranged_gets += 1
        return self.store.get_range(key, start, length)


def a_segment(store, data):
    segment = RemoteSegment(topic="t", topic_id="5c0e3b6a91d24f7e8a1b2c3d4e5f6071", partition=0,
                            segment_id=new_segment_id(), base_offset=0,
                            end_offset=10_000, max_timestamp_ms=0, leader_epoch=0, created_ms=0,
                            objects={"log": ObjectDigest(len(data), 0)})
    store.put(segment.object_key(LOG), data)
    return segment


@pytest.fixture
def store():
    return CountingStore()


def test_reads_through_the_cache_are_the_objects_bytes_at_any_range(store, tmp_path):
    data = os.urandom(50_000)
    segment = a_segment(store, data)
    cache = RemoteChunkCache(tmp_path / "cache", 20_000, chunk_bytes=1000, readahead_chunks=3)
    rng = random.Random(1)
    for _ in range(300):
        position = rng.randrange(len(data))
        length = rng.randrange(1, 5000)
        assert cache.read(store, segment, position, length) == data[position:position + length]
        # and the files on disk never hold more than the capacity
        assert cache.cached_bytes <= 20_000
        assert sum(path.stat().st_size for path in (tmp_path / "cache").iterdir()) == \
            cache.cached_bytes


def test_a_read_fetches_its_missing_chunks_in_one_request_and_again_from_disk_with_none(store, tmp_path):
    segment = a_segment(store, os.urandom(10_000))
    cache = RemoteChunkCache(tmp_path / "cache", 100_000, chunk_bytes=1000, readahead_chunks=1)
    first = cache.read(store, segment, 500, 2000)      # chunks 0, 1, 2: one request
    assert store.ranged_gets == 1
    assert cache.read(store, segment, 500, 2000) == first
    assert store.ranged_gets == 1 and cache.hits == 3


def test_a_consumer_reading_in_order_gets_the_read_ahead_in_one_request(store, tmp_path):
    data = os.urandom(40_000)
    segment = a_segment(store, data)
    cache = RemoteChunkCache(tmp_path / "cache", 100_000, chunk_bytes=1000, readahead_chunks=4)
    position, read = 0, b""
    while position < len(data):
        read += cache.read(store, segment, position, 500)
        position += 500
    assert read == data
    # 40 chunks: the first read fetches one, then every miss fetches four
    assert store.ranged_gets == 1 + 39 // 4 + (1 if 39 % 4 else 0)


def test_the_least_recently_read_chunks_are_dropped_first(store, tmp_path):
    segment = a_segment(store, os.urandom(10_000))
    cache = RemoteChunkCache(tmp_path / "cache", 3000, chunk_bytes=1000, readahead_chunks=1)
    for number in (0, 1, 2):
        cache.read(store, segment, number * 1000, 10)
    cache.read(store, segment, 0, 10)          # chunk 0 is now the most recent
    cache.read(store, segment, 5000, 10)       # chunk 5 pushes out chunk 1
    gets = store.ranged_gets
    cache.read(store, segment, 0, 10)
    cache.read(store, segment, 2000, 10)
    assert store.ranged_gets == gets
    cache.read(store, segment, 1000, 10)
    assert store.ranged_gets == gets + 1


def test_a_crc_error_read_through_the_cache_drops_the_segments_chunks(store, tmp_path):
    # Given a segment of valid entries, and a cache holding a copy with one flipped byte
    batch = os.urandom(3000)
    entries = b"".join(build_entry_header(i, 0, 1, batch) + batch for i in range(5))
    segment = a_segment(store, entries)
    segment = RemoteSegment(**{**segment.__dict__, "end_offset": 5})
    cache = RemoteChunkCache(tmp_path / "cache", 100_000, chunk_bytes=4096)
    flipped = bytearray(entries)
    flipped[100] ^= 1
    store.put(segment.object_key(LOG), bytes(flipped))
    with pytest.raises(CorruptDataError, match="partition t/0"):
        read_remote_range(store, segment, 0, len(entries), offset=0, cache=cache)
    # Then its chunks are gone, and once the object is good again the read is good
    assert cache.cached_bytes == 0
    store.put(segment.object_key(LOG), entries)
    assert read_remote_range(store, segment, 0, len(entries), offset=0, cache=cache) == entries


def test_a_new_cache_starts_empty_whatever_a_previous_process_left(store, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stale-00000000").write_bytes(b"x" * 100)
    cache = RemoteChunkCache(tmp_path / "cache", 1000)
    assert list((tmp_path / "cache").iterdir()) == [] and cache.cached_bytes == 0


def a_segment_of(store, data, topic_id, partition):
    segment = RemoteSegment(**{**a_segment(store, data).__dict__, "topic_id": topic_id,
                               "partition": partition})
    store.put(segment.object_key(LOG), data)
    return segment


def files_of(directory, segment):
    return sorted(path.name for path in directory.iterdir()
                  if path.name.startswith(segment.segment_id))


def test_discarding_a_partition_drops_its_segments_chunk_files_and_bytes_and_nothing_else(
        store, tmp_path):
    # Given a cache holding chunks of two segments of partition 0 of a topic, and of
    # partition 1 of it, and of partition 0 of the topic created again under its name
    deleted_id, new_id = "5c0e3b6a91d24f7e8a1b2c3d4e5f6071", "0123456789abcdef0123456789abcdef"
    doomed = [a_segment_of(store, os.urandom(3000), deleted_id, 0) for _ in range(2)]
    others = [a_segment_of(store, os.urandom(3000), deleted_id, 1),
              a_segment_of(store, os.urandom(3000), new_id, 0)]
    directory = tmp_path / "cache"
    cache = RemoteChunkCache(directory, 100_000, chunk_bytes=1000, readahead_chunks=1)
    for segment in doomed + others:
        cache.read(store, segment, 0, 3000)
    assert cache.cached_bytes == 12_000
    # When partition 0 of the deleted topic id is discarded
    dropped = cache.discard_partition(deleted_id, 0)
    # Then its 6 chunks are gone, files and bytes, and the others' are all there
    assert dropped == (6, 6000)
    assert all(files_of(directory, segment) == [] for segment in doomed)
    assert all(len(files_of(directory, segment)) == 3 for segment in others)
    assert cache.cached_bytes == 6000 == sum(p.stat().st_size for p in directory.iterdir())
    # And the others are still read from the cache, the discarded ones from the store again
    gets = store.ranged_gets
    for segment in others:
        cache.read(store, segment, 0, 3000)
    assert store.ranged_gets == gets
    cache.read(store, doomed[0], 0, 3000)
    assert store.ranged_gets == gets + 1
    # And discarding it again, or a partition never cached, drops nothing
    assert cache.discard_partition(deleted_id, 1) == (3, 3000)
    assert cache.discard_partition("f" * 32, 0) == (0, 0)


def test_discarding_a_segment_drops_exactly_its_chunks_and_says_how_many(store, tmp_path):
    # Given a cache holding 3 chunks of one segment and 2 of another of the same partition
    deleted, kept = a_segment(store, os.urandom(3000)), a_segment(store, os.urandom(2000))
    directory = tmp_path / "cache"
    cache = RemoteChunkCache(directory, 100_000, chunk_bytes=1000, readahead_chunks=1)
    cache.read(store, deleted, 0, 3000)
    cache.read(store, kept, 0, 2000)
    # When the first is discarded (retention deleted it)
    # Then its 3 chunks and 3000 bytes go, files included, and the other's stay
    assert cache.discard(deleted.segment_id) == (3, 3000)
    assert files_of(directory, deleted) == [] and len(files_of(directory, kept)) == 2
    assert cache.cached_bytes == 2000
    assert cache.discard(deleted.segment_id) == (0, 0)


def test_chunks_evicted_one_by_one_are_forgotten_by_partition_too(store, tmp_path):
    # Given a cache of 3 chunks that read 5 chunks of a segment (2 evicted)
    segment = a_segment(store, os.urandom(5000))
    cache = RemoteChunkCache(tmp_path / "cache", 3000, chunk_bytes=1000, readahead_chunks=1)
    for number in range(5):
        cache.read(store, segment, number * 1000, 10)
    # When its partition is discarded, then the 3 chunks still cached are what goes
    assert cache.discard_partition(segment.topic_id, segment.partition) == (3, 3000)
    assert cache.cached_bytes == 0 and list((tmp_path / "cache").iterdir()) == []


def test_clearing_the_cache_drops_every_chunk(store, tmp_path):
    cache = RemoteChunkCache(tmp_path / "cache", 100_000, chunk_bytes=1000, readahead_chunks=1)
    for _ in range(3):
        cache.read(store, a_segment(store, os.urandom(2500)), 0, 2500)
    assert cache.clear() == (9, 7500)
    assert cache.cached_bytes == 0 and list((tmp_path / "cache").iterdir()) == []
