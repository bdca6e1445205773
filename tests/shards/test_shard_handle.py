"""ShardHandle and PendingCall: checked arguments, typed results, one way to fail, bounded
waits. The handle reaches a real ShardActor in process (tests/in_process_shards.py);
PendingCalls are made from plain futures, as Ray's ``ObjectRef.future()`` gives them."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import ray.exceptions

from plinth import limits
from plinth.errors import (InternalError, RequestTimedOutError, ShardRestartingError,
                           UnavailableError, UnknownTopicError)
from plinth.shards.shard_handle import (OPENED_CREATED_EMPTY, PartitionId, PartitionSpec,
                                        PendingCall, SealedPartition, ShardOptions, TieredState,
                                        TierOptions, wait_all, wait_all_or_raise)
from plinth.shards.shard_server import ShardServer
from tests.in_process_shards import InProcessShardHandle
from tests.shard_requests import produce


@pytest.fixture
def handle(tmp_path):
    shard = InProcessShardHandle(ShardOptions("shard-0", str(tmp_path / "shard-0"), "always",
                                              1000, "node:127.0.0.1"), announce_to=None)
    yield shard
    shard.stop()


def answered(value=None, error: BaseException | None = None) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)
    return future


def test_calls_return_the_typed_results_of_the_shard(handle):
    # Given a partition with two records
    assert handle.open_partitions([PartitionSpec("t", 0, {})]).result() == {
        PartitionId("t", 0): OPENED_CREATED_EMPTY}
    produce(handle.actor.address(), "t", 0, [b"a", b"b"])
    # When it is sealed
    sealed = handle.seal_partitions([PartitionId("t", 0)]).result()
    # Then the result is a SealedPartition with its end offset
    assert sealed == [SealedPartition("t", 0, 2, sealed[0].producers)]


def test_a_stale_delete_removes_only_what_the_shard_holds_as_that_topic_ids(handle):
    # Given partition 0 of a topic held under one id, partition 1 under another
    old, new = "a" * 32, "b" * 32
    handle.open_partitions([PartitionSpec("t", 0, {}, topic_id=old),
                            PartitionSpec("t", 1, {}, topic_id=new)]).result()
    # When the deletes of partitions 0 to 2 of the old id are sent
    pids = [PartitionId("t", p) for p in range(3)]
    # Then only partition 0 goes (1 is another topic's, 2 is not held)
    assert handle.delete_stale_partitions(pids, old).result() == [PartitionId("t", 0)]
    assert set(handle.actor._manifest.partitions) == {PartitionId("t", 1)}
    assert handle.delete_stale_partitions(pids, old).result() == []


@pytest.mark.parametrize("call", [
    lambda h: h.open_partitions([("t", 0, {})]),
    lambda h: h.open_partitions([PartitionSpec("t", -1, {})]),
    lambda h: h.open_partitions([PartitionSpec("a/b", 0, {})]),
    lambda h: h.open_partitions([PartitionSpec("t", 0, {"retention.ms": 5})]),
    lambda h: h.open_partitions([PartitionSpec("t", 0, {}, initial_offset=-3)]),
    lambda h: h.seal_partitions([("t", 0)]),
    lambda h: h.delete_partitions("t"),
    lambda h: h.delete_stale_partitions([PartitionId("t", 0)], ""),
    lambda h: h.delete_stale_partitions([("t", 0)], "a" * 32),
    lambda h: h.alter_partitions([PartitionId("t", 0)], {"retention.ms": None}),
    lambda h: h.set_partition_counts({"t": 0}),
    lambda h: h.set_partition_counts({"t": True}),
    lambda h: h.open_partitions([PartitionSpec("t", 0, {})], partition_counts={"t": 0}),
    lambda h: h.open_partitions([PartitionSpec("t", 0, {})], partition_counts=[("t", 1)]),
    lambda h: h.change_partition_counts({"t": -1}),
    lambda h: h.hand_over_groups("billing"),
    lambda h: h.adopt_groups([("billing", {})]),
    lambda h: h.shutdown(0),
    lambda h: h.tiered_sealed([("t", 0)]),
    lambda h: h.covers_remote(("t", 0), [(0, 5)], True),
    lambda h: h.covers_remote(PartitionId("t", 0), [(5, 3)], True),
    lambda h: h.covers_remote(PartitionId("t", 0), [(-1, 3)], True),
    lambda h: h.covers_remote(PartitionId("t", 0), [(0, "9")], True),
    lambda h: h.covers_remote(PartitionId("t", 0), [(0, 1, 2)], True),
])
def test_bad_arguments_are_refused_before_anything_reaches_the_shard(handle, call):
    # When a call is made with arguments of the wrong type or range
    with pytest.raises(ValueError):
        call(handle)
    # Then the shard was told nothing: it serves no partition and knows no counts
    assert handle.actor._manifest.partitions == {}
    assert handle.actor._manifest.partition_counts == {}


def test_a_shard_without_tiered_storage_holds_nothing_wholly_remote_and_covers_nothing(handle):
    # Given a shard without --tier-url holding a sealed partition with records
    handle.open_partitions([PartitionSpec("t", 0, {})]).result()
    produce(handle.actor.address(), "t", 0, [b"a", b"b", b"c"])
    handle.seal_partitions([PartitionId("t", 0)]).result()
    # When the controller asks about it, and about a partition the shard does not hold
    states = handle.tiered_sealed([PartitionId("t", 0), PartitionId("u", 1)]).result()
    covered = handle.covers_remote(PartitionId("t", 0), [(0, 3), (3, 3)], True).result()
    # Then neither is wholly remote (not an error), with their offsets, and nothing is
    # covered, not even an empty interval: the shard has no remote log at all
    assert states == [TieredState(PartitionId("t", 0), False, 0, 3),
                      TieredState(PartitionId("u", 1), False, 0, 0)]
    assert covered == [False, False]
    assert handle.covers_remote(PartitionId("u", 1), [(0, 3)], True).result() == [False]


def test_an_error_the_shard_raises_is_raised_as_it_is(handle):
    # Given a partition the shard does not have
    call = handle.partition_infos([PartitionId("t", 9)])
    # Then its error comes back unchanged
    with pytest.raises(UnavailableError, match="partition t-9 is not on shard-0"):
        call.result()


def test_a_dead_actor_is_unavailable_naming_the_shard_and_the_call(handle):
    # Given a shard actor that died
    handle.kill()
    # When it is called, Then the error says which shard did not run which call
    with pytest.raises(UnavailableError, match="shard-0 is down or restarting; group_names"):
        handle.group_names().result()


def test_an_actor_ray_is_restarting_is_shard_restarting_and_a_dead_one_is_only_unavailable():
    # Given the errors Ray reports for an actor restarting and for one that died
    restarting = PendingCall("shard-1", "data_dir", answered(
        error=ray.exceptions.ActorUnavailableError("The actor is restarting.", None)))
    died = PendingCall("shard-1", "data_dir", answered(error=ray.exceptions.ActorDiedError()))
    # Then the first is ShardRestartingError (an unavailable error, retriable as any),
    # naming the shard and the call; the second is not
    with pytest.raises(ShardRestartingError, match="shard-1 is restarting or unreachable for "
                                                   "now; data_dir may or may not have run"):
        restarting.result()
    with pytest.raises(UnavailableError) as raised:
        died.result()
    assert not isinstance(raised.value, ShardRestartingError)


def test_an_unexpected_failure_is_an_internal_error_naming_the_shard_and_the_call():
    call = PendingCall("shard-3", "stats", answered(error=KeyError("logs")))
    with pytest.raises(InternalError, match="shard-3 failed in stats: KeyError"):
        call.result()


def test_an_error_ray_carries_from_the_shard_is_unwrapped():
    # Given the error Ray reports for a BrokerError raised in the actor
    cause = UnknownTopicError("unknown topic 'x'")
    wrapped = ray.exceptions.RayTaskError("open_partitions", "traceback", cause).as_instanceof_cause()
    # Then the caller gets the shard's own error
    with pytest.raises(UnknownTopicError, match="unknown topic 'x'"):
        PendingCall("shard-0", "open_partitions", answered(error=wrapped)).result()


def test_a_call_not_answered_in_time_times_out_naming_the_shard_and_the_bound():
    call = PendingCall("shard-1", "address", concurrent.futures.Future())
    with pytest.raises(RequestTimedOutError, match="shard-1 did not answer address within 0.05 s"):
        call.result(0.05)


def test_wait_all_waits_once_for_all_calls_and_reports_each_outcome():
    # Given one answered call, one failed and two that never answer
    calls = {"a": PendingCall("a", "stats", answered({"ok": 1})),
             "b": PendingCall("b", "stats", answered(error=ray.exceptions.ActorDiedError())),
             "c": PendingCall("c", "stats", concurrent.futures.Future()),
             "d": PendingCall("d", "stats", concurrent.futures.Future())}
    # When they are waited for with a bound of 0.2 s
    started = time.monotonic()
    outcomes = wait_all(calls, 0.2)
    # Then the bound held for all of them together, and each key has its outcome
    assert time.monotonic() - started < 0.35
    assert outcomes["a"] == {"ok": 1}
    assert isinstance(outcomes["b"], UnavailableError)
    assert isinstance(outcomes["c"], RequestTimedOutError)
    assert isinstance(outcomes["d"], RequestTimedOutError)


def test_wait_all_or_raise_returns_every_result_or_raises_the_first_error():
    ok = {"a": PendingCall("a", "group_names", answered(["g"])),
          "b": PendingCall("b", "group_names", answered([]))}
    assert wait_all_or_raise(ok, 1) == {"a": ["g"], "b": []}
    failing = {**ok, "c": PendingCall("c", "group_names", answered(error=UnknownTopicError("t")))}
    with pytest.raises(UnknownTopicError):
        wait_all_or_raise(failing, 1)


# --- TierOptions: the server's tiered-storage options, as every shard gets them ----------

def test_tier_options_default_to_no_tiered_storage_and_the_default_cache():
    tier = TierOptions()
    assert not tier.enabled and tier.cache_bytes == limits.TIER_CACHE_BYTES_DEFAULT
    assert ShardOptions("shard-0", "d", "always", 5, "node").tier == tier
    tier.check()


def test_tier_options_name_their_store_without_its_credentials():
    assert TierOptions().store is None
    assert TierOptions("s3://AKIA:s3cr3t@bucket/plinth/?token=s3cr3t").store == "s3://bucket/plinth"


@pytest.mark.parametrize("url, cache_bytes, message", [
    ("", limits.TIER_CACHE_BYTES_DEFAULT, "tier URL of 0 bytes: 1 to 2048"),
    ("s3://b/" + "x" * 2042, limits.TIER_CACHE_BYTES_DEFAULT, "tier URL of 2049 bytes"),
    ("file:///t", limits.TIER_CACHE_BYTES_MIN - 1, f"tier cache of {limits.TIER_CACHE_BYTES_MIN - 1} bytes"),
    ("file:///t", True, "tier cache of True bytes"),
    (None, limits.TIER_CACHE_BYTES_MAX + 1, f"{limits.TIER_CACHE_BYTES_MIN}..{limits.TIER_CACHE_BYTES_MAX}"),
])
def test_tier_options_outside_their_limits_are_a_programmer_error_the_shard_refuses(
        url, cache_bytes, message, tmp_path):
    tier = TierOptions(url, cache_bytes)
    with pytest.raises(ValueError, match=message):
        tier.check()
    # And a shard server given them does not start
    with pytest.raises(ValueError, match=message):
        ShardServer("shard-0", tmp_path / "shard-0", tier=tier)
