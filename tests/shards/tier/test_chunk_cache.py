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
