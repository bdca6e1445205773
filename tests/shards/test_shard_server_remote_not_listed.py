"""ShardServer.partition_info of a tiered partition whose remote view is not the store's
yet (tester T-rk's F6): a new leader with the store down says so, with the store's
error, instead of "nothing remote", and tells the store's offsets once it has listed it.
A listOffsets that needs the start exact (requireListed) is refused until then.

A real ShardServer uploading to moto's S3, stopped and started again, as in
tests/shards/tier/test_remote_log_takeover.py.
"""

from __future__ import annotations

import time

import pytest

from plinth import limits, protocol
from plinth.errors import UnavailableError
from plinth.shards.partition_log import LogConfig
from tests.moto_s3 import MotoS3
from tests.shard_requests import list_offsets
from tests.shards.tier.test_remote_log_manager import WAIT_S, running_shard, tiered
from tests.shards.tier.test_remote_log_takeover import new_leader_with_the_store_down
from tests.shards.tier.tiered_shard import TOPIC_ID
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
        # And its stats (status, metrics) say its remote figures are not the store's
        assert remote_listed(server) == 0
        # And once the store is back and listed, it tells the store's offsets and says
        # nothing of a listing
        moto.start()
        listed = wait_until(lambda: (i := info_of(server)).remote_not_listed == ""
                            and i.has_remote and i, timeout_s=WAIT_S)
        assert listed.remote_start_offset == rolled[0][0]
        assert listed.remote_end_offset >= rolled[2][1] and listed.remote_bytes > 0
        assert remote_listed(server) == 1


def remote_listed(server) -> int:
    return server.call(server.stats_snapshot)["tier"][("t", 0)]["remote_listed"]


def test_a_new_leader_whose_remote_log_is_not_listed_refuses_an_exact_start_until_it_is(
        tmp_path):
    # Given a new leader of t-0 whose log lacks the first three segments, which another
    # leader uploaded (a follower's local retention deleted them), the store down
    with new_leader_with_the_store_down(tmp_path, tiered(), "exact-start", upload_errors=1,
                                        local_copies_deleted=True) as (server, moto, _, rolled):
        # When a consumer resetting to the earliest offset asks for the start
        # Then it is told to retry, not the local start, which would skip the records
        # in the store
        with pytest.raises(UnavailableError, match=(
                rf"remote log of t/0 is not listed yet; retry \(records before the log start "
                rf"offset {rolled[3][0]} may be in object storage, on shard-tier")):
            list_offsets(server.address, "t", 0, require_listed=True)
        # And a request that does not need the start exact is answered as the shard knows
        known = list_offsets(server.address, "t", 0)
        assert (known.start_offset, known.remote_not_listed != "") == (rolled[3][0], True)
        # And once the store is back and listed, the start is the store's first offset
        moto.start()
        start = wait_until(lambda: _answered(lambda: list_offsets(
            server.address, "t", 0, require_listed=True)), timeout_s=WAIT_S)
        assert start.start_offset == rolled[0][0] == 0


def test_a_log_that_starts_at_its_floor_tells_its_exact_start_with_the_store_down(tmp_path):
    # Given a new leader of t-0 whose local log still starts at 0, the store down
    with new_leader_with_the_store_down(tmp_path, tiered(), "at-floor",
                                        upload_errors=1) as (server, _, _, _):
        # When a consumer resetting to the earliest offset asks for the start
        info = list_offsets(server.address, "t", 0, require_listed=True)
        # Then it is 0: nothing in the store can be before it, listed or not
        assert (info.start_offset, info.remote_not_listed != "") == (0, True)


def test_a_tiered_partition_the_controller_opens_lists_its_store_without_waiting_for_a_check(
        tmp_path, monkeypatch):
    # Given a shard whose upload checks run only at its start (a long check interval)
    monkeypatch.setattr(limits, "REMOTE_UPLOAD_CHECK_INTERVAL_S", 3600.0)
    (tmp_path / "store").mkdir()
    url = f"file://{tmp_path}/store"
    with running_shard(tmp_path / "shard", url) as server:
        server.call(lambda: server._tier.run_timers(time.monotonic()))
        # When the controller opens a tiered partition of a topic just created
        server.call(lambda: server.open_partition("t", 0, tiered(), topic_id=TOPIC_ID))
        # Then it lists the store at once, without waiting for the next check (until it
        # has, a reset to the earliest offset of a log past its floor is told to retry)
        wait_until(lambda: list_offsets(server.address, "t", 0).remote_not_listed == "",
                   timeout_s=WAIT_S)


def _answered(ask):
    """``ask()``, or None while it is UnavailableError."""
    try:
        return ask()
    except UnavailableError:
        return None


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
