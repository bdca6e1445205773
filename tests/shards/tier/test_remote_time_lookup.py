"""listOffsets by time of a tiered partition at a real ShardServer (no Ray), its first
segments only in object storage (an S3 server of the test's own, or a file:// one): a time
those reach is answered exactly, the record and its timestamp, read off the loop by the
remote reader (shards/tier/remote_time_lookup.py); a store that is down is answered
unavailable, never with a guess; and an owner that has not listed the store answers
unavailable rather than guess."""

from __future__ import annotations

import time

import pytest

from plinth import limits, protocol
from plinth.errors import UnavailableError
from tests.moto_s3 import MotoS3
from tests.shard_requests import _roundtrip, produce
from tests.shards.tier.test_remote_log_manager import running_shard
from tests.shards.tier.test_remote_log_manager import tiered as tiered_config
from tests.shards.tier.tiered_shard import KEY, TOPIC_ID, TieredShard, tiered

STEP_MS = 10   # records are stamped T0_MS + STEP_MS * offset: a time between two is asked too


@pytest.fixture
def moto():
    server = MotoS3("plinth-time").start()
    yield server
    server.stop()


@pytest.fixture(params=["s3", "file"])
def store_url(request, tmp_path, monkeypatch):
    """A moto S3 store (read through the chunk cache) or a file:// one (read directly)."""
    if request.param == "file":
        (tmp_path / "file-store").mkdir()
        yield f"file://{tmp_path / 'file-store'}"
        return
    server = request.getfixturevalue("moto")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    yield server.url()


def list_at(address: str, timestamp_ms: int) -> protocol.PartitionInfo:
    return _roundtrip(address, protocol.encode_list_offsets(1, "t", 0, timestamp_ms)).offsets


def stamps_from(t0_ms: int):
    return lambda offset: t0_ms + STEP_MS * offset


def test_a_time_only_object_storage_reaches_is_answered_with_the_exact_record(
        store_url, tmp_path):
    # Given t-0 whose first segments are only in the store, the rest on the shard's disk,
    # record n stamped T0 + 10 n ms (batches of 3)
    t0_ms = time.time_ns() // 1_000_000 - 3_600_000
    stamp = stamps_from(t0_ms)
    shard = TieredShard(tmp_path / "shard", store_url)
    try:
        end_offset, local_start = tiered(shard, store_url, tmp_path, stamp=stamp)
        assert local_start > 40
        address = shard.server.address
        # When listOffsets asks for the time of records in the remote range (the first
        # of a batch, one inside a batch, one in another segment), and a time between two
        # Then each is the record itself with its timestamp, as in the local range
        for offset in (0, 1, 17, 32, 40, local_start - 1, local_start + 1):
            found = list_at(address, stamp(offset))
            assert (found.found_offset, found.found_timestamp_ms) == (offset, stamp(offset))
        between = list_at(address, stamp(25) - STEP_MS // 2)
        assert (between.found_offset, between.found_timestamp_ms) == (25, stamp(25))
        # And before every record: the first; after all: none
        first, past = list_at(address, 0), list_at(address, 2 ** 62)
        assert (first.found_offset, first.found_timestamp_ms) == (0, t0_ms)
        assert (past.found_offset, past.found_timestamp_ms) == (-1, -1)
        assert (first.start_offset, first.end_offset) == (0, end_offset)
        # And the controller's way in (the actor's partition_infos) gets the same
        call = shard.server.call(shard.server.partition_info_at_time, "t", 0, stamp(17))
        assert call.result(timeout=30).found_offset == 17
        # And the shard counts the 9 look-ups the store answered, and times them
        stats = shard.stats()
        assert (stats["remote_fetch"]["time_lookups"], stats["remote_fetch"]["errors"]) == (9, 0)
        assert sum(stats["latency_counts"]["remote_time_lookup"]) == 9
    finally:
        shard.close()


def test_a_time_in_object_storage_while_the_store_is_down_is_unavailable_not_a_guess(
        moto, tmp_path, monkeypatch):
    # Given t-0 whose first segments are only in the store, which then goes down
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    t0_ms = time.time_ns() // 1_000_000 - 3_600_000
    stamp = stamps_from(t0_ms)
    shard = TieredShard(tmp_path / "shard", moto.url())
    try:
        _, local_start = tiered(shard, moto.url(), tmp_path, stamp=stamp)
        moto.stop()
        # When listOffsets asks for the time of a remote record
        # Then it is the retriable unavailable, within the remote fetch's bounds
        started_s = time.monotonic()
        with pytest.raises(UnavailableError, match="object storage unavailable"):
            list_at(shard.server.address, stamp(10))
        assert time.monotonic() - started_s < limits.REMOTE_FETCH_QUEUED_S_MAX + 30
        remote = shard.stats()["remote_fetch"]
        assert (remote["time_lookups"], remote["errors"]) == (0, 1)
        # And a time in the local log is answered exactly, as ever
        found = list_at(shard.server.address, stamp(local_start + 1))
        assert (found.found_offset, found.found_timestamp_ms) == (local_start + 1,
                                                                  stamp(local_start + 1))
        assert shard.on_loop(lambda part: part.key) == KEY
    finally:
        shard.close()


def test_an_owner_that_has_not_listed_the_store_answers_a_time_unavailable(
        tmp_path, monkeypatch):
    # Given a new owner of a tiered t-0 whose log starts at 50 and which cannot list
    # the store
    unreachable = MotoS3()   # never started: its port refuses connections
    for key, value in unreachable.env.items():
        monkeypatch.setenv(key, value)
    with running_shard(tmp_path / "owner", unreachable.url()) as owner:
        owner.call(lambda: owner.open_partition("t", 0, tiered_config(), 50, topic_id=TOPIC_ID))
        produce(owner.address, "t", 0, [b"fifty"])
        # When listOffsets asks for a time / Then it is retriable, naming why
        with pytest.raises(UnavailableError, match=r"remote log of t/0 is not listed yet; retry "
                                                   r"\(the first record at 5 ms may be in object"):
            list_at(owner.address, 5)
        # And without a time the offsets are answered as ever
        assert list_at(owner.address, protocol.NO_TIME_LOOKUP).end_offset == 51


def test_the_controllers_look_up_by_time_waits_from_when_it_came_not_from_the_shards_last_request(
        tmp_path, monkeypatch):
    # Given a shard whose reader answers a read queued over 1 s ago without reading it,
    # and t-0 whose first segments are only in a file:// store
    monkeypatch.setattr(limits, "REMOTE_FETCH_QUEUED_S_MAX", 1.0)
    store_url = f"file://{tmp_path}/store"
    t0_ms = time.time_ns() // 1_000_000 - 3_600_000
    stamp = stamps_from(t0_ms)
    shard = TieredShard(tmp_path / "shard", store_url)
    try:
        tiered(shard, store_url, tmp_path, stamp=stamp)
        # When the controller asks for a remote time (the actor's partition_infos, no
        # request of its own) after the shard's last request is older than that
        time.sleep(1.5)
        call = shard.server.call(shard.server.partition_info_at_time, "t", 0, stamp(17))
        # Then it is answered with the record: its read was not taken as waiting since then
        found = call.result(timeout=30)
        assert (found.found_offset, found.found_timestamp_ms) == (17, stamp(17))
    finally:
        shard.close()
