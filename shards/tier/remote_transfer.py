"""Moving segments between a partition's disk and object storage: upload, find, read, delete.

Each function runs on the thread that owns the partition's RemoteLogMetadata
(remote_log_metadata.py) where it takes one, or on any thread where it does
not (``list_remote_segments``, ``refresh_remote_segments``, ``read_remote_range``,
``read_remote_entries``: any shard may read any partition's remote segments). Every store call is bounded
(remote_store.py) and raises RemoteStorageUnavailableError when the store is
down: the caller (the shard's uploader, remote_log_manager.py) retries with backoff.

Uploading one sealed segment (``upload_segment``), through the states of
remote_log_metadata.py:

    1. COPY_SEGMENT_STARTED, journaled (fsynced), with a fresh segment id
    2. the data objects: .log, .index, .timeindex, .leader-epochs, .producers
    3. the manifest, put "if absent": from here on the segment is visible
    4. COPY_SEGMENT_FINISHED, journaled

A crash or an error between 1 and 3 leaves a copy started and no manifest:
``clean_up_unfinished`` (run before uploading again, and on open) finds it,
finishes it if its manifest did get written (a crash between 3 and 4), and
otherwise deletes its objects. The segment is uploaded again under a new id.

Deleting one (``delete_segment``): DELETE_SEGMENT_STARTED, the manifest first
(the segment stops being visible), then the data objects, then
DELETE_SEGMENT_FINISHED.

Finding: ``list_remote_segments`` reads every manifest under the partition's
topic-id prefix; ``sync_with_store`` makes a journal agree with them (a shard
taking the partition over), ``refresh_remote_segments`` lists them reading only
the new ones (a follower). Only manifests under the topic id's prefix are ever
listed, so a deleted topic's segments never mix with those of a topic created
again under its name.

Reading: ``read_remote_range`` reads a byte range of a segment's .log object
and checks every entry in it (header, CRC, and that its offsets lie in the
segment); ``read_remote_entries`` finds an offset through the segment's .index
object and reads the entries from there. A bad entry raises CorruptDataError
naming the partition and the offset; never bad data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import crc32c

from plinth import limits
from plinth.errors import (
    CorruptDataError, RemoteObjectExistsError, RemoteObjectNotFoundError)
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, scan_whole_entries, unpack_entry_header
from plinth.shards.leader_epochs import LeaderEpochs, checkpoint_bytes
from plinth.shards.offset_index import OffsetIndex
from plinth.shards.segment import Segment
from plinth.shards.tier.chunk_cache import RemoteChunkCache
from plinth.shards.tier.remote_log_metadata import RemoteLogMetadata
from plinth.shards.tier.remote_segment import (
    INDEX, LEADER_EPOCHS, LOG, PRODUCERS, TIME_INDEX, ObjectDigest, RemoteSegment,
    manifest_prefix, new_segment_id, segment_id_of_manifest, whole_crc)
from plinth.shards.tier.remote_store import ObjectInfo, RemoteStore

__all__ = ["LocalSegment", "StoreSync", "clean_up_unfinished", "delete_segment",
           "entry_bytes_at", "list_remote_segments", "read_remote_entries", "read_remote_range",
           "refresh_remote_segments", "sync_with_store", "upload_segment"]



def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LocalSegment:
    """A sealed local segment, as the uploader is given it.

    The three files are the segment's own (segment.py), rolled, fsynced and
    below the high watermark (the caller's promise: nothing changes them while
    they upload). ``leader_epochs`` is the leader-epoch checkpoint's bytes
    (leader_epochs.checkpoint_bytes), ``producers`` the producer-state snapshot
    after the segment's last entry (or None if the partition has none).
    """

    topic: str
    topic_id: str
    partition: int
    base_offset: int
    end_offset: int
    max_timestamp_ms: int
    leader_epoch: int
    log_path: Path
    index_path: Path
    time_index_path: Path
    leader_epochs: bytes
    producers: bytes | None = None

    @classmethod
    def of(cls, segment: Segment, *, topic: str, topic_id: str, partition: int,
           leader_epochs: LeaderEpochs, producers: bytes | None = None) -> LocalSegment:
        """A rolled segment of a partition's log (data thread: it may load the indexes)."""
        return cls(topic=topic, topic_id=topic_id, partition=partition,
                   base_offset=segment.base_offset,
                   end_offset=segment.end_offset, max_timestamp_ms=segment.max_timestamp_ms,
                   leader_epoch=leader_epochs.epoch_at(segment.end_offset - 1),
                   log_path=segment.log_path, index_path=segment.index_path,
                   time_index_path=segment.time_index_path,
                   leader_epochs=checkpoint_bytes(leader_epochs), producers=producers)


# --- Uploading ----------------------------------------------------------------------

def upload_segment(store: RemoteStore, metadata: RemoteLogMetadata, local: LocalSegment, *,
                   now_ms: int | None = None, before_manifest=None) -> RemoteSegment:
    """Upload ``local`` through the four steps of the module docstring; the segment
    it became. ``before_manifest`` (tests only) runs between steps 2 and 3.

    Raises RemoteStorageUnavailableError (retriable: call ``clean_up_unfinished``
    and then this again), RemoteStorageError, or StorageError from the journal.
    """
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    small_objects = {LEADER_EPOCHS: local.leader_epochs}
    if local.producers is not None:
        small_objects[PRODUCERS] = local.producers
    files = {LOG: local.log_path, INDEX: local.index_path, TIME_INDEX: local.time_index_path}
    objects = {kind: _file_digest(path) for kind, path in files.items()}
    objects.update({kind: ObjectDigest(len(data), whole_crc(data))
                    for kind, data in small_objects.items()})
    segment = RemoteSegment(
        topic=local.topic, topic_id=local.topic_id, partition=local.partition,
        segment_id=new_segment_id(),
        base_offset=local.base_offset, end_offset=local.end_offset,
        max_timestamp_ms=local.max_timestamp_ms, leader_epoch=local.leader_epoch,
        created_ms=now_ms, objects=objects)
    metadata.copy_started(segment, now_ms)
    for kind, path in files.items():
        store.put(segment.object_key(kind), path)
    for kind, data in small_objects.items():
        store.put(segment.object_key(kind), data)
    if before_manifest is not None:
        before_manifest(segment)
    _put_manifest(store, segment)
    metadata.copy_finished(segment.segment_id, wall_clock_ms())
    return segment


def _put_manifest(store: RemoteStore, segment: RemoteSegment) -> None:
    """Write the manifest if absent; an existing one must be this very manifest (a
    retried put whose first answer was lost), or two uploads chose one id."""
    manifest = segment.to_manifest()
    try:
        store.put(segment.manifest_key, manifest, if_absent=True)
    except RemoteObjectExistsError:
        if store.get(segment.manifest_key) != manifest:
            raise AssertionError(f"{store.url} {segment.manifest_key} exists with other "
                                 f"contents: two uploads chose segment id {segment.segment_id}")


def _file_digest(path: Path) -> ObjectDigest:
    """Size and CRC-32C of a local file, read in chunks."""
    crc, size_bytes = 0, 0
    with open(path, "rb") as file:
        while chunk := file.read(limits.SEGMENT_SCAN_CHUNK_BYTES):
            crc = crc32c.crc32c(chunk, crc)
            size_bytes += len(chunk)
    return ObjectDigest(size_bytes, crc)


def clean_up_unfinished(store: RemoteStore, metadata: RemoteLogMetadata, *,
                        now_ms: int | None = None) -> tuple[list[RemoteSegment], list[RemoteSegment]]:
    """Settle every upload and deletion a crash or an error left half done.

    An upload whose manifest exists is finished; any other is deleted, as is
    every deletion that started. Returns (finished, deleted)."""
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    finished, deleted = [], []
    for segment in metadata.copies_unfinished():
        if _manifest_exists(store, segment):
            metadata.copy_finished(segment.segment_id, now_ms)
            finished.append(segment)
        else:
            delete_segment(store, metadata, segment, now_ms=now_ms)
            deleted.append(segment)
    for segment in metadata.deletes_unfinished():
        _delete_objects(store, segment)
        metadata.delete_finished(segment.segment_id, now_ms)
        deleted.append(segment)
    return finished, deleted


def _manifest_exists(store: RemoteStore, segment: RemoteSegment) -> bool:
    try:
        store.head(segment.manifest_key)
    except RemoteObjectNotFoundError:
        return False
    return True


# --- Deleting -------------------------------------------------------------------------

def delete_segment(store: RemoteStore, metadata: RemoteLogMetadata, segment: RemoteSegment, *,
                   now_ms: int | None = None) -> None:
    """Delete every object of ``segment``, its manifest first (module docstring)."""
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    metadata.delete_started(segment.segment_id, now_ms)
    _delete_objects(store, segment)
    metadata.delete_finished(segment.segment_id, wall_clock_ms())


def _delete_objects(store: RemoteStore, segment: RemoteSegment) -> None:
    store.delete(segment.manifest_key)
    for kind in segment.objects:
        store.delete(segment.object_key(kind))


# --- Finding and reading -----------------------------------------------------------------

def list_remote_segments(store: RemoteStore, topic: str, topic_id: str,
                         partition: int) -> list[RemoteSegment]:
    """Every visible remote segment of the partition of that topic id (its manifests),
    by base offset. Raises CorruptDataError naming the manifest if one is torn or flipped."""
    segments = [_read_manifest(store, info) for info in
                store.list(manifest_prefix(topic, topic_id, partition))]
    return sorted(segments, key=lambda segment: (segment.base_offset, segment.created_ms))


def refresh_remote_segments(store: RemoteStore, topic: str, topic_id: str, partition: int,
                            known: dict[str, RemoteSegment]
                            ) -> tuple[list[RemoteSegment], list[str]]:
    """The partition's visible remote segments, as ``list_remote_segments``, reading
    only the manifests not in ``known`` (segment id -> segment, a previous answer):
    a follower's periodic look at its leader's uploads costs one listing. A corrupt
    manifest is skipped and named in the second list ("key: why"). Any thread."""
    segments, corrupt = [], []
    for info in store.list(manifest_prefix(topic, topic_id, partition)):
        segment = known.get(segment_id_of_manifest(info.key))
        if segment is None:
            try:
                segment = _read_manifest(store, info)
            except CorruptDataError as error:
                corrupt.append(f"{info.key}: {error.message}")
                continue
            except RemoteObjectNotFoundError:
                continue   # deleted since the listing (the leader's retention)
        segments.append(segment)
    return sorted(segments, key=lambda s: (s.base_offset, s.created_ms)), corrupt


def _read_manifest(store: RemoteStore, info: ObjectInfo) -> RemoteSegment:
    if info.size_bytes > limits.REMOTE_MANIFEST_BYTES_MAX:
        raise CorruptDataError(f"{store.url} {info.key}: {info.size_bytes} bytes, over "
                               f"{limits.REMOTE_MANIFEST_BYTES_MAX} for a manifest")
    return RemoteSegment.from_manifest(store.get(info.key), info.key)


class StoreSync(NamedTuple):
    """What ``sync_with_store`` changed in a partition's metadata."""

    adopted: list[RemoteSegment]     # listed, not tracked: now finished copies here
    dropped: list[RemoteSegment]     # tracked as finished, no longer listed: forgotten
    corrupt: list[str]               # listed manifests that are not ones: "key: why"


def sync_with_store(store: RemoteStore, metadata: RemoteLogMetadata, topic: str, topic_id: str,
                    partition: int, *, now_ms: int | None = None) -> StoreSync:
    """Make ``metadata`` agree with the manifests the store lists for the partition of
    that topic id, before a shard uploads it (Kafka's new leader reading the remote
    log metadata): another shard may have uploaded (it led before; this one is a new
    leader, a promoted follower, or lost its disk) or deleted (its total retention)
    segments since this journal last heard. Each listed manifest not tracked is read
    and adopted as a finished copy; each finished copy tracked and not listed is
    forgotten (its objects deleted again, if any is left: deletes are idempotent).
    Only manifests under this topic id's prefix are listed, and one whose contents
    name another (``RemoteSegment.from_manifest``) is corrupt, skipped and reported:
    a deleted topic's segments are never adopted by one created again under its name.
    Owner thread of ``metadata``; raises RemoteStorageUnavailableError (retriable)."""
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    listed = store.list(manifest_prefix(topic, topic_id, partition))
    listed_ids = {segment_id_of_manifest(info.key) for info in listed}
    adopted, corrupt = [], []
    for info in listed:
        if metadata.state_of(segment_id_of_manifest(info.key)) is not None:
            continue   # tracked: its manifest is the one this shard wrote or adopted
        try:
            adopted.append(_read_manifest(store, info))
        except CorruptDataError as error:
            corrupt.append(f"{info.key}: {error.message}")
        except RemoteObjectNotFoundError:
            pass   # deleted since the listing (another shard's retention)
    metadata.adopt(adopted, now_ms)
    dropped = [segment for segment in metadata.finished_segments()
               if segment.segment_id not in listed_ids]
    for segment in dropped:
        delete_segment(store, metadata, segment, now_ms=now_ms)
    return StoreSync(adopted, dropped, corrupt)


def read_small_object(store: RemoteStore, segment: RemoteSegment, kind: str) -> bytes:
    """A whole index, time index, leader-epochs or producers object, checked against
    the manifest's size and CRC."""
    digest = segment.objects[kind]
    if digest.size_bytes > limits.REMOTE_SMALL_OBJECT_BYTES_MAX:
        raise CorruptDataError(f"{segment.describe()}: its {kind} object declares "
                               f"{digest.size_bytes} bytes, over {limits.REMOTE_SMALL_OBJECT_BYTES_MAX}")
    data = store.get(segment.object_key(kind)) if digest.size_bytes else b""
    if (len(data), whole_crc(data)) != (digest.size_bytes, digest.crc32c):
        raise CorruptDataError(
            f"{segment.describe()}: {store.url} {segment.object_key(kind)} is {len(data)} bytes "
            f"with CRC-32C 0x{whole_crc(data):08x}, the manifest says {digest.size_bytes} bytes "
            f"and 0x{digest.crc32c:08x}")
    return data


def read_remote_range(store: RemoteStore, segment: RemoteSegment, position: int,
                      length: int, *, offset: int | None = None,
                      cache: RemoteChunkCache | None = None) -> bytes | memoryview:
    """The whole entries in ``length`` bytes of the .log object from ``position``
    (an entry boundary), each checked; fewer bytes if the range ends inside an entry.
    Bytes-like: often a memoryview of the store client's buffer (not copied).

    Raises CorruptDataError naming the partition and the offset being read
    (``offset``, or the first entry's) on a bad header or CRC, or an entry whose
    offsets are outside the segment's. Through ``cache`` if given (chunk_cache.py),
    whose chunks of the segment are dropped on such an error."""
    chunk = _get_range(store, segment, position, length, cache)
    try:
        return chunk[:_checked_end(chunk, segment, position, offset)]
    except CorruptDataError:
        if cache is not None:
            cache.discard(segment.segment_id)   # a retry reads the store again
        raise


def _get_range(store: RemoteStore, segment: RemoteSegment, position: int, length: int,
               cache: RemoteChunkCache | None) -> bytes | memoryview:
    if cache is None:
        return store.get_range(segment.object_key(LOG), position, length)
    return cache.read(store, segment, position, length)


def _checked_end(chunk: bytes | memoryview, segment: RemoteSegment, position: int, offset: int | None) -> int:
    """Length of the run of whole, valid entries at the start of ``chunk``."""
    end = 0
    try:
        for entry_position, header, _ in scan_whole_entries(chunk, True, position):
            if not segment.base_offset <= header.base_offset < header.end_offset <= segment.end_offset:
                raise CorruptDataError(
                    f"entry at position {entry_position} holds offsets [{header.base_offset}, "
                    f"{header.end_offset}), outside the segment's")
            end = entry_position + header.entry_bytes - position
    except CorruptDataError as error:
        reading = offset if offset is not None else "at position " + str(position)
        raise CorruptDataError(
            f"partition {segment.topic}/{segment.partition}, offset {reading}: "
            f"{segment.describe()}, object {segment.object_key(LOG)}: {error.message}") from error
    return end


def read_remote_entries(store: RemoteStore, segment: RemoteSegment, offset: int, bytes_max: int,
                        *, offset_index: OffsetIndex | None = None,
                        cache: RemoteChunkCache | None = None) -> bytes | memoryview:
    """Whole, checked entries from the one holding ``offset``: at most ``bytes_max``
    bytes, except that the first entry is always whole. b"" if ``offset`` is
    outside the segment. ``offset_index``: the segment's index if the caller
    keeps it (read from the store otherwise); ``cache``: the shard's chunk cache."""
    if not segment.base_offset <= offset < segment.end_offset:
        return b""
    if offset_index is None:
        offset_index = load_remote_index(store, segment)
    position = offset_index.lookup(offset)[1]
    # The index is sparse: read past the indexed entry by one index interval more.
    length = bytes_max + limits.INDEX_INTERVAL_BYTES + LOG_ENTRY_HEADER_BYTES
    for _ in range(limits.REMOTE_READS_PER_FETCH_MAX):
        chunk = read_remote_range(store, segment, position, length, offset=offset, cache=cache)
        start = _start_of_entry_with(chunk, offset, position)
        if start is not None:
            return _cut_to_bytes_max(chunk, start, bytes_max)
        # The chunk ended (on an entry boundary) before the entry holding ``offset``.
        position += len(chunk)
        length = max(bytes_max, entry_bytes_at(store, segment, position, offset, cache))
    raise CorruptDataError(f"partition {segment.topic}/{segment.partition}, offset {offset}: "
                           f"{segment.describe()}: no entry holds it within "
                           f"{limits.REMOTE_READS_PER_FETCH_MAX} reads from its indexed position")


def _start_of_entry_with(chunk: bytes | memoryview, offset: int, position: int) -> int | None:
    """Where in ``chunk`` the (whole) entry holding ``offset`` starts, or None."""
    for entry_position, header, _ in scan_whole_entries(chunk, False, position):
        if offset < header.end_offset:
            return entry_position - position
    return None


def entry_bytes_at(store: RemoteStore, segment: RemoteSegment, position: int,
                    offset: int, cache: RemoteChunkCache | None) -> int:
    """Size of the entry at ``position`` of the .log object, from its header (read
    to fetch an entry longer than the range read so far; ``offset``: the offset
    looked for, for messages)."""
    if position + LOG_ENTRY_HEADER_BYTES > segment.size_bytes:
        raise CorruptDataError(f"partition {segment.topic}/{segment.partition}, offset {offset}: "
                               f"{segment.describe()} ends at position {segment.size_bytes} "
                               f"without an entry holding it")
    chunk = _get_range(store, segment, position, LOG_ENTRY_HEADER_BYTES, cache)
    try:
        return unpack_entry_header(chunk, 0, position).entry_bytes
    except CorruptDataError as error:
        if cache is not None:
            cache.discard(segment.segment_id)
        raise CorruptDataError(f"partition {segment.topic}/{segment.partition}, offset {offset}: "
                               f"{segment.describe()}: {error.message}") from error


def _cut_to_bytes_max(chunk: bytes | memoryview, start: int,
                      bytes_max: int) -> bytes | memoryview:
    """Entries from ``start``: the first whole, then as many whole ones as fit ``bytes_max``."""
    end = start
    for entry_position, header, _ in scan_whole_entries(memoryview(chunk)[start:], False, start):
        entry_end = entry_position + header.entry_bytes
        if entry_end - start > bytes_max and end > start:
            break
        end = entry_end
    return chunk[start:end]


def load_remote_index(store: RemoteStore, segment: RemoteSegment) -> OffsetIndex:
    """The segment's offset index, read whole and checked."""
    data = read_small_object(store, segment, INDEX)
    return OffsetIndex.from_bytes(data, segment.base_offset,
                                  f"{store.url} {segment.object_key(INDEX)}")
