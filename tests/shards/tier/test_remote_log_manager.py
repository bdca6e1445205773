"""The shard's uploader (shards/tier/remote_log_manager.py) on a real ShardServer with real
sockets and a real store (file:// and moto's S3): segments go up with their manifests,
local retention drops only uploaded segments, a store that is down stops nothing but
the uploads, a crash in the middle of an upload is cleaned up, total retention and
topic deletion remove remote objects."""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from plinth import limits
from plinth.errors import RemoteObjectNotFoundError
from plinth.format.record_batch import BatchBuilder, summarize_batch
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_calls import Leadership, PartitionId, TieredState, TierOptions
from plinth.shards.shard_server import ShardServer
from plinth.shards.tier.remote_log_manager import DELETIONS_DIR, STRANDED_DELETIONS_STAT
from plinth.shards.tier.remote_log_metadata import RemoteLogMetadata
from plinth.shards.tier.remote_segment import LOG, partition_prefix
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import LocalSegment, list_remote_segments, upload_segment
from plinth.shards.tier.store_claim import claim_key, claim_store, new_start
from tests.moto_s3 import MotoS3
from tests.shards.tier.tiered_shard import TOPIC_ID
from tests.shard_requests import fetch_values, produce
from tests.support import wait_until

VALUE_BYTES = 1000
SEGMENT_BYTES = limits.SEGMENT_BYTES_MIN   # 4 KiB: a few batches per segment
WAIT_S = 60


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tiered(**settings) -> LogConfig:
    """A tiered topic's log config with small segments; everything kept unless told."""
    return LogConfig(segment_bytes_max=SEGMENT_BYTES, remote_storage_enable=True,
                     index_interval_bytes=1024, **settings)


class Nudges:
    """A controller that only records the shards' tiering_changed nudges (any thread)."""

    def __init__(self):
        self.shards: list[str] = []   # (list.append is atomic)

    def tiering_changed(self, shard_id: str) -> None:
        self.shards.append(shard_id)


@contextmanager
def running_shard(directory, url: str, log_config: LogConfig | None = None,
                  controller: Nudges | None = None):
    """A started ShardServer with --tier-url ``url``, serving t-0 if ``log_config``;
    ``controller`` is nudged when tiering changes."""
    server = ShardServer("shard-tier", directory, "127.0.0.1", tier=TierOptions(url=url),
                         controller=controller)
    server.start()
    try:
        if log_config is not None:
            server.call(lambda: server.open_partition("t", 0, log_config, topic_id=TOPIC_ID))
        yield server
    finally:
        server.stop(10)


def produce_values(server: ShardServer, count: int, start: int = 0) -> list[bytes]:
    """``count`` batches of one VALUE_BYTES value each; returns the values."""
    values = [f"{n:08d}".encode().ljust(VALUE_BYTES, b"v") for n in range(start, start + count)]
    for value in values:
        produce(server.address, "t", 0, [value])
    return values


def local_segments(server: ShardServer) -> list[tuple[int, int]]:
    """(base offset, end offset) of t-0's local segments, oldest first."""
    def on_loop():
        return [(s.base_offset, s.end_offset) for s in server._partitions[("t", 0)].log.segments]
    return server.call(on_loop)


def tiered_state(server: ShardServer, topic: str = "t") -> TieredState:
    """What the shard says of its sealed copy of ``topic``-0 (ShardServer.tiered_sealed)."""
    return server.call(server.tiered_sealed, [PartitionId(topic, 0)])[0]


def tier_stats(server: ShardServer) -> dict:
    return server.call(server.stats_snapshot)["tier"].get(("t", 0), {})


def read_from(server: ShardServer, offset: int, end_offset: int) -> list[bytes]:
    """The values of t-0 from ``offset`` to ``end_offset``, fetch after fetch (a remote
    read answers at most one segment's entries)."""
    values: list[bytes] = []
    for _ in range(end_offset - offset + 1):   # every fetch returns at least one record
        if offset + len(values) >= end_offset:
            break
        values += fetch_values(server.address, "t", 0, offset + len(values))
    return values


def listed(store, topic: str, partition: int):
    """list_remote_segments, again if a manifest vanished between the listing and its
    read (the uploader's total retention deletes while the test looks)."""
    for _ in range(5):
        try:
            return list_remote_segments(store, topic, TOPIC_ID, partition)
        except RemoteObjectNotFoundError:
            continue
    return list_remote_segments(store, topic, TOPIC_ID, partition)


def remote_ranges(store) -> list[tuple[int, int]]:
    return [(s.base_offset, s.end_offset) for s in listed(store, "t", 0)]


def uploaded_up_to(store, end_offset: int) -> bool:
    ranges = remote_ranges(store)
    return bool(ranges) and ranges[-1][1] >= end_offset


def orphans(store) -> set[str]:
    """Objects of t-0 that no manifest names (a half-done upload or deletion)."""
    named = set()
    for segment in listed(store, "t", 0):
        named.add(segment.manifest_key)
        named.update(segment.object_key(kind) for kind in segment.objects)
    return {info.key for info in store.list(partition_prefix("t", TOPIC_ID, 0))} - named


# --- Uploading ---------------------------------------------------------------------------

def test_rolled_segments_appear_in_the_store_with_manifests_and_the_exact_local_bytes(
        tmp_path, tier_url):
    # Given a shard uploading a tiered topic with 4 KiB segments
    with running_shard(tmp_path / "shard", tier_url, tiered()) as server:
        store = open_remote_store(tier_url)
        # When 20 KB is produced (several rolled segments)
        produce_values(server, 20)
        rolled = local_segments(server)[:-1]
        assert len(rolled) >= 3
        # Then every rolled segment appears in the store, oldest first, as a prefix
        wait_until(lambda: uploaded_up_to(store, rolled[-1][1]), timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}, local {rolled}")
        assert remote_ranges(store)[:len(rolled)] == rolled
        # And each .log object is the local file's bytes exactly, with no stray objects
        directory = tmp_path / "shard" / "t-0"
        for segment in listed(store, "t", 0):
            local = (directory / f"{segment.base_offset:020d}.log").read_bytes()
            assert bytes(store.get(segment.object_key(LOG))) == local
        assert orphans(store) == set()
        # And the counters and the partition's view say so
        stats = tier_stats(server)
        assert stats["uploads"] >= len(rolled) and stats["upload_errors"] == 0
        assert stats["remote_segments"] >= len(rolled)
        assert stats["remote_end_offset"] >= rolled[-1][1]
        # And the active segment is never uploaded
        assert remote_ranges(store)[-1][1] <= local_segments(server)[-1][0]


def test_every_uploaded_segment_carries_the_producer_snapshot_that_follows_it(tmp_path):
    # Given a shard uploading a tiered topic to a file store
    url = f"file://{tmp_path}/store"
    with running_shard(tmp_path / "shard", url, tiered()) as server:
        store = open_remote_store(url)
        # When segments roll and the last rolled one is uploaded
        produce_values(server, 12)
        rolled = local_segments(server)[:-1]
        wait_until(lambda: uploaded_up_to(store, rolled[-1][1]), timeout_s=WAIT_S)
    # Then each uploaded segment has a producers object naming its end
    uploaded = listed(store, "t", 0)
    assert len(uploaded) == len(rolled) > 1
    for segment in uploaded:
        assert "producers" in segment.objects, segment.describe()
        assert b'"base_offset": %d' % segment.end_offset in bytes(
            store.get(segment.object_key("producers")))


# --- Local retention ---------------------------------------------------------------------

def test_local_retention_deletes_only_segments_the_store_holds(tmp_path, tier_url):
    # Given a tiered topic whose local retention is 0 bytes
    with running_shard(tmp_path / "shard", tier_url, tiered(local_retention_bytes=0)) as server:
        store = open_remote_store(tier_url)
        # When several segments are produced and uploaded
        values = produce_values(server, 20)
        end_offset = len(values)
        # Then the local log shrinks to the active segment (and at most one waiting)
        wait_until(lambda: len(local_segments(server)) <= 2, timeout_s=WAIT_S,
                   explain=lambda: f"local {local_segments(server)}, remote {remote_ranges(store)}")
        local = local_segments(server)
        # And every offset the disk dropped is in the store, without a gap
        ranges = remote_ranges(store)
        assert ranges[0][0] == 0
        assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
        assert ranges[-1][1] >= local[0][0]
        # And the whole log reads, from offset 0: the dropped part from the store
        # (the remote reader, remote_fetcher.py), the tail from the disk
        assert local[-1][1] == end_offset
        assert read_from(server, 0, end_offset) == values
        # And the partition's log start offset is the remote one
        info = server.call(lambda: server._partitions[("t", 0)].log_start_offset)
        assert info == 0


def test_a_segment_never_uploaded_is_never_deleted_even_past_total_retention(tmp_path):
    # Given a tiered topic with 1 ms of retention, whose store cannot be reached
    unreachable = MotoS3()   # never started: its port refuses connections
    with pytest.MonkeyPatch.context() as patch:
        for key, value in unreachable.env.items():
            patch.setenv(key, value)
        config = tiered(retention_ms=1, local_retention_ms=1)
        with running_shard(tmp_path / "shard", unreachable.url(), config) as server:
            # When segments roll and uploads fail, and retention passes run
            produce_values(server, 12)
            segments = local_segments(server)
            wait_until(lambda: tier_stats(server).get("upload_errors", 0) >= 1,
                       timeout_s=WAIT_S)
            server.call(server._enforce_retention)
            # Then no local segment was deleted, and the backlog is counted
            assert local_segments(server) == segments
            stats = tier_stats(server)
            assert stats["uploads"] == 0 and stats["upload_lag_bytes"] > 0
            assert stats["upload_lag_s"] >= 0


# --- Object storage unavailable ---------------------------------------------------------------

def test_with_the_store_down_produce_works_nothing_is_deleted_and_the_backlog_uploads_after(
        tmp_path, stopped_moto):
    # Given a shard uploading to an S3 server that is down
    moto, url = stopped_moto
    config = tiered(local_retention_bytes=0)
    with running_shard(tmp_path / "shard", url, config) as server:
        # When records are produced while it is down
        values = produce_values(server, 16)
        wait_until(lambda: tier_stats(server).get("upload_errors", 0) >= 1,
                   timeout_s=WAIT_S)
        # Then the produces were taken, the tail reads, and nothing was deleted locally
        segments = local_segments(server)
        assert segments[0][0] == 0 and segments[-1][1] == len(values)
        assert fetch_values(server.address, "t", 0, 0)[0] == values[0]
        # When the server comes back
        moto.start()
        store = open_remote_store(url)
        # Then the backlog uploads and local retention follows
        rolled_end = segments[-2][1]
        wait_until(lambda: uploaded_up_to(store, rolled_end), timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)} {tier_stats(server)}")
        wait_until(lambda: local_segments(server)[0][0] > 0, timeout_s=WAIT_S)
        assert remote_ranges(store)[0][0] == 0
        assert orphans(store) == set()


def test_with_a_file_stores_directory_away_uploads_wait_and_create_nothing(tmp_path):
    # Given a shard uploading to a file:// store whose directory is moved away (as a
    # network share that is unmounted)
    url = f"file://{tmp_path}/store"
    with running_shard(tmp_path / "shard", url, tiered(local_retention_bytes=0)) as server:
        (tmp_path / "store").rename(tmp_path / "away")
        # When records are produced
        values = produce_values(server, 16)
        wait_until(lambda: tier_stats(server).get("upload_errors", 0) >= 1, timeout_s=WAIT_S)
        # Then the uploads fail (retried), nothing is deleted locally, and no directory
        # was created where the store was: the store is not split in two
        assert not (tmp_path / "store").exists()
        segments = local_segments(server)
        assert segments[0][0] == 0 and segments[-1][1] == len(values)
        # When the directory is back, Then the backlog uploads into it
        (tmp_path / "away").rename(tmp_path / "store")
        store = open_remote_store(url)
        wait_until(lambda: uploaded_up_to(store, segments[-2][1]), timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)} {tier_stats(server)}")
        assert remote_ranges(store)[0][0] == 0


def test_a_sealed_partitions_last_segment_is_uploaded_too(tmp_path):
    # Given a tiered partition whose last segment holds records and never filled up
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    with running_shard(tmp_path / "shard", url, tiered(local_retention_bytes=0)) as server:
        values = produce_values(server, 10)
        assert local_segments(server)[-1][0] < len(values)   # the active one holds some
        # When its writes move to another shard (it is sealed at its end)
        assert server.call(server.seal_partition, "t", 0)[0] == len(values)
        # Then every record is in the store, the last segment's too, and it still reads
        wait_until(lambda: uploaded_up_to(store, len(values)), timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}, local {local_segments(server)}")
        assert remote_ranges(store)[0][0] == 0
        wait_until(lambda: local_segments(server)[0][0] == len(values), timeout_s=WAIT_S)
        assert read_from(server, 0, len(values)) == values


# --- A sealed partition wholly in object storage (a draining shard's range) -----------------

def test_a_sealed_partition_is_wholly_remote_only_after_its_last_segment_uploads(
        tmp_path, stopped_moto):
    # Given a tiered partition t-0 whose last segment holds records, an untiered u-0,
    # and a store that is down
    moto, url = stopped_moto
    nudges = Nudges()
    with running_shard(tmp_path / "shard", url, tiered(local_retention_bytes=0),
                       controller=nudges) as server:
        server.call(lambda: server.open_partition("u", 0, LogConfig(
            segment_bytes_max=SEGMENT_BYTES), topic_id=TOPIC_ID))
        values = produce_values(server, 10)
        produce(server.address, "u", 0, [b"u"])
        # While it takes writes, it is not wholly remote
        assert tiered_state(server) == TieredState(PartitionId("t", 0), False, 0, 10)
        # When both are sealed while the store is down
        server.call(server.seal_partition, "t", 0)
        server.call(server.seal_partition, "u", 0)
        wait_until(lambda: tier_stats(server).get("upload_errors", 0) >= 1,
                   timeout_s=WAIT_S)
        # Then t-0 is not wholly remote (its uploads wait), and nobody is nudged
        assert not tiered_state(server).wholly_remote and nudges.shards == []
        # When the store is back
        moto.start()
        store = open_remote_store(url)
        # Then once every record is in the store, the last segment's too, it is,
        # from its log start 0 to its end, and the controller is nudged once
        wait_until(lambda: tiered_state(server).wholly_remote, timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}, local "
                                   f"{local_segments(server)}, {tier_stats(server)}")
        assert remote_ranges(store)[0][0] == 0 and uploaded_up_to(store, len(values))
        assert tiered_state(server) == TieredState(PartitionId("t", 0), True, 0, 10)
        wait_until(lambda: nudges.shards, timeout_s=WAIT_S)
        assert nudges.shards == ["shard-tier"]
        # And the untiered sealed partition never is
        assert tiered_state(server, "u") == TieredState(PartitionId("u", 0), False, 0, 1)


def test_a_sealed_partition_whose_topic_is_tiered_later_uploads_its_last_segment_too(tmp_path):
    # Given an untiered partition sealed with records in its last segment (not rolled)
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    untiered = LogConfig(segment_bytes_max=SEGMENT_BYTES, index_interval_bytes=1024)
    with running_shard(tmp_path / "shard", url, untiered) as server:
        values = produce_values(server, 10)
        server.call(server.seal_partition, "t", 0)
        assert local_segments(server)[-1][1] == len(values) > local_segments(server)[-1][0]
        # When its topic becomes tiered
        server.call(server.set_log_config, "t", 0, tiered(local_retention_bytes=0))
        # Then its last segment rolled, every record goes up, and it is wholly remote
        wait_until(lambda: tiered_state(server).wholly_remote, timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}, local {local_segments(server)}")
        assert remote_ranges(store)[0][0] == 0 and uploaded_up_to(store, len(values))
        assert read_from(server, 0, len(values)) == values


class RefusingController(Nudges):
    """A controller that is gone: every nudge fails (as a dead Ray actor's call would)."""

    def tiering_changed(self, shard_id: str) -> None:
        super().tiering_changed(shard_id)
        raise ConnectionError("the controller is gone")


def test_a_nudge_the_controller_cannot_take_is_logged_and_uploads_go_on(tmp_path, caplog):
    # Given a shard whose controller refuses every nudge
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    controller = RefusingController()
    caplog.set_level("WARNING", logger="plinth.shards.tier.remote_log_manager")
    with running_shard(tmp_path / "shard", url, tiered(), controller=controller) as server:
        # When a sealed partition turns wholly remote, and the nudge fails
        produce_values(server, 6)
        server.call(server.seal_partition, "t", 0)
        wait_until(lambda: controller.shards, timeout_s=WAIT_S)
        # Then the failure is logged, naming the partition and why
        wait_until(lambda: any("could not tell the controller that t-0 is wholly remote"
                               in r.getMessage() for r in caplog.records), timeout_s=WAIT_S)
        # And the uploader still uploads another partition's segments
        server.call(lambda: server.open_partition("u", 0, tiered(), topic_id=TOPIC_ID))
        for n in range(8):
            produce(server.address, "u", 0, [f"{n:08d}".encode().ljust(VALUE_BYTES, b"v")])
        wait_until(lambda: listed(store, "u", 0), timeout_s=WAIT_S)
        assert tiered_state(server).wholly_remote and controller.shards == ["shard-tier"]


# --- A crash in the middle of an upload ----------------------------------------------------

class Crash(Exception):
    """Stands for the shard dying between an upload's data objects and its manifest."""


def test_a_restart_after_an_upload_started_cleans_it_up_and_uploads_again(tmp_path):
    # Given a partition log with rolled segments and a journal whose upload of the first
    # one started, wrote its data objects and never wrote its manifest
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    directory = tmp_path / "shard" / "t-0"
    part = Partition.open(directory, "t", 0, tiered())
    part.set_topic_id(TOPIC_ID)   # as the shard that wrote it says whose it is
    for n in range(8):
        builder = BatchBuilder()
        builder.append(None, f"{n:08d}".encode().ljust(VALUE_BYTES, b"v"), now_ms())
        batch = builder.build()
        part.append(batch, summarize_batch(batch))
    part.log.flush()
    first = part.log.segments[0]
    metadata, _ = RemoteLogMetadata.open(directory)

    def crash(segment):
        raise Crash(segment.segment_id)
    with pytest.raises(Crash) as crashed:
        upload_segment(store, metadata, LocalSegment.of(
            first, topic="t", topic_id=TOPIC_ID, partition=0, leader_epochs=part.leader_epochs),
            before_manifest=crash)
    started_id = str(crashed.value)
    metadata.close()
    rolled = [(s.base_offset, s.end_offset) for s in part.log.segments[:-1]]
    part.log.close()
    assert any(started_id in info.key for info in store.list(partition_prefix("t", TOPIC_ID, 0)))
    # When the shard starts with the partition
    with running_shard(tmp_path / "shard", url, tiered()):
        # Then the half-done upload's objects are gone and every rolled segment is up
        wait_until(lambda: uploaded_up_to(store, rolled[-1][1]), timeout_s=WAIT_S)
        assert remote_ranges(store) == rolled
        assert not any(started_id in info.key for info in store.list(partition_prefix("t", TOPIC_ID, 0)))
        assert orphans(store) == set()


# --- Total retention, on the remote log ---------------------------------------------------

def test_segments_the_store_lost_are_an_error_naming_them_and_counted_at_the_restart(
        tmp_path, caplog):
    # Given a tiered partition whose rolled segments went up, none due for retention,
    # and then the shard stopped
    url = f"file://{tmp_path}/store"
    (tmp_path / "store").mkdir(exist_ok=True)
    store = open_remote_store(url)
    with running_shard(tmp_path / "shard", url, tiered(local_retention_bytes=0)) as server:
        produce_values(server, 12)
        wait_until(lambda: len(remote_ranges(store)) >= 3, timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}")
    uploaded = remote_ranges(store)
    # When the store loses them (a bucket emptied, a store restored from an old state)
    for info in store.list(partition_prefix("t", TOPIC_ID, 0)):
        store.delete(info.key)
    # Then the restarted shard says, as an ERROR, which were lost and that retention
    # did not delete them, and counts them
    caplog.set_level("ERROR", logger="plinth.shards.tier.remote_log_manager")
    with running_shard(tmp_path / "shard", url, tiered(local_retention_bytes=0)) as server:
        wait_until(lambda: tier_stats(server).get("remote_segments_lost", 0) > 0,
                   timeout_s=WAIT_S, explain=lambda: f"tier stats {tier_stats(server)}")
        lost = tier_stats(server)["remote_segments_lost"]
    assert lost >= len(uploaded)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"t-0: {lost} remote segments the journal recorded as uploaded are gone from "
               f"{url}" in message and "would not have deleted them (offsets 0 to" in message
               for message in errors), errors


def test_total_retention_deletes_the_oldest_remote_segments(tmp_path, tier_url):
    # Given a tiered topic that keeps 8 KB in all, of which nothing locally beyond need
    config = tiered(retention_bytes=2 * SEGMENT_BYTES, local_retention_bytes=0)
    with running_shard(tmp_path / "shard", tier_url, config) as server:
        store = open_remote_store(tier_url)
        # When many segments are produced
        produce_values(server, 30)
        # Then the oldest remote segments are deleted, and what stays is a whole suffix
        def trimmed():
            ranges = remote_ranges(store)   # one listing: it may change between two
            return ranges and ranges[0][0] > 0
        wait_until(trimmed, timeout_s=WAIT_S, explain=lambda: f"remote {remote_ranges(store)}")
        local = local_segments(server)   # asked once: local retention may drop one meanwhile
        rolled_end = local[-2][1] if len(local) > 1 else None

        def settled():
            # Every rolled segment went up, total retention is done with the last one
            # (its deletions leave no object behind), and the store holds retention.bytes
            # and at most one segment more.
            segments = listed(store, "t", 0)
            return (segments and (rolled_end is None or segments[-1].end_offset >= rolled_end)
                    and sum(s.size_bytes for s in segments) <= 3 * SEGMENT_BYTES
                    and orphans(store) == set())
        wait_until(settled, timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}, orphans {orphans(store)}")
        # And the partition's log start offset follows the remote log's
        wait_until(lambda: server.call(lambda: server._partitions[("t", 0)].log_start_offset)
                   == listed(store, "t", 0)[0].base_offset, timeout_s=WAIT_S)


def test_delete_records_deletes_the_remote_segments_wholly_below_the_new_log_start(
        tmp_path, tier_url):
    # Given a tiered topic without total retention whose rolled segments went up
    config = tiered(retention_bytes=-1, local_retention_bytes=0)
    with running_shard(tmp_path / "shard", tier_url, config) as server:
        store = open_remote_store(tier_url)
        produce_values(server, 30)
        wait_until(lambda: len(remote_ranges(store)) >= 3, timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}")
        ranges = remote_ranges(store)
        # When the records below the middle of the third remote segment are deleted
        new_start = ranges[2][0] + 1
        server.call(lambda: server._partitions[("t", 0)].delete_records(new_start))
        # Then the two segments wholly below it leave the store (their records are never
        # served again), whole (no object of theirs left), and the one holding the new
        # start stays
        wait_until(lambda: remote_ranges(store)[0] == ranges[2] and orphans(store) == set(),
                   timeout_s=WAIT_S, explain=lambda: f"remote {remote_ranges(store)}, orphans "
                                                     f"{orphans(store)}, below {new_start}")


def cached_segment_ids(shard_dir) -> set[str]:
    """The segment ids of the chunks in the shard's tier cache (remote_fetcher.py)."""
    return {path.name.rpartition("-")[0] for path in (shard_dir / "tier-cache").iterdir()}


def test_remote_segments_total_retention_deletes_lose_their_cached_chunks_and_no_others(
        tmp_path, s3_url):
    # Given a tiered topic keeping nothing locally, read from offset 0 through the
    # chunk cache of a cloud store
    shard_dir = tmp_path / "shard"
    with running_shard(shard_dir, s3_url, tiered(local_retention_bytes=0)) as server:
        store = open_remote_store(s3_url)
        values = produce_values(server, 30)
        wait_until(lambda: len(local_segments(server)) <= 2, timeout_s=WAIT_S,
                   explain=lambda: f"local {local_segments(server)}, remote {remote_ranges(store)}")
        assert read_from(server, 0, len(values)) == values
        cached = cached_segment_ids(shard_dir)
        assert len(cached) >= 4, cached
        # When total retention shrinks to 3 segments and deletes the oldest remote ones
        def shrink():
            part = server._partitions[("t", 0)]
            server.set_log_config("t", 0, tiered(local_retention_bytes=0,
                                                 retention_bytes=3 * SEGMENT_BYTES))
            return part.log.config.retention_bytes
        assert server.call(shrink) == 3 * SEGMENT_BYTES
        wait_until(lambda: len(cached - {s.segment_id for s in listed(store, "t", 0)}) >= 2,
                   timeout_s=WAIT_S, explain=lambda: f"remote {remote_ranges(store)}")
        # Then the chunks of the deleted segments leave the cache, and the others stay
        def settled():
            kept = {s.segment_id for s in listed(store, "t", 0)}
            return cached_segment_ids(shard_dir) == cached & kept and kept
        wait_until(settled, timeout_s=WAIT_S,
                   explain=lambda: f"cached {sorted(cached_segment_ids(shard_dir))}, remote "
                                   f"{sorted(s.segment_id for s in listed(store, 't', 0))}")
        assert cached_segment_ids(shard_dir)


# --- Topic deletion ---------------------------------------------------------------------------

def test_deleting_the_topic_deletes_its_remote_objects(tmp_path, tier_url):
    # Given a tiered partition with uploaded segments
    with running_shard(tmp_path / "shard", tier_url, tiered()) as server:
        store = open_remote_store(tier_url)
        produce_values(server, 12)
        rolled = local_segments(server)[:-1]
        wait_until(lambda: uploaded_up_to(store, rolled[-1][1]), timeout_s=WAIT_S)
        # When the topic is deleted
        assert server.call(server.delete_partition, "t", 0)
        # Then every object of the partition goes, and nothing is left pending
        wait_until(lambda: not store.list(partition_prefix("t", TOPIC_ID, 0)), timeout_s=WAIT_S,
                   explain=lambda: f"left {[i.key for i in store.list(partition_prefix('t', TOPIC_ID, 0))]}")
        wait_until(lambda: not any((tmp_path / "shard" / DELETIONS_DIR).iterdir()),
                   timeout_s=WAIT_S)
        assert not (tmp_path / "shard" / "t-0").exists()


def test_dropping_a_copy_of_a_partition_keeps_its_remote_objects(tmp_path, tier_url):
    # Given a tiered partition with uploaded segments (its owner may be another shard)
    with running_shard(tmp_path / "shard", tier_url, tiered()) as server:
        store = open_remote_store(tier_url)
        produce_values(server, 12)
        rolled = local_segments(server)[:-1]
        wait_until(lambda: uploaded_up_to(store, rolled[-1][1]), timeout_s=WAIT_S)
        uploaded = sorted(info.key for info in store.list(partition_prefix("t", TOPIC_ID, 0)))
        # When only this shard's copy is dropped (a pruned range, a replica moved away)
        assert server.call(server.delete_partition, "t", 0, True)
        # Then the copy is gone, no deletion of its remote log was recorded, and every
        # object is still in the store
        assert not (tmp_path / "shard" / "t-0").exists()
        deletions = tmp_path / "shard" / DELETIONS_DIR
        assert not deletions.exists() or not any(deletions.iterdir())
        assert sorted(info.key for info in store.list(partition_prefix("t", TOPIC_ID, 0))) \
            == uploaded


def a_pending_deletion(tmp_path) -> tuple[str, object, Path]:
    """(url, store, the shard's deletions directory): a tiered partition's segments are
    uploaded to a file store, then the topic is deleted while the store's directory is
    away (unreachable, as an unmounted share), and the shard stops: its deletion is
    pending on disk, every object still in the store."""
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    with running_shard(tmp_path / "shard", url, tiered()) as server:
        produce_values(server, 12)
        rolled = local_segments(server)[:-1]
        wait_until(lambda: uploaded_up_to(store, rolled[-1][1]), timeout_s=WAIT_S)
        (tmp_path / "store").rename(tmp_path / "away")
        server.call(server.delete_partition, "t", 0)
        pending = tmp_path / "shard" / DELETIONS_DIR
        assert len(list(pending.iterdir())) == 1
    (tmp_path / "away").rename(tmp_path / "store")
    assert store.list(partition_prefix("t", TOPIC_ID, 0))
    return url, store, pending


def test_a_topic_deletion_that_could_not_finish_finishes_after_a_restart(tmp_path):
    # Given a topic deleted while its store was unreachable, by a shard that then stopped
    url, store, pending = a_pending_deletion(tmp_path)
    # Then it was recorded with its store (no credential), and a restart with the store
    # finishes the deletion
    [record] = [json.loads((d / "deletion.json").read_text()) for d in pending.iterdir()]
    assert record["store"] == f"file://{tmp_path}/store"
    with running_shard(tmp_path / "shard", url) as server:
        assert STRANDED_DELETIONS_STAT not in server.call(server.stats_snapshot)
        wait_until(lambda: not store.list(partition_prefix("t", TOPIC_ID, 0)), timeout_s=WAIT_S)
        wait_until(lambda: not any(pending.iterdir()), timeout_s=WAIT_S)


def test_a_pending_deletion_is_not_run_on_another_store_and_the_shard_says_so(tmp_path):
    # Given a topic deleted while its store was unreachable, by a shard that then stopped
    url, store, pending = a_pending_deletion(tmp_path)
    # When the shard starts with another store, or without one
    (tmp_path / "other").mkdir()
    for other in (f"file://{tmp_path}/other", None):
        server = ShardServer("shard-tier", tmp_path / "shard", "127.0.0.1",
                             tier=TierOptions(url=other))
        server.start()
        try:
            time.sleep(0.5)   # (the uploader, if any, has looked at the deletions)
            # Then its stats name the deletion it cannot run, its store and directory
            assert server.call(server.stats_snapshot)[STRANDED_DELETIONS_STAT] == {
                "directory": str(pending),
                "stores": {f"file://{tmp_path}/store": {"count": 1, "partitions": ["t-0"]}}}
        finally:
            server.stop(10)
        # And the deletion is still pending, and every object still in its store
        assert len(list(pending.iterdir())) == 1
        assert store.list(partition_prefix("t", TOPIC_ID, 0))
    # And once started with its store, the deletion finishes
    with running_shard(tmp_path / "shard", url):
        wait_until(lambda: not any(pending.iterdir()), timeout_s=WAIT_S)
    assert not store.list(partition_prefix("t", TOPIC_ID, 0))


def test_a_pending_deletion_recorded_without_its_store_runs_on_the_store_given(tmp_path):
    # Given a pending deletion written before stores were recorded (no "store")
    url, store, pending = a_pending_deletion(tmp_path)
    [record_file] = [d / "deletion.json" for d in pending.iterdir()]
    record = json.loads(record_file.read_text())
    del record["store"]
    record_file.write_text(json.dumps(record))
    # Then a shard without a store cannot run it and says so, its store unknown ("")
    server = ShardServer("shard-tier", tmp_path / "shard", "127.0.0.1")
    server.start()
    try:
        assert server.call(server.stats_snapshot)[STRANDED_DELETIONS_STAT]["stores"] == {
            "": {"count": 1, "partitions": ["t-0"]}}
    finally:
        server.stop(10)
    # And a shard with a store runs it there (the only store it can be run in)
    with running_shard(tmp_path / "shard", url):
        wait_until(lambda: not any(pending.iterdir()), timeout_s=WAIT_S)
    assert not store.list(partition_prefix("t", TOPIC_ID, 0))


def test_a_pending_deletion_waits_while_the_stores_claim_names_another_start(tmp_path, caplog):
    # Given a topic deleted while its store was unreachable, and the store then claimed
    # by another start of the data dir (a copy that took it over)
    url, store, pending = a_pending_deletion(tmp_path)
    (tmp_path / "owner").mkdir()
    owner = new_start(tmp_path / "owner")
    claim = claim_store(store, url, tmp_path / "owner", owner, take_over=False)
    this_start = "f" * 32
    # When the shard starts, its deletions fenced by the claim of this_start
    server = ShardServer("shard-tier", tmp_path / "shard", "127.0.0.1",
                         tier=TierOptions(url=url, claim=(owner.data_dir_id, this_start)))
    server.start()
    try:
        # Then the deletion waits, saying why, and every object stays in the store
        wait_until(lambda: "TierStoreNotOwnedError" in caplog.text, timeout_s=WAIT_S)
        assert "was taken by another copy of its data dir" in caplog.text
        assert len(list(pending.iterdir())) == 1
        assert store.list(partition_prefix("t", TOPIC_ID, 0))
        # And once the claim names this start, the deletion finishes
        store.put(claim_key(owner.data_dir_id),
                  dataclasses.replace(claim, instance_id=this_start).to_bytes())
        wait_until(lambda: not any(pending.iterdir()), timeout_s=WAIT_S)
    finally:
        server.stop(10)
    assert not store.list(partition_prefix("t", TOPIC_ID, 0))


def write_log(directory, config: LogConfig, count: int) -> list[tuple[int, int]]:
    """A partition log of ``count`` one-value batches written without a shard, as a
    shard writes topic TOPIC_ID's (its partition.metadata saying so: a shard creating
    the partition sets aside a log that does not); its rolled segments' (base, end)
    offsets."""
    part = Partition.open(directory, directory.name.rpartition("-")[0], 0, config)
    part.set_topic_id(TOPIC_ID)
    for n in range(count):
        builder = BatchBuilder()
        builder.append(None, f"{n:08d}".encode().ljust(VALUE_BYTES, b"v"), now_ms())
        batch = builder.build()
        part.append(batch, summarize_batch(batch))
    rolled = [(s.base_offset, s.end_offset) for s in part.log.segments[:-1]]
    part.log.close()
    return rolled


def test_a_follower_does_not_upload_and_keeps_total_retention_locally(tmp_path):
    # Given a shard with two tiered partitions holding rolled segments: f-0, which it
    # follows, and u-0, which has its one copy here
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    config = tiered(local_retention_bytes=0)
    followed_rolled = write_log(tmp_path / "shard" / "f-0", config, 8)
    own_rolled = write_log(tmp_path / "shard" / "u-0", config, 8)
    following = Leadership(replicas=("other-shard", "shard-tier"), leader="other-shard",
                           leader_epoch=1, in_sync=("other-shard", "shard-tier"))
    with running_shard(tmp_path / "shard", url) as server:
        server.call(lambda: server.open_partition("f", 0, config, 0, False, None, following,
                                                  topic_id=TOPIC_ID))
        server.call(lambda: server.open_partition("u", 0, config, topic_id=TOPIC_ID))
        # When the uploader has uploaded the partition of one copy
        wait_until(lambda: [(s.base_offset, s.end_offset)
                            for s in listed(store, "u", 0)] == own_rolled,
                   timeout_s=WAIT_S)
        server.call(server._enforce_retention)
        # Then the followed one has nothing in the store, and keeps its local segments
        # (its local retention waits for uploads it does not make; total retention,
        # unlimited here, is what bounds a follower's disk)
        assert store.list(partition_prefix("f", TOPIC_ID, 0)) == []
        followed = server.call(lambda: [(s.base_offset, s.end_offset)
                                        for s in server._partitions[("f", 0)].log.segments])
        assert followed[:-1] == followed_rolled
        assert ("f", 0) not in server.call(server.stats_snapshot)["tier"]


def test_failed_uploads_are_counted_each_and_logged_once_per_streak(tmp_path, caplog):
    # Given a shard whose store cannot be reached, and a tiered partition with a backlog
    unreachable = MotoS3()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in unreachable.env.items():
            patch.setenv(key, value)
        write_log(tmp_path / "shard" / "t-0", tiered(), 8)
        caplog.set_level("WARNING", logger="plinth.shards.tier.remote_log_manager")
        with running_shard(tmp_path / "shard", unreachable.url(), tiered()) as server:
            # When three attempts have failed (backoff 0.5 s, then 1 s)
            wait_until(lambda: tier_stats(server).get("upload_errors", 0) >= 3,
                       timeout_s=WAIT_S)
    # Then one warning says so, naming the partition and the backoff
    warnings = [r.getMessage() for r in caplog.records if "upload of t-0 failed" in r.getMessage()]
    assert len(warnings) == 1
    assert f"({limits.REMOTE_UPLOAD_BACKOFF_MS_MIN} to {limits.REMOTE_UPLOAD_BACKOFF_MS_MAX} ms)" \
        in warnings[0]


def test_after_a_restart_the_remote_view_comes_from_the_journal_even_with_the_store_down(
        tmp_path, monkeypatch):
    # Given a tiered partition whose rolled segments were uploaded, and its local copies
    # dropped
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    with running_shard(tmp_path / "shard", url, tiered(local_retention_bytes=0)) as server:
        produce_values(server, 12)
        wait_until(lambda: local_segments(server)[0][0] > 0, timeout_s=WAIT_S)
    remote_end = remote_ranges(store)[-1][1]   # once stopped: no upload may follow
    # When the shard restarts with its store unreachable
    unreachable = MotoS3()
    for key, value in unreachable.env.items():
        monkeypatch.setenv(key, value)
    with running_shard(tmp_path / "shard", unreachable.url(), tiered(local_retention_bytes=0)) \
            as server:
        # Then the partition knows its remote log again, from offset 0
        def remote_view():
            remote = server._partitions[("t", 0)].remote
            return remote.log_start_offset, remote.end_offset
        wait_until(lambda: server.call(remote_view) == (0, remote_end), timeout_s=WAIT_S)
        assert server.call(lambda: server._partitions[("t", 0)].log_start_offset) == 0


def test_a_reopened_partition_knows_its_remote_log_before_it_serves_its_first_fetch(tmp_path):
    # Given a tiered partition whose first segments are only in the store
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    config = tiered(local_retention_bytes=0)
    with running_shard(tmp_path / "shard", url, config) as server:
        values = produce_values(server, 12)
        wait_until(lambda: local_segments(server)[0][0] > 0, timeout_s=WAIT_S)
    remote_end = remote_ranges(store)[-1][1]   # once stopped: no upload may follow
    # When the shard restarts and opens it, and in the same turn of its loop (before
    # the uploader could publish anything) is asked where the partition starts
    with running_shard(tmp_path / "shard", url) as server:
        def open_and_look():
            server.open_partition("t", 0, config, topic_id=TOPIC_ID)
            part = server._partitions[("t", 0)]
            return part.log_start_offset, part.remote.end_offset
        # Then it starts at 0, not at the local start: the journal says what is remote
        assert server.call(open_and_look) == (0, remote_end)
        # And a fetch from 0 reads the remote records
        assert read_from(server, 0, 12) == values


def test_the_uploader_judges_a_segment_uploaded_by_coverage_as_the_loop_does(tmp_path):
    # Given remote segments [0,5) of this shard and [10,20) adopted from another, and a
    # local segment [5,10) in the hole between them (below the remote end)
    from plinth.shards.tier.remote_log_manager import _beyond
    from tests.shards.tier.test_remote_log_metadata import remote_segment, uploaded
    metadata, _ = RemoteLogMetadata.open(tmp_path)
    uploaded(metadata, remote_segment(0, 5), remote_segment(10, 20))

    def local(base_offset, end_offset):
        return LocalSegment(topic="t", topic_id=TOPIC_ID, partition=0, base_offset=base_offset,
                            end_offset=end_offset, max_timestamp_ms=0, leader_epoch=0,
                            log_path=tmp_path, index_path=tmp_path, time_index_path=tmp_path,
                            leader_epochs=b"")
    # Then the uploader uploads it (it skipped it, and the loop chose it again forever)
    assert _beyond(metadata, local(5, 10))
    # And skips what is covered, and not what reaches past the end
    assert not _beyond(metadata, local(10, 20)) and not _beyond(metadata, local(0, 5))
    assert _beyond(metadata, local(15, 25))
    metadata.close()
