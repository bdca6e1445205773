"""listOffsets by time of a tiered partition at a real ShardServer (no Ray), its first
segments only in object storage (an S3 server of the test's own): a time those reach is
answered conservatively, at the start of the remote segment (shards/time_lookup.py),
and an owner that has not listed the store answers unavailable rather than guess."""

from __future__ import annotations

import pytest

from plinth import protocol
from plinth.errors import UnavailableError
from tests.moto_s3 import MotoS3
from tests.shard_requests import _roundtrip, produce
from tests.shards.tier.test_remote_log_manager import running_shard
from tests.shards.tier.test_remote_log_manager import tiered as tiered_config
from tests.shards.tier.tiered_shard import TOPIC_ID, TieredShard, tiered


@pytest.fixture
def moto():
    server = MotoS3("plinth-time").start()
    yield server
    server.stop()


def list_at(address: str, timestamp_ms: int) -> protocol.PartitionInfo:
    return _roundtrip(address, protocol.encode_list_offsets(1, "t", 0, timestamp_ms)).offsets


def test_a_time_only_object_storage_reaches_is_answered_at_its_remote_segment_start(
        moto, tmp_path, monkeypatch):
    # Given t-0 whose first segments are only in the store, the rest on the shard's disk
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    shard = TieredShard(tmp_path / "shard", moto.url())
    try:
        end_offset, local_start = tiered(shard, moto.url(), tmp_path)
        assert local_start > 0
        address = shard.server.address
        # When listOffsets asks for a time before every record, and one after all
        first = list_at(address, 0)
        past = list_at(address, 2 ** 62)
        # Then the first is the remote log's start with an unknown timestamp (at or
        # before the record: nothing skipped), the second none
        assert (first.found_offset, first.found_timestamp_ms) == (0, -1)
        assert (past.found_offset, past.found_timestamp_ms) == (-1, -1)
        assert (first.start_offset, first.end_offset) == (0, end_offset)
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
