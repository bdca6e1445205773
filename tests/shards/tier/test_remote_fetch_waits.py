"""A remote fetch's bounded wait for the reader, one read per offset, and the WARNING of a
failed remote read (shards/tier/remote_fetch_waits.py, remote_fetcher.py, shard_server.py).

A real ShardServer with a tier URL and real sockets (tiered_shard.py). A store
that hangs is an S3 endpoint that takes connections and never answers
(``black_hole``), or, where the test must say when it answers and with what,
the reader's own store wrapped in a ``GatedStore``.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from plinth import limits, protocol
from plinth.errors import RemoteStorageUnavailableError, UnavailableError
from tests.moto_s3 import MotoS3
from tests.shards.tier.tiered_shard import (
    PARTITION, TOPIC, TieredShard, record_value, records_of, tiered)
from tests.support import wait_until

WAIT_S = limits.REMOTE_FETCH_WAIT_MS_MAX / 1000
LATE_S = 1.0   # how much later than its wait a fetch may be answered on two busy cores


class GatedStore:
    """The shard reader's store, held: each get waits until ``open`` is set (at most
    30 s), then raises ``fail`` if it is set. ``gets`` counts them."""

    def __init__(self, store):
        self._store = store
        self.url = store.url
        self.open = threading.Event()
        self.waiting = threading.Event()
        self.fail: Exception | None = None
        self.gets = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _gate(self) -> None:
        self.gets += 1
        self.waiting.set()
        assert self.open.wait(30), "the test never opened the store"
        if self.fail is not None:
            raise self.fail

    def get(self, key):
        self._gate()
        return self._store.get(key)

    def get_range(self, key, start, length):
        self._gate()
        return self._store.get_range(key, start, length)


def gated(shard: TieredShard) -> GatedStore:
    """Wrap the reader's store in a GatedStore (the reader is idle: it reads its store
    only while it serves a read)."""
    reader = shard.server._remote_reader
    store = reader._store = GatedStore(reader._store)
    return store


def reads_submitted(shard: TieredShard) -> int:
    return shard.server.call(lambda: shard.server._remote_reader._reads_submitted)


def test_a_fetch_of_a_remote_offset_while_the_store_hangs_is_answered_empty_within_the_wait(
        shard_at, tmp_path, monkeypatch, black_hole, real_remote_fetch_wait):
    # Given a partition uploaded to a file:// store, whose shard reads it from an S3
    # endpoint that takes connections and never answers (the reader's own timeouts)
    for key, value in MotoS3().env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{black_hole}")
    shard = shard_at("s3://plinth-tier/hangs")
    end_offset, local_start = tiered(shard, f"file://{tmp_path}/store", tmp_path)
    # When a consumer fetches a remote offset, and then a local one
    started_s = time.monotonic()
    remote = shard.send_fetch(0)
    local = shard.send_fetch(local_start)
    # Then the local fetch is answered at once with its records
    reply, payload = shard.reply()
    assert reply.request_id == local and reply.error is None, reply
    assert records_of(payload, local_start)[0].value == record_value(local_start)
    # And the remote one with no records, the high watermark and the log start, once
    # its wait ends: not by the store's timeout
    reply, payload = shard.reply(wait_s=WAIT_S + LATE_S)
    answered_s = time.monotonic() - started_s
    assert reply.request_id == remote and reply.error is None and payload == b"", reply
    assert reply.high_watermark == end_offset and reply.log_start_offset == 0, reply
    assert WAIT_S * 0.9 <= answered_s < WAIT_S + LATE_S, answered_s
    assert answered_s < limits.REMOTE_FETCH_CONNECT_TIMEOUT_S


def test_a_later_fetch_of_an_offset_still_being_read_joins_the_read_and_queues_no_second(
        shard_at, s3_url, tmp_path, real_remote_fetch_wait):
    # Given a partition whose first segments are only in object storage, and a reader
    # whose store holds its gets
    shard = shard_at(s3_url)
    tiered(shard, s3_url, tmp_path)
    store = gated(shard)
    try:
        # When a consumer fetches a remote offset, is answered empty once the wait
        # ends, and fetches the same offset again (and again) while the read is stuck
        replies = [shard.fetch(0, wait_s=WAIT_S + LATE_S) for _ in range(3)]
        # Then each is answered with no records
        assert all(reply.error is None and payload == b"" for reply, payload in replies), \
            replies
        # And only the first fetch queued a read: the others joined it
        assert reads_submitted(shard) == 1
        assert shard.server._remote_reader._queue.qsize() == 0
        assert store.gets == 1
    finally:
        store.open.set()


def test_the_late_result_of_a_read_sends_no_second_reply_and_warms_the_chunk_cache(
        shard_at, s3_url, tmp_path, real_remote_fetch_wait):
    # Given a partition whose first segments are only in object storage, and a reader
    # whose store holds its gets
    shard = shard_at(s3_url)
    tiered(shard, s3_url, tmp_path)
    store = gated(shard)
    first = shard.on_loop(lambda part: part.remote.segments[0])
    # When a fetch of a remote offset is answered empty once its wait ends
    reply, payload = shard.fetch(0, wait_s=WAIT_S + LATE_S)
    assert reply.error is None and payload == b"", reply
    # And then the store answers the read
    store.open.set()
    wait_until(lambda: shard.stats()["remote_fetch"]["fetches"] == 1, timeout_s=30,
               explain=lambda: shard.stats()["remote_fetch"])
    # Then nobody is answered a second time
    assert not shard.socket.poll(int(LATE_S * 1000)), "a second reply to the fetch"
    # And the next fetch of the offset is answered from the chunk cache the read
    # warmed, without a store call
    gets = store.gets
    reply, payload = shard.fetch(0)
    assert reply.error is None
    assert [r.value for r in records_of(payload, 0)] == [
        record_value(offset) for offset in range(first.end_offset)]
    assert store.gets == gets
    assert shard.stats()["remote_fetch"]["cache_hits"] >= 1


def test_a_store_error_within_the_wait_is_answered_as_the_error_to_every_fetch_waiting_for_the_read(
        shard_at, s3_url, tmp_path, monkeypatch):
    # Given a shard whose remote fetches wait 5 s (room for a test on busy cores), and a
    # reader whose store holds its gets
    monkeypatch.setattr(limits, "REMOTE_FETCH_WAIT_MS_MAX", 5000)
    shard = shard_at(s3_url)
    tiered(shard, s3_url, tmp_path)
    store = gated(shard)
    # When two fetches of the same remote offset wait on one read, and the store then
    # fails it
    first = shard.send_fetch(0)
    assert store.waiting.wait(30)
    second = shard.send_fetch(0)
    time.sleep(0.3)   # the loop takes the second fetch before the store answers
    store.fail = RemoteStorageUnavailableError("object storage unavailable: the test's store")
    store.open.set()
    # Then both are answered with the store's error, retriable, at once
    replies = {}
    for _ in range(2):
        reply, payload = shard.reply(wait_s=4)
        replies[reply.request_id] = reply
        assert isinstance(reply.error, UnavailableError) and payload == b"", reply
        assert "the test's store" in str(reply.error)
    assert set(replies) == {first, second}
    # And the store was read once
    assert reads_submitted(shard) == 1 and store.gets == 1


def test_a_failed_remote_read_is_logged_at_warning_once_per_interval_naming_the_partition_offset_store_and_error(
        shard_at, s3_url, tmp_path, monkeypatch, caplog):
    # Given a shard whose failed remote reads are logged at most once a second, and a
    # store that fails every get
    monkeypatch.setattr(limits, "REMOTE_FETCH_FAILED_LOG_INTERVAL_S", 1.0, raising=False)
    t0_ms = 1_700_000_000_000
    shard = shard_at(s3_url)
    tiered(shard, s3_url, tmp_path, stamp=lambda offset: t0_ms + offset)
    store = gated(shard)
    store.fail = RemoteStorageUnavailableError("object storage unavailable: the test's store")
    store.open.set()
    caplog.set_level(logging.WARNING)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name.endswith("remote_fetcher")]
    # When three fetches of a remote offset fail within the interval
    for _ in range(3):
        reply, _ = shard.fetch(5)
        assert isinstance(reply.error, UnavailableError), reply
    # Then one WARNING says so, naming the partition, the offset, the store and the error
    wait_until(lambda: warnings(), timeout_s=10)
    time.sleep(0.2)
    lines = warnings()
    assert len(lines) == 1, lines
    assert f"remote fetch of offset 5 of {TOPIC}-{PARTITION} failed" in lines[0]
    assert s3_url in lines[0] and "the test's store" in lines[0]
    assert "remote segment t/0" in lines[0]
    # And after the interval, a failed look-up by time is logged too, saying how many
    # lines were dropped since
    time.sleep(1.1)
    request_id = shard.next_id()
    shard.socket.send_multipart([b"remote-reader-test", protocol.encode_list_offsets(
        request_id, TOPIC, PARTITION, t0_ms + 5)])
    reply, _ = shard.reply()
    assert reply.request_id == request_id and isinstance(reply.error, UnavailableError), reply
    wait_until(lambda: len(warnings()) == 2, timeout_s=10, explain=warnings)
    line = warnings()[1]
    assert f"look-up of time {t0_ms + 5} ms" in line and f"{TOPIC}-{PARTITION}" in line
    assert "2 such lines of this source dropped" in line


# --- RemoteFetchWaits alone (loop-thread bookkeeping, no shard) -------------------------

def fetch_of(segment, offset: int, received_s: float, bytes_max: int = 1 << 20,
             end_offset_max: int | None = None):
    from plinth.shards.tier.remote_fetcher import RemoteRead
    return RemoteRead([b"r"], 0, (TOPIC, PARTITION), segment, offset, bytes_max,
                      segment.end_offset if end_offset_max is None else end_offset_max,
                      received_s)


@pytest.fixture
def segment(tmp_path):
    from tests.shards.tier.test_remote_fetcher import first_remote_segment
    return first_remote_segment(tmp_path)


def test_a_read_pending_past_the_join_limit_is_taken_as_lost_and_its_late_result_answers_nobody(
        segment):
    from plinth.shards.tier.remote_fetch_waits import RemoteFetchWaits
    _, segment = segment
    waits = RemoteFetchWaits(wait_s=0.5, join_s_max=60.0)
    # Given a read queued at time 0, its fetch answered empty at 0.5 s
    lost = fetch_of(segment, 0, 0.0)
    waits.add(lost, 0.0)
    assert waits.expire(0.5) == [lost]
    # When a fetch of the same offset comes within the join limit, it joins the read
    joined = fetch_of(segment, 0, 10.0)
    assert waits.join(joined, 10.0)
    assert waits.expire(10.5) == [joined]
    # And one past it does not: it queues a new read, which the old result does not settle
    again = fetch_of(segment, 0, 61.0)
    assert not waits.join(again, 61.0)
    waits.add(again, 61.0)
    assert waits.settle(lost) == []
    assert waits.settle(again) == [again]
    # And a lost read no fetch waits for is forgotten once past the limit
    forgotten = fetch_of(segment, 3, 100.0)
    waits.add(forgotten, 100.0)
    assert waits.expire(100.5) == [forgotten] and len(waits) == 1
    assert waits.expire(161.0) == [] and len(waits) == 0


def test_a_fetch_that_joined_a_read_is_answered_only_the_entries_its_bytes_and_high_watermark_allow(
        segment, tmp_path):
    from plinth.shards.tier.chunk_cache import RemoteChunkCache
    from plinth.shards.tier.remote_fetch_waits import fit
    from plinth.shards.tier.remote_fetcher import RemoteFetcher
    from plinth.shards.tier.remote_store import open_remote_store
    url, segment = segment
    fetcher = RemoteFetcher("test", open_remote_store(url),
                            RemoteChunkCache(tmp_path / "cache", limits.TIER_CACHE_BYTES_MIN),
                            done=None)
    data = fetcher.read(segment, 0, 1 << 20, segment.end_offset)
    # A fetch of 1 byte gets the first entry whole; one up to offset 4 the entries before it
    assert [r.offset for r in records_of(fit(fetch_of(segment, 0, 0.0, bytes_max=1), data), 0)] \
        == [0, 1, 2]
    assert [r.offset for r in records_of(fit(fetch_of(segment, 0, 0.0, end_offset_max=4), data),
                                         0)] == list(range(6))
    assert fit(fetch_of(segment, 0, 0.0), data) is data
