"""ShardServer.partition_info of a tiered partition whose remote view is not the store's
yet (tester T-rk's F6): a new leader with the store down says so, with the store's
error, instead of "nothing remote", and tells the store's offsets once it has listed it.

A real ShardServer uploading to moto's S3, stopped and started again, as in
tests/shards/tier/test_remote_log_takeover.py.
"""

from __future__ import annotations

import pytest

from plinth import limits, protocol
from plinth.shards.partition_log import LogConfig
from tests.moto_s3 import MotoS3
from tests.shards.tier.test_remote_log_manager import WAIT_S, running_shard, tiered
from tests.shards.tier.test_remote_log_takeover import new_leader_with_the_store_down
from tests.support import wait_until


def info_of(server) -> protocol.PartitionInfo:
    return server.call(server.partition_info, "t", 0)


def test_a_new_leader_with_the_store_down_says_its_remote_log_is_not_listed_and_why(tmp_path):
    # Given a partition log whose first three segments another leader uploaded, and a
    # store then down
    # When a shard with no journal of it (a new leader) starts uploading it, and its
    # first listing of the store fails
    with new_leader_with_the_store_down(tmp_path, tiered(), "not-listed",
                                        upload_errors=1) as (server, moto, _, rolled):
        # Then its partition info says the remote log is not listed, since when, and
        # the store's error, rather than only "nothing remote"
        info = info_of(server)
        assert info.remote_not_listed.startswith(
            "shard-tier has not listed object storage since it began uploading t-0: "
            "the last try failed: "), info.remote_not_listed
        assert not info.has_remote
        # And once the store is back and listed, it tells the store's offsets and says
        # nothing of a listing
        moto.start()
        listed = wait_until(lambda: (i := info_of(server)).remote_not_listed == ""
                            and i.has_remote and i, timeout_s=WAIT_S)
        assert listed.remote_start_offset == rolled[0][0]
        assert listed.remote_end_offset >= rolled[2][1] and listed.remote_bytes > 0


def test_the_stores_error_in_a_not_listed_remote_log_is_cut_to_its_limit(tmp_path, monkeypatch):
    # Given errors cut at 20 characters
    monkeypatch.setattr(limits, "REMOTE_NOT_LISTED_ERROR_CHARS_MAX", 20)
    # When a new leader's first listing fails with the store down
    with new_leader_with_the_store_down(tmp_path, tiered(), "cut",
                                        upload_errors=1) as (server, _, _, _):
        # Then the reason quotes the error's first 20 characters only
        _, error = info_of(server).remote_not_listed.split("the last try failed: ")
        assert len(error) == 20 + len("...") and error.endswith("...")


def test_a_partition_that_is_not_tiered_never_says_its_remote_log_is_not_listed(tmp_path):
    # Given a shard with a tier URL whose store is down, and a topic that is not tiered
    moto = MotoS3().start()
    moto.stop()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in moto.env.items():
            patch.setenv(key, value)
        with running_shard(tmp_path / "shard", moto.url("untiered"), LogConfig()) as server:
            # Then its partition info has nothing to list: its remote fields are exact
            assert info_of(server).remote_not_listed == ""
