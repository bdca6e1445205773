"""A shard that takes a tiered partition over knows its remote log, and topic ids keep a
deleted topic's segments from a topic created again under its name
(shards/tier/remote_log_manager.py, remote_transfer.sync_with_store): a real
ShardServer, real sockets, a real store (file://, and moto's S3 stopped and started)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import pytest

from plinth import limits, topics
from plinth.shards.leader_epochs import LeaderEpochs
from plinth.shards.partition import Partition
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.shard_calls import Leadership
from plinth.shards.tier.remote_log_manager import DELETIONS_DIR
from plinth.shards.tier.remote_log_metadata import JOURNAL_FILE, RemoteLogMetadata
from plinth.shards.tier.remote_segment import partition_prefix
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import (
    LocalSegment, delete_segment, list_remote_segments, upload_segment)
from tests.moto_s3 import MotoS3
from tests.shard_requests import fetch_values
from tests.shards.tier.test_remote_log_manager import (
    VALUE_BYTES, WAIT_S, Nudges, local_segments, produce_values, read_from, running_shard,
    tiered, tiered_state, write_log)
from tests.shards.tier.tiered_shard import TOPIC_ID
from tests.support import wait_until


def ranges_of(store, topic_id: str) -> list[tuple[int, int]]:
    return [(s.base_offset, s.end_offset) for s in list_remote_segments(store, "t", topic_id, 0)]


def upload_as_another_leader(store, directory, count: int, metadata_dir) -> list:
    """Upload the first ``count`` rolled segments of the log in ``directory`` as another
    shard would have (its own journal in ``metadata_dir``); the segments uploaded."""
    part = Partition.open(directory, "t", 0, tiered())
    metadata, _ = RemoteLogMetadata.open(metadata_dir)
    try:
        return [upload_segment(store, metadata, LocalSegment.of(
            segment, topic="t", topic_id=TOPIC_ID, partition=0, leader_epochs=LeaderEpochs()))
            for segment in part.log.segments[:count]]
    finally:
        metadata.close()
        part.log.close()


def test_a_new_leader_adopts_the_segments_another_uploaded_and_uploads_only_past_them(tmp_path):
    # Given a partition log with rolled segments, the first three of which another
    # leader uploaded, and a shard with the same log but no journal (a new leader)
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    directory = tmp_path / "shard" / "t-0"
    rolled = write_log(directory, tiered(), 20)
    assert len(rolled) >= 5
    theirs = upload_as_another_leader(store, directory, 3, tmp_path / "other-leader")
    assert not (directory / JOURNAL_FILE).exists()
    # When the shard starts uploading it
    with running_shard(tmp_path / "shard", url, tiered()) as server:
        wait_until(lambda: ranges_of(store, TOPIC_ID)[-1:] == rolled[-1:], timeout_s=WAIT_S,
                   explain=lambda: f"remote {ranges_of(store, TOPIC_ID)}, rolled {rolled}")
        # Then each range is in the store once: the other leader's three segments are
        # the very ones it uploaded, and this shard uploaded only past their end
        listed = list_remote_segments(store, "t", TOPIC_ID, 0)
        assert [(s.base_offset, s.end_offset) for s in listed] == rolled
        assert [s.segment_id for s in listed[:3]] == [s.segment_id for s in theirs]
        # And its view and its journal hold them too (its retention will delete them)
        view_ids = server.call(lambda: [s.segment_id for s in
                                        server._partitions[("t", 0)].remote.segments])
        assert view_ids == [s.segment_id for s in listed]
        stats = server.call(server.stats_snapshot)["tier"][("t", 0)]
        assert stats["uploads"] == len(rolled) - 3


@contextmanager
def new_leader_with_the_store_down(tmp_path, config: LogConfig, prefix: str,
                                   upload_errors: int, local_copies_deleted: bool = False):
    """A running shard with no journal of t-0 (a new leader) whose first three rolled
    segments another leader uploaded, started with moto's S3 stopped, once it failed
    ``upload_errors`` times to reach the store: yields (server, moto, store, rolled),
    moto stopped (the caller may start it again). ``local_copies_deleted``: the shard's
    log lacks those three, as a follower's whose local retention deleted them."""
    directory = tmp_path / "shard" / "t-0"
    rolled = write_log(directory, config, 20)
    moto = MotoS3().start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            store = moto.store(patch, prefix=prefix)
            upload_as_another_leader(store, directory, 3, tmp_path / "other-leader")
            if local_copies_deleted:
                for base_offset, _ in rolled[:3]:
                    for path in directory.glob(f"{base_offset:020d}.*"):
                        path.unlink()
            moto.stop()
            with running_shard(tmp_path / "shard", moto.url(prefix), config) as server:
                wait_until(lambda: server.call(server.stats_snapshot)["tier"].get(
                    ("t", 0), {}).get("upload_errors", 0) >= upload_errors, timeout_s=WAIT_S)
                yield server, moto, store, rolled
    finally:
        moto.stop()


def test_a_new_leader_with_a_store_that_is_down_uploads_nothing_and_deletes_nothing(tmp_path):
    # Given a partition log another leader uploaded in part, and a store then unreachable
    # When a shard with no journal starts uploading it (and fails, twice)
    with new_leader_with_the_store_down(tmp_path, tiered(local_retention_bytes=0), "takeover",
                                        upload_errors=2) as (server, moto, store, rolled):
        server.call(server._enforce_retention)
        # Then it kept every local segment (it does not know what is remote)
        assert local_segments(server)[:-1] == rolled
        # And once the store is back, it uploads only past the other's segments
        moto.start()
        wait_until(lambda: ranges_of(store, TOPIC_ID)[-1:] == rolled[-1:], timeout_s=WAIT_S)
        assert ranges_of(store, TOPIC_ID) == rolled


def test_a_topic_created_again_never_sees_the_old_ones_segments_while_its_deletion_waits(
        tmp_path):
    # Given a tiered topic t (one id) whose segments shard a uploaded to a store
    moto = MotoS3().start()
    unreachable = MotoS3()   # never started: nothing listens on its port
    old_id, new_id = topics.new_topic_id(), topics.new_topic_id()
    config = tiered(local_retention_bytes=0)
    try:
        with pytest.MonkeyPatch.context() as patch:
            store = moto.store(patch, prefix="recreate")
            with running_shard(tmp_path / "a", moto.url("recreate")) as a:
                a.call(lambda: a.open_partition("t", 0, config, topic_id=old_id))
                old_values = produce_values(a, 12)
                wait_until(lambda: local_segments(a)[0][0] > 0, timeout_s=WAIT_S)
            assert ranges_of(store, old_id)[0][0] == 0
            # When shard a deletes the topic while it cannot reach the store (its
            # deletion of the remote segments waits on its disk)
            patch.setenv("AWS_ENDPOINT_URL", unreachable.endpoint_url)
            with running_shard(tmp_path / "a", unreachable.url("recreate")) as a:
                a.call(lambda: a.open_partition("t", 0, config, topic_id=old_id))
                a.call(a.delete_partition, "t", 0)
            assert list((tmp_path / "a" / DELETIONS_DIR).iterdir())
            patch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
            # and the topic is created again under its name, with another id, on shard b
            with running_shard(tmp_path / "b", moto.url("recreate")) as b:
                b.call(lambda: b.open_partition("t", 0, config, topic_id=new_id))
                new_values = produce_values(b, 12, start=1000)
                wait_until(lambda: local_segments(b)[0][0] > 0, timeout_s=WAIT_S)
                # Then the new topic knows only its own segments, and reads only its
                # own records from offset 0, the uploaded ones included
                remote = b.call(lambda: b._partitions[("t", 0)].remote)
                assert remote.segments and {s.topic_id for s in remote.segments} == {new_id}
                assert read_from(b, 0, len(new_values)) == new_values
                new_ranges = ranges_of(store, new_id)
                # And when shard a reaches the store again, its pending deletion removes
                # every object of the old id (another shard's half-done upload and a torn
                # manifest too) and none of the new topic's
                old_prefix = partition_prefix("t", old_id, 0)
                store.put(f"{old_prefix}00000000000000000000-0123456789abcdef.log", b"half")
                store.put(f"{old_prefix}manifests/00000000000000000000-0123456789abcdef"
                          f".manifest", b'{"version": 2')
                with running_shard(tmp_path / "a", moto.url("recreate")):
                    wait_until(lambda: store.list(partition_prefix("t", old_id, 0)) == []
                               and not list((tmp_path / "a" / DELETIONS_DIR).iterdir()),
                               timeout_s=WAIT_S)
                # (b may have uploaded more meanwhile, after what it had)
                assert ranges_of(store, new_id)[:len(new_ranges)] == new_ranges
                assert read_from(b, 0, len(new_values)) == new_values
                assert fetch_values(b.address, "t", 0, 0)[0] == new_values[0] != old_values[0]
    finally:
        moto.stop()


def test_a_follower_learns_the_leaders_uploads_from_the_store_and_drops_only_those_locally(
        tmp_path):
    # Given a tiered partition with no local retention, which this shard follows, the
    # first three of whose rolled segments its leader uploaded
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    directory = tmp_path / "shard" / "t-0"
    config = tiered(local_retention_bytes=0)
    rolled = write_log(directory, config, 20)
    theirs = upload_as_another_leader(store, directory, 3, tmp_path / "leader")
    following = Leadership(replicas=("leader-shard", "shard-tier"), leader="leader-shard",
                           leader_epoch=1, in_sync=("leader-shard", "shard-tier"))
    with running_shard(tmp_path / "shard", url) as server:
        # When the shard opens it as a follower
        server.call(lambda: server.open_partition("t", 0, config, 0, False, None, following,
                                                  topic_id=TOPIC_ID))
        # Then its view becomes the store's, and it drops locally exactly the uploaded
        # segments: its log starts where the leader's uploads end
        wait_until(lambda: local_segments(server)[0][0] == theirs[-1].end_offset,
                   timeout_s=WAIT_S, explain=lambda: f"local {local_segments(server)}")
        assert server.call(lambda: server._partitions[("t", 0)].remote.segments) == tuple(theirs)
        assert local_segments(server)[:-1] == rolled[3:]
        # And it uploaded nothing itself
        assert ranges_of(store, TOPIC_ID) == rolled[:3]
        assert server.call(lambda: server._partitions[("t", 0)].log_start_offset) == 0


def test_a_partition_opened_under_a_new_topic_id_sets_the_old_one_aside_keeping_its_objects(
        tmp_path, caplog):
    # Given a shard holding t-0 of topic id old_id (a deletion that never reached it, or
    # a damaged id: no one can tell), with 12 records and segments in the store
    url = f"file://{tmp_path}/store"
    store = open_remote_store(url)
    old_id, new_id = topics.new_topic_id(), topics.new_topic_id()
    config = tiered(local_retention_bytes=0)
    with running_shard(tmp_path / "shard", url) as server:
        server.call(lambda: server.open_partition("t", 0, config, topic_id=old_id))
        produce_values(server, 12)
        wait_until(lambda: local_segments(server)[0][0] > 0, timeout_s=WAIT_S)
        uploaded = store.list(partition_prefix("t", old_id, 0))
        # When the controller opens t-0 as topic id new_id's
        with caplog.at_level(logging.WARNING, logger="plinth.shards.shard_server"):
            server.call(lambda: server.open_partition("t", 0, config, topic_id=new_id))
        # Then the partition is the new topic's, empty
        part = server.call(lambda: server._partitions[("t", 0)])
        assert part.topic_id == new_id
        assert local_segments(server) == [(0, 0)] and part.remote.is_empty
        # And the old log is set aside whole (its journal with it), its objects kept
        [aside] = [p for p in (tmp_path / "shard").iterdir() if p.name.endswith("-orphan")]
        assert (aside / JOURNAL_FILE).exists()
        old_log = PartitionLog.open(aside, LogConfig())
        try:   # its 12 records: the ones not uploaded here, the others in the store
            assert old_log.end_offset == 12
        finally:
            old_log.close()
        time.sleep(1)   # (a deletion would have begun by now)
        assert uploaded and store.list(partition_prefix("t", old_id, 0)) == uploaded
        assert f"Set aside as {aside}" in caplog.text
        assert f"remote segments in object storage are kept too (under " \
               f"{partition_prefix('t', old_id, 0)}" in caplog.text


def view_synced(server) -> bool:
    return server.call(lambda: server._tier.view_synced(server._partitions[("t", 0)]))


def test_a_requested_resync_adopts_segments_uploaded_after_the_first_sync(tmp_path):
    # Given an owner a of t-0 from offset 12 on, which listed the store when it began
    # uploading it, and a draining shard b holding [0, 12) sealed
    url = f"file://{tmp_path}/store"
    config = tiered(local_retention_bytes=0)
    write_log(tmp_path / "b" / "t-0", config, 12)
    values = [f"{n:08d}".encode().ljust(VALUE_BYTES, b"v") for n in range(12)]
    nudges = Nudges()
    with running_shard(tmp_path / "a", url, controller=nudges) as a:
        a.call(lambda: a.open_partition("t", 0, config, 12, topic_id=TOPIC_ID))
        a_state = a.call(lambda: a._tier._states[("t", 0)])
        wait_until(lambda: view_synced(a), timeout_s=WAIT_S)
        # When b uploads all of its range after that listing
        with running_shard(tmp_path / "b", url) as b:
            b.call(lambda: b.open_partition("t", 0, config, sealed=True, topic_id=TOPIC_ID))
            wait_until(lambda: tiered_state(b).wholly_remote, timeout_s=WAIT_S)
        assert ranges_of(open_remote_store(url), TOPIC_ID)[-1][1] == 12
        # Then the owner's view does not cover it: asked with resync, it says so
        asked_s = time.monotonic()
        assert a.call(a.covers_remote, "t", 0, [(0, 12), (12, 12)], True) == [False, True]
        # And it lists the store again, covers the range, and tells the controller once
        wait_until(lambda: a.call(a.covers_remote, "t", 0, [(0, 12)], False) == [True],
                   timeout_s=WAIT_S)
        wait_until(lambda: nudges.shards, timeout_s=WAIT_S)
        assert nudges.shards == ["shard-tier"]
        # And it serves the range from the store: its log starts at 0, and reads
        assert a.call(lambda: a._partitions[("t", 0)].log_start_offset) == 0
        assert read_from(a, 0, 12) == values
        # And another request right away waits: the owner lists the store again, and
        # nudges, only REMOTE_RESYNC_INTERVAL_S_MIN after the first
        assert a.call(a.covers_remote, "t", 0, [(0, 13)], True) == [False]
        assert a_state.resync_wanted
        wait_until(lambda: len(nudges.shards) == 2, timeout_s=WAIT_S)
        assert time.monotonic() - asked_s >= limits.REMOTE_RESYNC_INTERVAL_S_MIN
        assert not a_state.resync_wanted


def test_a_resync_asked_before_the_owners_first_listing_still_nudges_the_controller(tmp_path):
    # Given a store holding a removed shard's range [0, 12) of t-0
    url = f"file://{tmp_path}/store"
    config = tiered(local_retention_bytes=0)
    write_log(tmp_path / "b" / "t-0", config, 12)
    with running_shard(tmp_path / "b", url) as b:
        b.call(lambda: b.open_partition("t", 0, config, sealed=True, topic_id=TOPIC_ID))
        wait_until(lambda: tiered_state(b).wholly_remote, timeout_s=WAIT_S)
    nudges = Nudges()
    with running_shard(tmp_path / "a", url, controller=nudges) as a:
        # When its owner is asked to cover it in the same turn of its loop that opens
        # the partition (before its first job could list the store)
        def open_and_ask():
            a.open_partition("t", 0, config, 12, topic_id=TOPIC_ID)
            return a.covers_remote("t", 0, [(0, 12)], True)
        assert a.call(open_and_ask) == [False]
        # Then its first listing covers it, and the controller hears of it
        wait_until(lambda: nudges.shards == ["shard-tier"], timeout_s=WAIT_S)
        assert a.call(a.covers_remote, "t", 0, [(0, 12)], False) == [True]


def test_offsets_retention_deleted_count_as_covered_only_once_a_listing_made_after_the_request_shows_it(
        tmp_path):
    # Given an owner a of t-0 from offset 12 on, which listed the store when it began
    # uploading it, and a draining shard b that uploaded all of [0, 12) after that
    url = f"file://{tmp_path}/store"
    config = tiered(local_retention_bytes=0)
    write_log(tmp_path / "b" / "t-0", config, 12)
    with running_shard(tmp_path / "a", url) as a:
        a.call(lambda: a.open_partition("t", 0, config, 12, topic_id=TOPIC_ID))
        wait_until(lambda: view_synced(a), timeout_s=WAIT_S)
        with running_shard(tmp_path / "b", url) as b:
            b.call(lambda: b.open_partition("t", 0, config, sealed=True, topic_id=TOPIC_ID))
            wait_until(lambda: tiered_state(b).wholly_remote, timeout_s=WAIT_S)
        # And total retention then deleted b's first segment from the store (the owner's
        # retention counts the whole partition; b's log start stays 0)
        store = open_remote_store(url)
        metadata, _ = RemoteLogMetadata.open(tmp_path / "b" / "t-0")
        try:
            first = metadata.finished_segments()[0]
            delete_segment(store, metadata, first)
        finally:
            metadata.close()
        assert ranges_of(store, TOPIC_ID)[0][0] == first.end_offset > 0
        # Then the owner, whose view predates b's uploads (its log starts at 12), does not
        # count [0, 12) as covered: below its log start is not "deleted" until it listed
        assert a.call(lambda: a._partitions[("t", 0)].log_start_offset) == 12
        assert a.call(a.covers_remote, "t", 0, [(0, 12)], True) == [False]
        # And once the listing made for that request is in its view, it does: the offsets
        # below the store's first segment are gone, the rest it holds
        wait_until(lambda: a.call(a.covers_remote, "t", 0, [(0, 12)], False) == [True],
                   timeout_s=WAIT_S)
        assert a.call(lambda: a._partitions[("t", 0)].log_start_offset) == first.end_offset
        # And a range it does not hold stays uncovered, listing or not
        assert a.call(a.covers_remote, "t", 0, [(0, 13)], False) == [False]
