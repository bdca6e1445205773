"""A remote fetch's bounded wait for the reader, one read per offset, the same for a look-up
by time (answered requestTimedOut when its wait ends), the counters of waits that ended,
and the WARNING of a failed remote read (shards/tier/remote_fetch_waits.py,
remote_fetcher.py, shard_server.py).

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
from plinth.control.metrics import BrokerCollector
from plinth.errors import RemoteStorageUnavailableError, RequestTimedOutError, UnavailableError
from tests.moto_s3 import MotoS3
from tests.shards.tier.tiered_shard import (
    PARTITION, TOPIC, TieredShard, record_value, records_of, tiered)
from tests.support import wait_until

WAIT_S = limits.REMOTE_FETCH_WAIT_MS_MAX / 1000
TIME_WAIT_S = limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX / 1000
T0_MS = 1_700_000_000_000
STEP_MS = 10   # record n is stamped T0_MS + STEP_MS * n


def stamp(offset: int) -> int:
    return T0_MS + STEP_MS * offset
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


def tiered_on_a_hung_store(shard_at, tmp_path, monkeypatch, black_hole, stamp=None):
    """(shard, end offset, local start): a partition uploaded to a file:// store, whose
    shard reads it from an S3 endpoint that takes connections and never answers (the
    reader's own timeouts)."""
    for key, value in MotoS3().env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{black_hole}")
    shard = shard_at("s3://plinth-tier/hangs")
    return shard, *tiered(shard, f"file://{tmp_path}/store", tmp_path, stamp=stamp)


def test_a_fetch_of_a_remote_offset_while_the_store_hangs_is_answered_empty_within_the_wait(
        shard_at, tmp_path, monkeypatch, black_hole, real_remote_fetch_wait):
    # Given a partition whose shard reads its remote segments from a store that hangs
    shard, end_offset, local_start = tiered_on_a_hung_store(shard_at, tmp_path, monkeypatch,
                                                            black_hole)
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


# --- Look-ups by time (ListOffsets by timestamp) in object storage ---------------------

def test_a_look_up_by_time_while_the_store_hangs_is_answered_request_timed_out_within_its_wait(
        shard_at, tmp_path, monkeypatch, black_hole, real_remote_time_lookup_wait):
    # Given a partition whose shard reads its remote segments from a store that hangs
    shard, _, local_start = tiered_on_a_hung_store(shard_at, tmp_path, monkeypatch, black_hole,
                                                   stamp)
    segment = shard.on_loop(lambda part: part.remote.segment_for_offset(10))
    # When a client asks for the time of a remote record, and then of a local one
    started_s = time.monotonic()
    remote = shard.send_list_offsets(stamp(10))
    local = shard.send_list_offsets(stamp(local_start + 1))
    # Then the local one is answered at once, exactly
    reply, _ = shard.reply()
    assert reply.request_id == local and reply.error is None, reply
    assert reply.offsets.found_offset == local_start + 1
    # And the remote one with requestTimedOut (retriable) once its wait ends, not by the
    # store's timeouts, naming the partition, the time, the segment and the wait
    reply, _ = shard.reply(wait_s=TIME_WAIT_S + LATE_S)
    answered_s = time.monotonic() - started_s
    assert reply.request_id == remote and isinstance(reply.error, RequestTimedOutError), reply
    assert TIME_WAIT_S * 0.9 <= answered_s < TIME_WAIT_S + LATE_S, answered_s
    message = str(reply.error)
    for part in (f"{TOPIC}-{PARTITION}", f"time {stamp(10)} ms", segment.describe(),
                 f"within {limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX} ms",
                 "the store is slow: retry"):
        assert part in message, (part, message)
    # And the shard counts the look-up whose wait ended, and its error reply
    stats = shard.stats()
    assert stats["remote_fetch"]["time_lookup_waits_expired"] == 1, stats["remote_fetch"]
    assert stats["errors"].get("requestTimedOut") == 1, stats["errors"]


def test_look_ups_of_the_same_time_share_one_read_and_each_is_answered_once_with_the_record(
        shard_at, s3_url, tmp_path):
    # Given a partition whose first segments are only in object storage, and a reader
    # whose store holds its gets
    shard = shard_at(s3_url)
    tiered(shard, s3_url, tmp_path, stamp=stamp)
    store = gated(shard)
    try:
        # When two look-ups of the same time come while its read is stuck, and one of
        # another time
        same = [shard.send_list_offsets(stamp(10))]
        assert store.waiting.wait(30)
        same.append(shard.send_list_offsets(stamp(10)))
        other = shard.send_list_offsets(stamp(20))
        time.sleep(0.3)   # the loop takes them before the store answers
        # Then the second joined the first's read: only the other time queued another
        assert reads_submitted(shard) == 2
    finally:
        store.open.set()
    # And once the store answers, each is answered once, with its exact record
    replies = {}
    for _ in range(3):
        reply, _ = shard.reply()
        assert reply.error is None and reply.request_id not in replies, reply
        replies[reply.request_id] = (reply.offsets.found_offset, reply.offsets.found_timestamp_ms)
    assert replies == {same[0]: (10, stamp(10)), same[1]: (10, stamp(10)),
                       other: (20, stamp(20))}
    assert not shard.socket.poll(int(LATE_S * 1000)), "a second reply to a look-up"
    # And the two reads are counted as two look-ups read from the store, not three
    assert shard.stats()["remote_fetch"]["time_lookups"] == 2


def test_a_retry_of_a_look_up_that_timed_out_joins_its_read_and_gets_the_record_once_the_store_answers(
        shard_at, s3_url, tmp_path, real_remote_time_lookup_wait):
    # Given a partition whose first segments are only in object storage, and a reader
    # whose store holds its gets
    shard = shard_at(s3_url)
    tiered(shard, s3_url, tmp_path, stamp=stamp)
    store = gated(shard)
    try:
        # When a look-up by time is answered requestTimedOut once its wait ends
        first = shard.send_list_offsets(stamp(10))
        reply, _ = shard.reply(wait_s=TIME_WAIT_S + LATE_S)
        assert reply.request_id == first and isinstance(reply.error, RequestTimedOutError), reply
        # And its client retries while the read is still stuck
        retry = shard.send_list_offsets(stamp(10))
        time.sleep(0.3)   # the loop takes the retry before the store answers
        # Then the retry queued no second read
        assert reads_submitted(shard) == 1 and store.gets == 1
    finally:
        # And when the store answers
        store.open.set()
    # Then the retry is answered with the exact record
    reply, _ = shard.reply(wait_s=TIME_WAIT_S)
    assert reply.request_id == retry and reply.error is None, reply
    assert (reply.offsets.found_offset, reply.offsets.found_timestamp_ms) == (10, stamp(10))
    # And the first look-up is not answered a second time
    assert not shard.socket.poll(int(LATE_S * 1000)), "a second reply to the first look-up"
    # And the shard counts one read, one wait that ended, one requestTimedOut
    stats = shard.stats()
    remote = stats["remote_fetch"]
    assert (remote["time_lookups"], remote["time_lookup_waits_expired"], remote["errors"]) == \
        (1, 1, 0), remote
    assert stats["errors"].get("requestTimedOut") == 1, stats["errors"]


def test_the_waits_that_ended_are_prometheus_counters_and_late_reads_are_still_counted(
        shard_at, s3_url, tmp_path, real_remote_fetch_wait, real_remote_time_lookup_wait):
    from tests.shards.tier.test_remote_fetcher import ControllerWithOneShard
    # Given a partition whose first segments are only in object storage, and a reader
    # whose store holds its gets
    shard = shard_at(s3_url)
    tiered(shard, s3_url, tmp_path, stamp=stamp)
    store = gated(shard)
    try:
        # When a remote fetch is answered empty and a look-up by time requestTimedOut,
        # each once its wait ends
        reply, payload = shard.fetch(0, wait_s=WAIT_S + LATE_S)
        assert reply.error is None and payload == b"", reply
        request_id = shard.send_list_offsets(stamp(10))
        reply, _ = shard.reply(wait_s=TIME_WAIT_S + LATE_S)
        assert reply.request_id == request_id and isinstance(reply.error, RequestTimedOutError)
    finally:
        # And then the store answers both reads, which answer nobody
        store.open.set()
    wait_until(lambda: shard.stats()["remote_fetch"]["time_lookups"] == 1, timeout_s=30,
               explain=lambda: shard.stats()["remote_fetch"])

    def samples() -> dict:
        return {(s.name, s.labels.get("kind")): s.value
                for family in BrokerCollector(ControllerWithOneShard(shard)).collect()
                for s in family.samples}
    # Then the metrics show one wait ended of each kind
    got = samples()
    assert got[("plinth_remote_fetch_waits_expired_total", None)] == 1
    assert got[("plinth_remote_time_lookup_waits_expired_total", None)] == 1
    # And the reads that came back late still count, as their latencies do
    assert got[("plinth_remote_fetches_total", None)] == 1
    assert got[("plinth_remote_time_lookups_total", None)] == 1
    assert got[("plinth_request_latency_seconds_count", "remote_time_lookup")] == 1
    assert got[("plinth_remote_fetch_errors_total", None)] == 0


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


def time_lookup_of(segment, timestamp_ms: int, offset: int, received_s: float):
    from plinth.shards.tier.remote_time_lookup import RemoteTimeRead
    return RemoteTimeRead((TOPIC, PARTITION), segment, timestamp_ms, offset, received_s,
                          answer=None)


def test_look_ups_by_time_join_only_a_read_of_the_same_time_and_floor_and_wait_their_own_bound(
        segment, real_remote_fetch_wait, real_remote_time_lookup_wait):
    from plinth.shards.tier.remote_fetch_waits import RemoteFetchWaits
    _, segment = segment
    waits = RemoteFetchWaits.for_time_lookups()
    assert waits.wait_ms == limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX
    # Given a look-up of time T from the segment's base, queued at time 0
    first = time_lookup_of(segment, stamp(10), 0, 0.0)
    waits.add(first, 0.0)
    # When look-ups of another time, or of T from another floor, come: they do not join
    assert not waits.join(time_lookup_of(segment, stamp(11), 0, 0.1), 0.1)
    assert not waits.join(time_lookup_of(segment, stamp(10), 3, 0.1), 0.1)
    # And one of T from the same floor does
    same = time_lookup_of(segment, stamp(10), 0, 0.1)
    assert waits.join(same, 0.1)
    # Then each waits REMOTE_TIME_LOOKUP_WAIT_MS_MAX from when it came, not a fetch's wait
    wait_s = limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX / 1000
    assert waits.expire(limits.REMOTE_FETCH_WAIT_MS_MAX / 1000) == []
    assert waits.expire(wait_s) == [first]
    assert waits.expire(wait_s + 0.1) == [same]
    # And the read's late result answers nobody
    assert waits.settle(first) == []


def test_a_look_up_that_goes_on_to_the_next_segment_keeps_its_first_deadline(
        segment, real_remote_time_lookup_wait):
    from plinth.shards.tier.remote_fetch_waits import RemoteFetchWaits
    _, segment = segment
    waits = RemoteFetchWaits.for_time_lookups()
    wait_s = limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX / 1000
    # Given a look-up received at 1.0, waiting
    later = time_lookup_of(segment, stamp(11), 0, 1.0)
    waits.add(later, 1.0)
    # When a look-up received before it, at 0.5, found no record in its first segment
    # and asks again from that segment's end (queued now, its wait counted from 0.5)
    earlier = time_lookup_of(segment, stamp(10), 3, 0.5)
    waits.add(earlier, 1.2)
    # Then its wait ends first, at 0.5 plus the wait, not after the later one's
    assert waits.next_deadline_s() == 0.5 + wait_s
    assert waits.expire(0.5 + wait_s) == [earlier]
    assert waits.expire(1.0 + wait_s) == [later]
