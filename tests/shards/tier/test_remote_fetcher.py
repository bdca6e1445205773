"""Fetches below the local log start, served from object storage (shards/tier/remote_fetcher.py).

A real ShardServer with a tier URL and real sockets (tiered_shard.py); the
segments are uploaded by hand with remote_transfer.upload_segment, published
to the partition and deleted locally, as the uploader will. Stores: file:// and
moto's S3 server on 127.0.0.1.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

from plinth import limits
from plinth.control.metrics import BrokerCollector
from plinth.errors import (CorruptDataError, OffsetOutOfRangeError, RemoteObjectNotFoundError,
                           TooManyRequestsError, UnavailableError)
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig
from plinth.shards.tier.chunk_cache import RemoteChunkCache
from plinth.shards.tier.remote_fetcher import (
    RemoteFetcher, RemoteRead, answer_for_deleted, partition_read)
from plinth.shards.tier.remote_log_view import RemoteLogView
from plinth.shards.tier.remote_segment import LOG, ObjectDigest, RemoteSegment, new_segment_id
from plinth.shards.tier.remote_store import open_remote_store
from tests.moto_s3 import MotoS3
from tests.shards.tier.tiered_shard import (
    PARTITION, TOPIC, TOPIC_ID, TieredShard, record_value, records_of, tiered)
from tests.support import wait_until



def test_a_fetch_from_offset_zero_reads_every_record_byte_for_byte_through_the_remote_and_local_segments(
        tier_url, shard_at, tmp_path):
    # Given a partition whose first segments are only in object storage
    shard = shard_at(tier_url)
    end_offset, local_start = tiered(shard, tier_url, tmp_path)
    assert local_start > 30
    # When a consumer reads from offset 0 to the end, fetch after fetch
    values = shard.read_all(0, end_offset)
    # Then it gets every record, byte for byte, in order
    assert list(values) == list(range(end_offset))
    assert all(value == record_value(offset) for offset, value in values.items())
    # And the partition's log start is 0 wherever a client is told it
    reply, _ = shard.fetch(0)
    assert reply.log_start_offset == 0
    assert shard.list_offsets().start_offset == 0
    stats = shard.stats()
    assert stats["logs"][("t", 0)]["start_offset"] == 0
    assert stats["logs"][("t", 0)]["local_start_offset"] == local_start
    # And the remote fetches are counted, with their bytes and latencies
    remote = stats["remote_fetch"]
    assert remote["fetches"] >= 2 and remote["errors"] == 0 and remote["bytes"] > 0
    assert sum(stats["latency_counts"]["remote_fetch"]) == remote["fetches"]


def test_a_remote_fetch_stops_at_the_end_of_its_segment_and_the_consumer_asks_again(
        tier_url, shard_at, tmp_path):
    # Given a partition whose first segments are only in object storage
    shard = shard_at(tier_url)
    tiered(shard, tier_url, tmp_path)
    first = shard.on_loop(lambda part: part.remote.segments[0])
    # When a fetch asks for far more bytes than the first segment holds
    reply, payload = shard.fetch(0, bytes_max=1 << 20)
    # Then it gets that segment's records, and nothing of the next one
    offsets = [record.offset for record in records_of(payload, 0)]
    assert offsets == list(range(first.base_offset, first.end_offset))


def test_in_order_reads_of_a_remote_segment_fetch_it_once_and_then_hit_the_cache(
        s3_url, shard_at, tmp_path):
    # Given a partition whose first segments are only in a cloud store
    tier_url = s3_url
    shard = shard_at(tier_url)
    tiered(shard, tier_url, tmp_path)
    segment = shard.on_loop(lambda part: part.remote.segments[0])
    # When a consumer reads the first segment one entry per fetch
    values = shard.read_all(0, segment.end_offset, bytes_max=1)
    assert list(values) == list(range(segment.end_offset))
    # Then one ranged get fetched it, and every later read was a hit
    fetches = segment.end_offset // 3
    remote = shard.stats()["remote_fetch"]
    assert remote["fetches"] == fetches
    assert remote["cache_misses"] == 1
    assert remote["cache_hits"] == fetches - 1
    assert remote["cache_bytes"] == segment.size_bytes


def test_a_file_store_is_read_directly_without_the_chunk_cache(shard_at, tmp_path):
    # Given a partition whose first segments are only in a file:// store (a local disk)
    url = f"file://{tmp_path}/store"
    shard = shard_at(url)
    end_offset, local_start = tiered(shard, url, tmp_path)
    # When a consumer reads them
    values = shard.read_all(0, local_start, bytes_max=1)
    assert list(values) == list(range(local_start))
    # Then nothing went through a cache: no misses, no hits, no cached bytes
    remote = shard.stats()["remote_fetch"]
    assert remote["fetches"] > 0
    assert (remote["cache_misses"], remote["cache_hits"], remote["cache_bytes"]) == (0, 0, 0)


def test_an_offset_below_the_remote_log_start_is_out_of_range_with_the_valid_offsets(
        shard_at, tmp_path):
    # Given a partition whose first segment was deleted unuploaded, the next ones uploaded
    url = f"file://{tmp_path}/store"
    shard = shard_at(url)
    end_offset, _ = tiered(shard, url, tmp_path, upload=slice(1, None))
    remote_start = shard.on_loop(lambda part: part.remote.log_start_offset)
    assert remote_start > 0
    # When a consumer fetches offset 0
    reply, _ = shard.fetch(0)
    # Then it is out of range, and told the partition's offsets
    assert isinstance(reply.error, OffsetOutOfRangeError)
    assert f"valid offsets are {remote_start} to {end_offset}" in str(reply.error)
    # And the remote start is the log start every client sees
    assert shard.list_offsets().start_offset == remote_start


def test_an_offset_in_a_hole_between_the_remote_end_and_the_local_start_is_out_of_range_naming_both(
        shard_at, tmp_path):
    # Given a partition with its first 5 segments uploaded, and all but the last 3 of its
    # segments deleted locally: the ones between are nowhere
    url = f"file://{tmp_path}/store"
    shard = shard_at(url)
    _, local_start = tiered(shard, url, tmp_path, upload=slice(0, 5))
    remote_end, end_offset = shard.on_loop(lambda part: (part.remote.end_offset,
                                                         part.log.end_offset))
    assert remote_end < local_start
    # When a consumer fetches an offset in the hole
    reply, _ = shard.fetch(remote_end)
    # Then it is out of range, naming the remote and the local ranges
    assert isinstance(reply.error, OffsetOutOfRangeError)
    assert f"object storage holds [0, {remote_end}) with 5 segments" in str(reply.error)
    assert f"the local log [{local_start}, {end_offset}]" in str(reply.error)


def test_a_flipped_byte_in_a_remote_log_object_is_corrupt_data_naming_the_offset_and_a_retry_reads_the_store_again(
        shard_at, tmp_path):
    # Given a partition whose first segment is only in a file:// store
    url = f"file://{tmp_path}/store"
    shard = shard_at(url)
    tiered(shard, url, tmp_path)
    segment = shard.on_loop(lambda part: part.remote.segments[0])
    log_object = tmp_path / "store" / segment.object_key(LOG)
    good = log_object.read_bytes()
    # When a byte of its first entry's records flips in the store, and a consumer fetches
    # offset 0
    flipped = bytearray(good)
    flipped[100] ^= 0x01
    log_object.write_bytes(bytes(flipped))
    reply, payload = shard.fetch(0)
    # Then it gets corruptData naming the partition, the offset and the object, no records
    assert isinstance(reply.error, CorruptDataError), reply
    assert "partition t/0, offset 0" in str(reply.error)
    assert segment.object_key(LOG) in str(reply.error)
    assert payload == b""
    # And once the object is whole again, the same fetch reads it from the store (the
    # reader dropped the chunk it had cached)
    log_object.write_bytes(good)
    reply, payload = shard.fetch(0)
    assert reply.error is None
    assert [r.value for r in records_of(payload, 0)] == [
        record_value(offset) for offset in range(segment.end_offset)]
    assert shard.stats()["remote_fetch"]["errors"] == 1


def test_a_store_that_is_down_answers_remote_fetches_unavailable_quickly_and_serves_them_again_once_back(
        shard_at, tmp_path, monkeypatch):
    # Given a partition whose first segments are only in an S3 server of its own
    moto = MotoS3("plinth-outage").start()
    try:
        for key, value in moto.env.items():
            monkeypatch.setenv(key, value)
        url = moto.url()
        shard = shard_at(url)
        end_offset, local_start = tiered(shard, url, tmp_path)
        # When the S3 server stops
        moto.stop()
        started_s = time.monotonic()
        reply, payload = shard.fetch(0)
        # Then a remote fetch is answered unavailable (retriable), with no data, within
        # the reader's store's bounds
        assert isinstance(reply.error, UnavailableError), reply
        assert "object storage unavailable" in str(reply.error)
        assert payload == b""
        assert time.monotonic() - started_s < (limits.REMOTE_FETCH_REQUEST_TIMEOUT_S
                                               + limits.REMOTE_FETCH_RETRY_TIMEOUT_S)
        # And local fetches go on
        assert shard.read_all(local_start, end_offset)[local_start] == record_value(local_start)
        # And once it is back, the remote fetch reads every record
        moto.start()
        assert shard.read_all(0, local_start) == {
            offset: record_value(offset) for offset in range(local_start)}
        assert shard.stats()["remote_fetch"]["errors"] == 1
    finally:
        moto.stop()


def test_a_store_that_never_answers_holds_up_no_local_fetch_and_a_full_queue_is_refused_at_once(
        shard_at, tmp_path, monkeypatch, black_hole, real_remote_fetch_wait):
    # Given a partition uploaded to a file:// store, whose shard reads it from an S3
    # endpoint that accepts connections and never answers (each call given 3 s)
    monkeypatch.setattr(limits, "REMOTE_FETCH_REQUEST_TIMEOUT_S", 3.0)
    monkeypatch.setattr(limits, "REMOTE_FETCH_CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(limits, "REMOTE_FETCH_RETRY_TIMEOUT_S", 1.0)
    monkeypatch.setattr(limits, "REMOTE_FETCH_QUEUED_S_MAX", 0.5)
    for key, value in MotoS3().env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{black_hole}")
    shard = shard_at("s3://plinth-tier/hangs")
    end_offset, local_start = tiered(shard, f"file://{tmp_path}/store", tmp_path)
    assert local_start > limits.REMOTE_FETCHES_QUEUED_MAX + 2
    # When a consumer fetches a remote offset, fetches of more remote offsets than the
    # reader queues follow it (each offset its own read), and then a local fetch
    started_s = time.monotonic()
    first = shard.send_fetch(0)
    queued = [shard.send_fetch(offset) for offset in range(1, limits.REMOTE_FETCHES_QUEUED_MAX + 3)]
    local = shard.send_fetch(local_start)
    # Then the fetches beyond the queue are refused at once, retriable, and the local fetch
    # is answered while the first one still waits for the store
    refused, answered_local = [], None
    while answered_local is None:
        reply, payload = shard.reply()
        if reply.request_id == local:
            answered_local = (reply, payload, time.monotonic() - started_s)
        else:
            assert reply.request_id in queued and isinstance(reply.error, TooManyRequestsError), \
                f"reply to {reply.request_id} before the local fetch's: {reply}"
            refused.append(reply.request_id)
    assert len(refused) >= 2
    reply, payload, local_s = answered_local
    assert reply.error is None and records_of(payload, local_start)[0].value == record_value(
        local_start)
    assert local_s < 1.5, f"the local fetch took {local_s:.1f} s: it waited for the store"
    # And the remote fetches are all answered with no records once their wait ends, not
    # by the store's timeout (their reads go on)
    remote = {}
    while len(remote) + len(refused) < 1 + len(queued):
        reply, payload = shard.reply()
        remote[reply.request_id] = reply
        assert reply.error is None and payload == b"", reply
        assert reply.high_watermark == end_offset and reply.log_start_offset == 0, reply
    remote_s = time.monotonic() - started_s
    assert remote_s < limits.REMOTE_FETCH_WAIT_MS_MAX / 1000 + 1.0, remote_s
    assert first in remote
    # And when the reads fail (the first by the store's timeout, the queued ones without
    # reading: they waited too long), nobody is answered a second time
    wait_until(lambda: shard.stats()["remote_fetch"]["errors"] == len(refused) + len(remote),
               timeout_s=30, explain=lambda: shard.stats()["remote_fetch"])
    assert not shard.socket.poll(500), "a second reply to a fetch answered already"


def first_remote_segment(tmp_path) -> tuple[str, RemoteSegment]:
    """(url, segment): the first remote segment of a tiered partition, in a file:// store
    under ``tmp_path``; the shard that wrote it is closed."""
    url = f"file://{tmp_path}/store"
    shard = TieredShard(tmp_path / "shard", url)
    try:
        tiered(shard, url, tmp_path)
        return url, shard.on_loop(lambda part: part.remote.segments[0])
    finally:
        shard.close()


def test_a_read_never_hands_out_an_entry_at_or_past_the_high_watermark_it_was_given(tmp_path):
    # Given a remote segment in a file:// store, and a reader on it (no thread)
    url, segment = first_remote_segment(tmp_path)
    fetcher = RemoteFetcher("test", open_remote_store(url),
                            RemoteChunkCache(tmp_path / "cache", limits.TIER_CACHE_BYTES_MIN),
                            done=None)
    # When it reads the segment up to an offset in its second entry
    data = fetcher.read(segment, 0, 1 << 20, end_offset_max=4)
    # Then it gets the entries starting before it (the second whole), none after
    assert [r.offset for r in records_of(data, 0)] == list(range(6))
    # And an end at the segment's end gives the whole segment
    data = fetcher.read(segment, 0, 1 << 20, end_offset_max=segment.end_offset)
    assert [r.offset for r in records_of(data, 0)] == list(range(segment.end_offset))


class ControllerWithOneShard:
    """A ControllerHandle's two metric calls, answering with one real shard's stats."""

    def __init__(self, shard: TieredShard):
        self._shard = shard

    def shard_stats(self) -> dict:
        return {"shard-tier": self._shard.stats()}

    def partition_replication(self) -> list:
        return []


def test_the_remote_fetch_counters_and_both_log_starts_are_prometheus_metrics(
        s3_url, shard_at, tmp_path):
    # Given a partition read from offset 0 through its remote segments, in a cloud store
    url = s3_url
    shard = shard_at(url)
    end_offset, local_start = tiered(shard, url, tmp_path)
    shard.read_all(0, end_offset)
    stats = shard.stats()["remote_fetch"]
    # When the metrics endpoint collects
    collected = [s for family in BrokerCollector(ControllerWithOneShard(shard)).collect()
                 for s in family.samples]
    samples = {(s.name, s.labels.get("shard")): s.value for s in collected
               if s.labels.get("kind") is None}
    # Then it shows the shard's remote fetches, their bytes, errors and cache, and both starts
    assert samples[("plinth_remote_fetches_total", "shard-tier")] == stats["fetches"] > 0
    assert samples[("plinth_remote_fetch_bytes_total", "shard-tier")] == stats["bytes"] > 0
    assert samples[("plinth_remote_fetch_errors_total", "shard-tier")] == 0
    assert samples[("plinth_remote_time_lookups_total", "shard-tier")] == stats["time_lookups"]
    assert samples[("plinth_tier_cache_misses_total", "shard-tier")] == stats["cache_misses"] > 0
    assert samples[("plinth_tier_cache_hits_total", "shard-tier")] == stats["cache_hits"]
    assert samples[("plinth_tier_cache_bytes", "shard-tier")] == stats["cache_bytes"] > 0
    assert samples[("plinth_partition_log_start_offset", "shard-tier")] == 0
    assert samples[("plinth_partition_local_log_start_offset", "shard-tier")] == local_start
    assert [s.value for s in collected if s.name == "plinth_request_latency_seconds_count"
            and s.labels["kind"] == "remote_fetch"] == [stats["fetches"]]


def test_a_segment_retention_deleted_while_it_was_read_is_answered_retriable(tmp_path):
    # Given a partition whose view held a remote segment when a read of it was queued,
    # and the reader finding its objects gone
    part = Partition.open(tmp_path / "t-0", "t", 0, LogConfig(), initial_offset=20)
    try:
        first, second = (remote_segment(base) for base in (0, 10))
        part.remote = RemoteLogView.of([first, second])
        read = RemoteRead([b"router", b"client"], 7, ("t", 0), first, 3, 1 << 20, 20, 0.0)
        gone = RemoteObjectNotFoundError(f"{first.object_key(LOG)} not found")
        # When the view still holds it, the store lost it: the error stays as it is
        assert answer_for_deleted(gone, read, part) is gone
        # When retention took it out of the view (then deleted its objects)
        part.remote = RemoteLogView.of([second])
        answer = answer_for_deleted(gone, read, part)
        # Then the consumer is told to retry (its retry finds the new log start, 10)
        assert type(answer) is UnavailableError
        assert "offset 3 of t-0" in str(answer) and "now starts at 10" in str(answer)
        # And any other error is answered as it is, and so is one of a deleted partition
        other = CorruptDataError("bad entry")
        assert answer_for_deleted(other, read, part) is other
        assert type(answer_for_deleted(gone, read, None)) is UnavailableError
    finally:
        part.log.close()


def test_a_read_of_a_partition_deleted_and_created_again_answers_for_neither(tmp_path):
    # Given a read queued for a segment of t-0, and t-0 open under that topic id
    part = Partition.open(tmp_path / "t-0", "t", 0, LogConfig())
    part.set_topic_id(TOPIC_ID)
    other = Partition.open(tmp_path / "t-0-again", "t", 0, LogConfig())
    other.set_topic_id("0" * 31 + "1")
    try:
        read = RemoteRead([b"router", b"client"], 7, ("t", 0), remote_segment(0), 3, 1 << 20,
                          10, 0.0)
        # Then it answers for that partition
        assert partition_read(read, {("t", 0): part}) is part
        # And not once t was deleted, nor once t was created again (another id) meanwhile
        assert partition_read(read, {}) is None
        assert partition_read(read, {("t", 0): other}) is None
    finally:
        part.log.close()
        other.log.close()


def test_a_file_store_whose_directory_is_moved_away_answers_unavailable_until_it_is_back(
        shard_at, tmp_path):
    # Given a partition whose first segments are only in a file:// store
    url = f"file://{tmp_path}/store"
    shard = shard_at(url)
    end_offset, local_start = tiered(shard, url, tmp_path)
    # When the store's directory is moved away (as a network share that is unmounted)
    (tmp_path / "store").rename(tmp_path / "moved")
    reply, payload = shard.fetch(0)
    # Then a remote fetch is the retriable "unavailable" naming the directory, as an S3
    # outage is, not a storage error a consumer gives up on
    assert isinstance(reply.error, UnavailableError), reply
    assert f"the store's directory {tmp_path}/store does not exist" in str(reply.error)
    assert payload == b""
    # And local fetches go on
    assert shard.read_all(local_start, end_offset)[local_start] == record_value(local_start)
    # And once it is back, the remote fetch reads every record
    (tmp_path / "moved").rename(tmp_path / "store")
    assert shard.read_all(0, local_start) == {
        offset: record_value(offset) for offset in range(local_start)}


def test_a_remote_object_lost_from_a_segment_the_view_holds_is_a_storage_error(
        shard_at, tmp_path):
    # Given a tiered partition whose first remote segment's log object was lost
    url = f"file://{tmp_path}/store"
    shard = shard_at(url)
    tiered(shard, url, tmp_path)
    segment = shard.on_loop(lambda part: part.remote.segments[0])
    open_remote_store(url).delete(segment.object_key(LOG))
    # When a consumer fetches an offset in it
    reply, _ = shard.fetch(segment.base_offset)
    # Then it is a storage error (retrying would not help), naming the object
    assert reply.error.code_name == "storageError"
    assert segment.object_key(LOG) in str(reply.error)


def remote_segment(base_offset: int) -> RemoteSegment:
    """A remote segment of t-0 of 10 offsets from ``base_offset``, as its manifest says."""
    return RemoteSegment(topic="t", topic_id=TOPIC_ID, partition=0, segment_id=new_segment_id(),
                         base_offset=base_offset, end_offset=base_offset + 10,
                         max_timestamp_ms=0, leader_epoch=0, created_ms=0,
                         objects={kind: ObjectDigest(0, 0) for kind in
                                  ("log", "index", "timeindex", "leader-epochs")})


def test_a_fetch_from_object_storage_below_the_deleted_records_floor_is_out_of_range(tmp_path):
    # Given a tiered partition whose first segments are only in object storage
    url = f"file://{tmp_path}/store"
    shard = TieredShard(tmp_path / "shard", url)
    try:
        end_offset, local_start = tiered(shard, url, tmp_path)
        remote_start = shard.on_loop(lambda part: part.remote.log_start_offset)
        floor = remote_start + 3   # inside the first remote segment
        assert floor < local_start
        # When the records before an offset in object storage are deleted
        assert shard.on_loop(lambda part: part.delete_records(floor)) == floor
        # Then the earliest offset is the floor, a fetch below it is out of range (the
        # store still holds it), and a fetch at it reads the remote segment from there
        assert shard.list_offsets().start_offset == floor
        below, _ = shard.fetch(floor - 1)
        assert isinstance(below.error, OffsetOutOfRangeError)
        values = shard.read_all(floor, end_offset)
        assert min(values) == floor and len(values) == end_offset - floor
        # And the remote segments stay for remote retention
        assert shard.on_loop(lambda part: part.remote.log_start_offset) == remote_start
    finally:
        shard.close()


# --- Dropping cached chunks ------------------------------------------------------------------

def cached_files(data_dir) -> list[str]:
    return sorted(path.name for path in (data_dir / "tier-cache").iterdir())


def test_deleting_a_partition_read_through_the_cache_drops_its_cached_chunks_and_logs_them(
        s3_url, shard_at, tmp_path, caplog):
    # Given a partition whose remote segments were read through the chunk cache
    caplog.set_level("INFO", logger="plinth.shards.tier.remote_fetcher")
    shard = shard_at(s3_url)
    end_offset, local_start = tiered(shard, s3_url, tmp_path)
    assert len(shard.read_all(0, local_start)) == local_start
    cached_bytes = shard.stats()["remote_fetch"]["cache_bytes"]
    assert cached_bytes > 0 and cached_files(tmp_path / "shard")
    # When the partition is deleted (its topic deleted)
    assert shard.server.call(shard.server.delete_partition, TOPIC, PARTITION)
    # Then no chunk of it stays on the disk, and the log says how many went and how big
    wait_until(lambda: not cached_files(tmp_path / "shard"), timeout_s=30,
               explain=lambda: f"still cached: {cached_files(tmp_path / 'shard')}")
    wait_until(lambda: any(f"({cached_bytes} bytes) of deleted {TOPIC}-{PARTITION} (topic id "
                           f"{TOPIC_ID})" in r.getMessage() for r in caplog.records),
               timeout_s=30, explain=lambda: [r.getMessage() for r in caplog.records])


class GatedStore:
    """A store whose ranged gets wait until ``open`` is set (at most 30 s)."""

    def __init__(self, store):
        self._store = store
        self.url = store.url
        self.open = threading.Event()
        self.waiting = threading.Event()

    def get(self, key):
        return self._store.get(key)

    def get_range(self, key, start, length):
        self.waiting.set()
        assert self.open.wait(30), "the test never opened the store"
        return self._store.get_range(key, start, length)


def test_a_drop_asked_while_an_earlier_read_runs_applies_after_it_and_one_before_a_read_spares_it(
        tmp_path):
    # Given a remote segment, and a reader thread whose store holds its ranged gets
    url, segment = first_remote_segment(tmp_path)
    store = GatedStore(open_remote_store(url))
    cache = RemoteChunkCache(tmp_path / "cache", limits.TIER_CACHE_BYTES_MIN)
    results: queue.Queue = queue.Queue()
    fetcher = RemoteFetcher("test", store, cache, done=results.put)
    fetcher.start()
    try:
        def read(request_id):
            return RemoteRead([b"r"], request_id, (TOPIC, PARTITION), segment, 0, 1 << 20,
                              segment.end_offset, time.monotonic())
        # When a read is queued and waits on the store, and then its partition is
        # deleted (the drop is asked for after the read)
        fetcher.submit(read(1))
        assert store.waiting.wait(30)
        fetcher.drop_partition("t-0", TOPIC_ID, PARTITION, "deleted")
        store.open.set()
        assert results.get(timeout=30).error is None
        # Then the chunks that read cached are dropped once it is done
        wait_until(lambda: not list((tmp_path / "cache").iterdir()), timeout_s=30,
                   explain=lambda: list((tmp_path / "cache").iterdir()))
        # And a drop asked before a read (the partition left, then came back) spares
        # what that read caches
        fetcher.drop_partition("t-0", TOPIC_ID, PARTITION, "moved away")
        fetcher.submit(read(2))
        assert results.get(timeout=30).error is None
    finally:
        fetcher.stop(10)
    assert cache.cached_bytes > 0 and list((tmp_path / "cache").iterdir())
    # And dropping its segment (retention deleted it) drops them, with the reader stopping
    fetcher = RemoteFetcher("test", store, cache, done=results.put)
    fetcher.start()
    fetcher.drop_segments("t-0", (segment.segment_id,), "deleted by total retention")
    fetcher.stop(10)
    assert cache.cached_bytes == 0 and not list((tmp_path / "cache").iterdir())
