"""Uploading a real segment to object storage, finding it, reading it back, deleting it
(shards/tier/remote_transfer.py), on memory://, file:// and moto's S3."""

from __future__ import annotations

import random

import pytest

from plinth.errors import CorruptDataError, RemoteStorageUnavailableError
from plinth.format.log_entry import iter_entries
from plinth.limits import SEGMENT_BYTES_MIN
from plinth.shards.leader_epochs import LeaderEpochs
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.tier.remote_log_metadata import RemoteLogMetadata, SegmentState
from plinth.shards.tier.remote_segment import INDEX, LOG, PRODUCERS, manifest_prefix
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import (
    LocalSegment, clean_up_unfinished, delete_segment, list_remote_segments, read_remote_entries,
    StoreSync, read_remote_range, read_small_object, sync_with_store, upload_segment)

TOPIC = "orders"
TOPIC_ID = "0c5a1e2d3f4b5a697887766554433221"
PARTITION = 3
SMALL_SEGMENTS = LogConfig(segment_bytes_max=8 * SEGMENT_BYTES_MIN, index_interval_bytes=512)


@pytest.fixture
def log(tmp_path):
    """A partition log of a few rolled segments of random batches; the entries appended."""
    log = PartitionLog.open(tmp_path / f"{TOPIC}-{PARTITION}", SMALL_SEGMENTS)
    rng = random.Random(14)
    log.appended = []
    while len(log.segments) < 4:
        batch = rng.randbytes(rng.randrange(1, 3000))
        record_count = rng.randrange(1, 20)
        base_offset = log.append(batch, record_count, 1_700_000_000_000 + len(log.appended))
        log.appended.append((base_offset, record_count, batch))
    log.flush()
    yield log
    log.close()


def sealed(log, slot=0, producers=b'{"producers": []}'):
    epochs = LeaderEpochs()
    epochs.assign(0, 0)
    epochs.assign(2, log.segments[1].base_offset)
    return LocalSegment.of(log.segments[slot], topic=TOPIC, topic_id=TOPIC_ID, partition=PARTITION,
                           leader_epochs=epochs, producers=producers)


@pytest.fixture
def metadata(tmp_path):
    metadata, _ = RemoteLogMetadata.open(tmp_path / "meta")
    yield metadata
    metadata.close()


def test_an_uploaded_segment_reads_back_byte_for_byte(store, log, metadata, tmp_path):
    # Given the first rolled segment of a real log / When it is uploaded
    local = sealed(log)
    segment = upload_segment(store, metadata, local)
    # Then its log, index and time index objects are the local files' bytes
    assert store.get(segment.object_key(LOG)) == local.log_path.read_bytes()
    assert read_small_object(store, segment, INDEX) == local.index_path.read_bytes()
    assert read_small_object(store, segment, "timeindex") == local.time_index_path.read_bytes()
    assert read_small_object(store, segment, PRODUCERS) == b'{"producers": []}'
    # and the metadata says it is finished, with the segment's offsets, epoch and size
    assert metadata.state_of(segment.segment_id) is SegmentState.COPY_SEGMENT_FINISHED
    assert (segment.base_offset, segment.end_offset, segment.size_bytes, segment.leader_epoch) == (
        0, log.segments[1].base_offset, local.log_path.stat().st_size, 0)
    assert metadata.view().segment_for_offset(segment.end_offset - 1) == segment
    assert metadata.view().log_start_offset == 0 and metadata.view().end_offset == segment.end_offset
    # and any reader finds it by listing the manifests
    assert list_remote_segments(store, TOPIC, TOPIC_ID, PARTITION) == [segment]


def test_entries_read_from_object_storage_are_those_appended_from_every_offset(store, log, metadata):
    # Given the second segment uploaded (its epoch is 2)
    segment = upload_segment(store, metadata, sealed(log, slot=1))
    assert segment.leader_epoch == 2
    expected = [entry for entry in log.appended
                if segment.base_offset <= entry[0] < segment.end_offset]
    # When every entry is read in turn, 1 KiB at a time
    offset, read = segment.base_offset, []
    while offset < segment.end_offset:
        data = read_remote_entries(store, segment, offset, 1024)
        entries = [(h.base_offset, h.record_count, bytes(b)) for h, b in iter_entries(data)]
        assert entries and entries[0][0] == offset
        read.extend(entries)
        offset = read[-1][0] + read[-1][1]
    # Then they are the entries appended, each once, in order
    assert read == expected
    # and an offset inside an entry reads from that entry's start
    inside = next(entry for entry in expected[5:] if entry[1] > 1)
    data = read_remote_entries(store, segment, inside[0] + inside[1] - 1, 1)
    assert [(h.base_offset, bytes(b)) for h, b in iter_entries(data)] == [(inside[0], inside[2])]
    # and an offset outside the segment reads nothing
    assert read_remote_entries(store, segment, segment.end_offset, 1024) == b""


def test_a_crash_between_the_data_objects_and_the_manifest_leaves_nothing_visible(
        store, log, metadata, tmp_path):
    # Given an upload that dies after its data objects, before its manifest
    class Crash(Exception):
        pass

    def crash(segment):
        raise Crash()

    with pytest.raises(Crash):
        upload_segment(store, metadata, sealed(log), before_manifest=crash)
    # Then no reader sees a segment, though the data objects are there
    assert list_remote_segments(store, TOPIC, TOPIC_ID, PARTITION) == []
    assert store.list(f"{TOPIC}-{TOPIC_ID}/{PARTITION}/") != []
    # and after a restart the journal knows the copy started, and nothing readable
    metadata.close()
    reopened, _ = RemoteLogMetadata.open(tmp_path / "meta")
    [unfinished] = reopened.copies_unfinished()
    assert reopened.view().segment_for_offset(0) is None and reopened.view().remote_bytes == 0
    # When the cleanup runs, the half upload's objects are gone and forgotten
    finished, deleted = clean_up_unfinished(store, reopened)
    assert (finished, deleted) == ([], [unfinished])
    assert store.list(f"{TOPIC}-{TOPIC_ID}/{PARTITION}/") == []
    assert reopened.state_of(unfinished.segment_id) is None
    # and uploading again works, under a new id
    again = upload_segment(store, reopened, sealed(log))
    assert again.segment_id != unfinished.segment_id
    assert list_remote_segments(store, TOPIC, TOPIC_ID, PARTITION) == [again]
    reopened.close()


def test_a_crash_after_the_manifest_is_finished_by_the_cleanup(store, log, metadata):
    # Given an upload whose manifest was written but whose journal entry was not
    segment = upload_segment(store, metadata, sealed(log))
    store.put(segment.object_key(LOG) + ".x", b"")   # (unrelated object: left alone)
    metadata2_dir = metadata.directory.parent / "meta2"
    metadata2, _ = RemoteLogMetadata.open(metadata2_dir)
    metadata2.copy_started(segment, 0)
    # When the cleanup runs / Then it finishes the copy instead of deleting it
    assert clean_up_unfinished(store, metadata2) == ([segment], [])
    assert metadata2.view().segment_for_offset(0) == segment
    assert list_remote_segments(store, TOPIC, TOPIC_ID, PARTITION) == [segment]
    metadata2.close()


@pytest.mark.parametrize("position_from_end", [1, 100, 600])
def test_a_flipped_byte_in_the_log_object_gives_corrupt_data_naming_partition_and_offset(
        store, log, metadata, position_from_end):
    # Given an uploaded segment whose log object has one byte flipped
    segment = upload_segment(store, metadata, sealed(log))
    data = bytearray(store.get(segment.object_key(LOG)))
    data[len(data) - position_from_end] ^= 0x01
    store.put(segment.object_key(LOG), bytes(data))
    # When the whole segment is read / Then CorruptDataError names the partition and offset
    last_offset = segment.end_offset - 1
    with pytest.raises(CorruptDataError) as raised:
        offset = segment.base_offset
        while offset < segment.end_offset:
            chunk = read_remote_entries(store, segment, offset, 64 * 1024)
            offset = [h.end_offset for h, _ in iter_entries(chunk)][-1]
    assert f"partition {TOPIC}/{PARTITION}, offset " in raised.value.message
    assert raised.value.message.split("offset ")[1].split(":")[0].isdigit()
    assert int(raised.value.message.split("offset ")[1].split(":")[0]) <= last_offset


def test_a_flipped_index_object_is_detected_against_the_manifest(store, log, metadata):
    segment = upload_segment(store, metadata, sealed(log))
    data = bytearray(store.get(segment.object_key(INDEX)))
    data[3] ^= 0x10
    store.put(segment.object_key(INDEX), bytes(data))
    with pytest.raises(CorruptDataError, match="the manifest says"):
        read_remote_entries(store, segment, segment.base_offset, 1024)


def test_a_range_read_checks_every_entry_and_stops_at_the_last_whole_one(store, log, metadata):
    segment = upload_segment(store, metadata, sealed(log))
    whole = store.get(segment.object_key(LOG))
    data = read_remote_range(store, segment, 0, 3000)
    assert whole.startswith(data) and 0 < len(data) <= 3000
    assert [h.base_offset for h, _ in iter_entries(data)][0] == 0


def test_a_corrupt_manifest_is_reported_by_the_listing(store, log, metadata):
    segment = upload_segment(store, metadata, sealed(log))
    manifest = bytearray(store.get(segment.manifest_key))
    manifest[10] ^= 0x01
    store.put(segment.manifest_key, bytes(manifest))
    with pytest.raises(CorruptDataError, match=segment.manifest_key):
        list_remote_segments(store, TOPIC, TOPIC_ID, PARTITION)


def test_a_deleted_segment_leaves_no_object_and_no_metadata(store, log, metadata):
    segment = upload_segment(store, metadata, sealed(log))
    delete_segment(store, metadata, segment)
    assert store.list(f"{TOPIC}-{TOPIC_ID}/{PARTITION}/") == []
    assert metadata.state_of(segment.segment_id) is None
    assert metadata.finished_segments() == []


def test_the_metadata_rebuilt_from_the_manifests_finds_every_segment(store, log, metadata, tmp_path):
    # Given three uploaded segments, and a shard that lost its journal
    uploaded = [upload_segment(store, metadata, sealed(log, slot)) for slot in range(3)]
    rebuilt = RemoteLogMetadata.rebuild(tmp_path / "other", list_remote_segments(
        store, TOPIC, TOPIC_ID, PARTITION), now_ms=5)
    # Then it answers the reader's questions as the uploader's does
    assert rebuilt.finished_segments() == uploaded
    assert rebuilt.view().remote_bytes == metadata.view().remote_bytes == sum(
        segment.size_bytes for segment in uploaded)
    for segment in uploaded:
        assert rebuilt.view().segment_for_offset(segment.base_offset) == segment
    # and it survives its own restart
    rebuilt.close()
    reopened, recovery = RemoteLogMetadata.open(tmp_path / "other")
    assert reopened.finished_segments() == uploaded and recovery.bytes_truncated == 0
    reopened.close()
    # and nothing is listed under another partition of the topic
    assert store.list(manifest_prefix(TOPIC, TOPIC_ID, PARTITION + 10)) == []


def test_an_upload_to_a_stopped_store_is_retriable_and_leaves_nothing_visible(
        log, metadata, monkeypatch):
    from tests.moto_s3 import MotoS3

    server = MotoS3().start()
    store = server.store(monkeypatch, request_timeout_s=2, connect_timeout_s=1, retries_max=1,
                         retry_timeout_s=2)
    server.stop()
    with pytest.raises(RemoteStorageUnavailableError):
        upload_segment(store, metadata, sealed(log))
    [unfinished] = metadata.copies_unfinished()
    assert metadata.finished_segments() == []
    # and the cleanup, while the store is still down, is itself retriable
    with pytest.raises(RemoteStorageUnavailableError):
        clean_up_unfinished(store, metadata)
    assert metadata.copies_unfinished() == [unfinished]


def test_randomly_corrupted_remote_logs_never_give_bad_data(log, metadata):
    # Given a segment in a memory store, and its entries as appended
    store = open_remote_store("memory://")
    segment = upload_segment(store, metadata, sealed(log, slot=2))
    original = store.get(segment.object_key(LOG))
    expected = {entry[0]: entry for entry in log.appended
                if segment.base_offset <= entry[0] < segment.end_offset}
    rng = random.Random(405)
    for _ in range(200):
        # When a random byte of the log object is flipped
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        store.put(segment.object_key(LOG), bytes(data))
        # Then reading the whole segment either raises CorruptDataError or gives
        # exactly the entries appended
        offset = segment.base_offset
        try:
            while offset < segment.end_offset:
                chunk = read_remote_entries(store, segment, offset, rng.choice([1, 700, 5000]))
                for header, batch in iter_entries(chunk):
                    assert (header.base_offset, header.record_count, bytes(batch)) == \
                        expected[header.base_offset]
                    offset = header.end_offset
        except CorruptDataError as error:
            assert f"partition {TOPIC}/{PARTITION}, offset {offset}" in error.message


def test_entries_read_through_the_chunk_cache_are_those_read_from_the_store(
        store, log, metadata, tmp_path):
    from plinth.shards.tier.chunk_cache import RemoteChunkCache

    segment = upload_segment(store, metadata, sealed(log, slot=1))
    cache = RemoteChunkCache(tmp_path / "cache", 8192, chunk_bytes=1024, readahead_chunks=2)
    offset = segment.base_offset
    while offset < segment.end_offset:
        direct = read_remote_entries(store, segment, offset, 1500)
        assert read_remote_entries(store, segment, offset, 1500, cache=cache) == direct
        offset = [header.end_offset for header, _ in iter_entries(direct)][-1]
    assert cache.hits > 0 and cache.cached_bytes <= 8192


def test_a_sync_adopts_what_another_shard_uploaded_and_forgets_what_it_deleted(
        store, log, metadata, tmp_path):
    # Given two segments this journal tracks, and another shard's journal that uploaded
    # a third and deleted the first (its total retention)
    mine = [upload_segment(store, metadata, sealed(log, slot)) for slot in range(2)]
    theirs, _ = RemoteLogMetadata.open(tmp_path / "theirs")
    try:
        third = upload_segment(store, theirs, sealed(log, 2))
        theirs.adopt([mine[0]], now_ms=1)
        delete_segment(store, theirs, mine[0])
    finally:
        theirs.close()
    # When this journal syncs with the store
    found = sync_with_store(store, metadata, TOPIC, TOPIC_ID, PARTITION)
    # Then it holds what the store holds, no more, no less, and says what changed
    assert found == StoreSync(adopted=[third], dropped=[mine[0]], corrupt=[])
    assert metadata.finished_segments() == [mine[1], third]
    # And a reopened journal agrees (every change was journaled)
    metadata.close()
    reopened, recovery = RemoteLogMetadata.open(tmp_path / "meta")
    assert reopened.finished_segments() == [mine[1], third] and recovery.bytes_truncated == 0
    reopened.close()


def test_a_sync_never_adopts_another_topic_ids_segments_and_skips_a_corrupt_manifest(
        store, log, metadata, tmp_path):
    # Given a segment of a deleted incarnation of the topic (another id), a segment of
    # this one, and a torn manifest under this one's prefix
    other_id = "f" * 32
    old, _ = RemoteLogMetadata.open(tmp_path / "old")
    try:
        upload_segment(store, old, LocalSegment.of(
            log.segments[0], topic=TOPIC, topic_id=other_id, partition=PARTITION,
            leader_epochs=LeaderEpochs()))
    finally:
        old.close()
    elsewhere, _ = RemoteLogMetadata.open(tmp_path / "elsewhere")
    try:
        current = upload_segment(store, elsewhere, sealed(log, 1))
    finally:
        elsewhere.close()
    torn_key = f"{manifest_prefix(TOPIC, TOPIC_ID, PARTITION)}00000000000000000000-0123456789abcdef.manifest"
    store.put(torn_key, b'{"version": 2')
    # When this journal syncs
    found = sync_with_store(store, metadata, TOPIC, TOPIC_ID, PARTITION)
    # Then it adopted this id's segment only, and named the torn manifest
    assert found.adopted == [current] and metadata.finished_segments() == [current]
    assert len(found.corrupt) == 1 and found.corrupt[0].startswith(torn_key)
