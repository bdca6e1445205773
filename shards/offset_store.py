"""Committed offsets and settings of consumer groups, kept as records in an internal log.

Runs in the shard actor that coordinates the groups, on its loop thread only.
Each shard keeps one internal partition log, ``<shard dir>/__consumer_offsets``,
in the ordinary log format (log_entry.capnp around record_batch.capnp). Each
commit is one batch, fsynced before the commit is acknowledged. Records:

    key                                       value
    b"o\\0" group b"\\0" topic b"\\0" partition    committed offset, Int64 LE, then the
                                              commit's metadata, UTF-8 (0 to
                                              OFFSET_METADATA_BYTES_MAX bytes; none:
                                              exactly 8 bytes, all that logs written
                                              before metadata hold);
                                              empty: the offset is deleted
    b"s\\0" group b"\\0" setting name              the setting's value (UTF-8)
    b"d\\0" group                                 empty: the group is deleted

The metadata is the string a Kafka client commits with an offset (OffsetCommit's
committed_metadata; Kafka Streams keeps state in it) and reads back with it
(OffsetFetch): opaque here, kept only where it is not empty. Replay, compaction
and snapshots carry it with its offset. A value of 1 to 7 bytes is no record
this module writes: replay skips it with a warning, as an unknown key.

A later record for the same key replaces an earlier one; an empty offset (a
tombstone, written when the offset's topic is deleted) drops its key, and a
deletion record drops every earlier record of its group. Each record's
timestamp is when it was written, and a group's newest one (``written_ms``,
tombstones aside) is what its offsets' expiry counts from (the coordinator
deletes the offsets of groups without members OFFSETS_RETENTION_MS after that). ``OffsetStore.open`` replays the
log into memory and then compacts it (compaction on recovery): when the log
holds more records than live keys, it writes the live records into a fresh
log, each group's with its ``written_ms`` (at most OFFSETS_RETENTION_MS old:
older only means "expired", and a batch's timestamps span less than 2**32
ms), fsyncs it and swaps it in with renames, and says how many records it
dropped.

Replicated (issue 12). On a replicated broker the records live in a partition of
the internal topic ``__consumer_offsets`` instead (plinth/topics.py: one
partition per group slot, replicated like any topic's), and the shard that
leads a slot's partition keeps its store: ``OffsetStore.load`` replays the
partition's log (the whole of it, past the high watermark too: as leader its
log is the one the followers will hold) and the writes go through the shard's
replicated append (``append``), not to a log of its own. Its writes return once
appended, not durable: GroupRequests answers the request only when the
partition's high watermark passes them.

Such a log is never compacted in place (the replicas would differ). It is
bounded by time instead: the leader appends a snapshot, every live record
again (stamped with its group's ``written_ms``, as compaction does) in batches
that each end with a marker record stamped now, the last one saying "end":

    b"S"                                      b"" (more follows) or b"end"

every OFFSETS_SNAPSHOT_INTERVAL_MS while it has groups (``snapshot_due``,
``write_snapshot``), and the internal topic's time retention deletes old
segments on every replica. Retention deletes a prefix of whole segments whose
newest record is older than OFFSETS_SLOT_RETENTION_MS, and every segment of a
snapshot holds a marker stamped when it was written, so what is left always
starts at or before the last complete snapshot: replaying it gives every live
record (a key is only ever overwritten, or dropped with its whole group).
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plinth import limits
from plinth.errors import StorageError
from plinth.format.record_batch import BatchBuilder, decode_records
from plinth.format.log_entry import iter_entries
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.storage_outage import StorageOutage

log = logging.getLogger(__name__)

DIR_NAME = "__consumer_offsets"
_OFFSET = struct.Struct("<q")   # the value's first field; the metadata follows it
_OFFSET_DELETED = b""
_OFFSET_KIND = b"o"
_SETTING_KIND = b"s"
_DELETED_KIND = b"d"
_SNAPSHOT_KEY = b"S"
_SNAPSHOT_END = b"end"
_SEP = b"\0"
# The offsets log is compacted, never expired: retention would drop live offsets.
_LOG_CONFIG = LogConfig(retention_ms=-1, retention_bytes=-1)

TopicPartition = tuple[str, int]


@dataclass
class CompactionReport:
    records_read: int
    records_kept: int


@dataclass
class SnapshotState:
    """A replicated slot's log against its snapshots."""
    written_ms: int = 0       # when its last complete snapshot was written (0: none)
    records_since: int = 0    # records after it
    first_record_ms: int = 0  # the timestamp of the log's first record (0: empty)


@dataclass
class StoredGroup:
    """What the offsets log holds for one group."""
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    # The metadata committed with an offset, only where it is not empty (most have
    # none: the offsets keep their plain shape); a key here is a key of ``offsets``.
    metadata: dict[TopicPartition, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    written_ms: int = 0   # the timestamp of its newest record

    def record_count(self) -> int:
        return len(self.offsets) + len(self.settings)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class OffsetStore:
    """One shard's committed offsets and group settings. Loop thread only, every method.

    ``open`` it (replaying and compacting the log); ``close`` it with the shard.
    """

    def __init__(self, directory: Path, plog: PartitionLog, groups: dict[str, StoredGroup],
                 report: CompactionReport, clock_ms: Callable[[], int] = wall_clock_ms,
                 append: Callable[[bytes, int, int], int] | None = None):
        self.directory = directory
        self._log = plog
        self._groups = groups
        self.compaction = report
        self.now_ms = clock_ms   # the wall clock that stamps records (tests drive it)
        # append(batch, record count, now_ms) -> base offset: the replicated path of a
        # slot's partition (None: this store's own log, fsynced here).
        self._append_replicated = append
        self.snapshot: SnapshotState | None = None   # of a replicated store only
        self._outage = StorageOutage(str(directory), "offset commits", log)

    @classmethod
    def open(cls, shard_dir: Path, clock_ms: Callable[[], int] = wall_clock_ms) -> "OffsetStore":
        directory = Path(shard_dir) / DIR_NAME
        _finish_interrupted_swap(directory)
        plog = PartitionLog.open(directory, _LOG_CONFIG)
        groups, records_read = _replay(plog)
        kept = sum(group.record_count() for group in groups.values())
        report = CompactionReport(records_read, kept)
        if records_read > kept:
            plog = _compact(directory, plog, groups, clock_ms())
            log.info("compacted %s: kept %d of %d records", directory, kept, records_read)
        return cls(directory, plog, groups, report, clock_ms)

    @classmethod
    def load(cls, plog: PartitionLog, append: Callable[[bytes, int, int], int],
             clock_ms: Callable[[], int] = wall_clock_ms) -> "OffsetStore":
        """The store of a replicated slot's partition led here: ``plog`` replayed up to
        its end, never compacted; writes go through ``append(batch, record count,
        now_ms)``, which raises (appending nothing) if this shard may not write."""
        snapshot = SnapshotState()
        groups, records_read = _replay(plog, snapshot)
        kept = sum(group.record_count() for group in groups.values())
        store = cls(plog.directory, plog, groups, CompactionReport(records_read, kept), clock_ms,
                    append)
        store.snapshot = snapshot
        return store

    @property
    def replicated(self) -> bool:
        return self._append_replicated is not None

    def close(self) -> None:
        """Close the log (of a replicated store: the shard's partition; left open)."""
        if self._append_replicated is None:
            self._log.close()

    # --- Reads -------------------------------------------------------------------

    def offsets(self, group: str) -> dict[TopicPartition, int]:
        stored = self._groups.get(group)
        return dict(stored.offsets) if stored is not None else {}

    def metadata(self, group: str) -> dict[TopicPartition, str]:
        """The metadata committed with the group's offsets, where not empty."""
        stored = self._groups.get(group)
        return dict(stored.metadata) if stored is not None else {}

    def setting(self, group: str, name: str) -> str | None:
        stored = self._groups.get(group)
        return stored.settings.get(name) if stored is not None else None

    def settings(self, group: str) -> dict[str, str]:
        stored = self._groups.get(group)
        return dict(stored.settings) if stored is not None else {}

    def groups(self) -> set[str]:
        return set(self._groups)

    def has(self, group: str) -> bool:
        return group in self._groups

    def group_count(self) -> int:
        return len(self._groups)

    def written_ms(self, group: str) -> int | None:
        """When the group's newest record was written, or None if it has none."""
        stored = self._groups.get(group)
        return stored.written_ms if stored is not None else None

    # --- Writes (durable before they return; of a replicated store, appended) -------

    def commit(self, group: str, offsets: dict[TopicPartition, int],
               settings: dict[str, str] | None = None,
               metadata: dict[TopicPartition, str] | None = None) -> None:
        """Offsets, each with its ``metadata`` (of these offsets' partitions; none or
        empty: none, replacing what an earlier commit stored), and settings written
        with them, in one batch. The caller checked the metadata's size
        (OFFSET_METADATA_BYTES_MAX); an offset without a partition is a bug."""
        if not offsets and not settings:
            return
        metadata = {tp: text for tp, text in (metadata or {}).items() if text}
        if not metadata.keys() <= offsets.keys():
            raise AssertionError(f"group {group!r}: metadata without an offset for "
                                 f"{sorted(metadata.keys() - offsets.keys())[:3]}")
        builder = BatchBuilder()
        now_ms = self.now_ms()
        for (topic, partition), offset in offsets.items():
            builder.append(_offset_key(group, topic, partition),
                           _offset_value(offset, metadata.get((topic, partition), "")), now_ms)
        for name, value in (settings or {}).items():
            builder.append(_setting_key(group, name), value.encode(), now_ms)
        self._append(builder, now_ms)
        stored = self._groups.setdefault(group, StoredGroup())
        stored.offsets.update(offsets)
        for tp in offsets:
            stored.metadata.pop(tp, None)
        stored.metadata.update(metadata)
        stored.settings.update(settings or {})
        stored.written_ms = now_ms

    def delete_offsets(self, group: str, partitions: list[TopicPartition]) -> None:
        """Forget these offsets of the group (those it has), in one batch of tombstones."""
        stored = self._groups.get(group)
        gone = [tp for tp in partitions if stored is not None and tp in stored.offsets]
        if not gone:
            return
        builder = BatchBuilder()
        now_ms = self.now_ms()
        for topic, partition in gone:
            builder.append(_offset_key(group, topic, partition), _OFFSET_DELETED, now_ms)
        self._append(builder, now_ms)
        for tp in gone:
            del stored.offsets[tp]
            stored.metadata.pop(tp, None)

    def set_setting(self, group: str, name: str, value: str) -> None:
        self.commit(group, {}, {name: value})

    def delete(self, groups: list[str]) -> None:
        """Forget these groups' offsets and settings, in one batch."""
        gone = [group for group in groups if group in self._groups]
        if not gone:
            return
        builder = BatchBuilder()
        now_ms = self.now_ms()
        for group in gone:
            builder.append(_deleted_key(group), b"", now_ms)
        self._append(builder, now_ms)
        for group in gone:
            del self._groups[group]

    def snapshot_due(self, now_ms: int) -> bool:
        """Whether a replicated store should write a snapshot now (it has groups, and
        its last complete snapshot, or without one its first record, is
        OFFSETS_SNAPSHOT_INTERVAL_MS old)."""
        snapshot = self.snapshot
        if snapshot is None or not self._groups:
            return False
        # Without a snapshot yet, nothing is older than the log's first record.
        since_ms = snapshot.written_ms or snapshot.first_record_ms
        return now_ms - since_ms >= limits.OFFSETS_SNAPSHOT_INTERVAL_MS

    def write_snapshot(self) -> int:
        """Append every live record again, through the replicated append, in batches
        each ending with a marker; returns the records written. A replicated store only."""
        if self.snapshot is None:
            raise AssertionError(f"{self.directory}: only a replicated slot's store snapshots")
        now_ms = self.now_ms()
        records = _live_records(self._groups, now_ms)
        batches = _batches(records) or [[]]   # none live: the end marker alone
        for number, batch in enumerate(batches, 1):
            builder = BatchBuilder()
            for key, value, timestamp_ms in batch:
                builder.append(key, value, timestamp_ms)
            builder.append(_SNAPSHOT_KEY, _SNAPSHOT_END if number == len(batches) else b"",
                           now_ms)
            self._append_replicated(builder.build(), builder.record_count, now_ms)
        self.snapshot.written_ms, self.snapshot.records_since = now_ms, 0
        return len(records)

    def _append(self, builder: BatchBuilder, now_ms: int) -> None:
        batch = builder.build()
        if self._append_replicated is not None:
            self._append_replicated(batch, builder.record_count, now_ms)
            self.snapshot.records_since += builder.record_count
            self.snapshot.first_record_ms = self.snapshot.first_record_ms or now_ms
            return
        with self._outage.watch():
            self._log.append(batch, builder.record_count, now_ms)
            try:
                self._log.flush()
            except StorageError:
                self._cut_unflushed()
                raise

    def _cut_unflushed(self) -> None:
        """After a failed fsync, cut the commit it may not have written: the kernel
        reports a failed writeback once, so the next commit's fsync would succeed
        without it, and a restart's replay would stop at its zeros, losing every
        later commit (shards/shard_server.py, ``_cut_after_failed_fsync``). A cut the
        disk refuses too is logged: the restart's recovery cuts what it cannot read."""
        try:
            self._log.cut_unflushed()
        except StorageError as exc:
            log.error("cannot cut the offset commit whose fsync failed from %s: %s",
                      self._log.directory, exc)


def _finish_interrupted_swap(directory: Path) -> None:
    """After a crash inside _compact's swap: put whichever complete log exists in place."""
    if directory.exists():
        return
    for candidate in (directory.with_name(DIR_NAME + ".compacting"),
                      directory.with_name(DIR_NAME + ".old")):
        if candidate.exists():
            # .compacting is complete here: it is renamed only after it was closed.
            candidate.rename(directory)
            log.warning("finished an interrupted compaction of %s from %s", directory, candidate)
            return


def _offset_key(group: str, topic: str, partition: int) -> bytes:
    return _SEP.join((_OFFSET_KIND, group.encode(), topic.encode(), str(partition).encode()))


def _offset_value(offset: int, metadata: str) -> bytes:
    """An offset record's value: the offset, Int64 LE, then the metadata's UTF-8."""
    return _OFFSET.pack(offset) + metadata.encode()


def _setting_key(group: str, name: str) -> bytes:
    return _SEP.join((_SETTING_KIND, group.encode(), name.encode()))


def _deleted_key(group: str) -> bytes:
    return _SEP.join((_DELETED_KIND, group.encode()))


def _replay(plog: PartitionLog,
            snapshot: SnapshotState | None = None) -> tuple[dict[str, StoredGroup], int]:
    groups: dict[str, StoredGroup] = {}
    records_read = 0
    position = plog.start_offset
    while position < plog.end_offset:
        data = plog.read(position, limits.OFFSETS_REPLAY_READ_BYTES, plog.end_offset)
        for header, batch in iter_entries(data):
            for record in decode_records(DIR_NAME, 0, header.base_offset, batch, position):
                records_read += 1
                if snapshot is not None and not snapshot.first_record_ms:
                    snapshot.first_record_ms = record.timestamp_ms
                if record.key == _SNAPSHOT_KEY:
                    if snapshot is not None and record.value == _SNAPSHOT_END:
                        snapshot.written_ms, snapshot.records_since = record.timestamp_ms, 0
                    continue
                if snapshot is not None:
                    snapshot.records_since += 1
                _apply(record.key, record.value, record.timestamp_ms, groups)
            position = header.base_offset + header.record_count
    return groups, records_read


def _apply(key: bytes, value: bytes, timestamp_ms: int, groups: dict[str, StoredGroup]) -> None:
    parts = key.split(_SEP)
    if parts[0] == _DELETED_KIND and len(parts) == 2:
        groups.pop(parts[1].decode(), None)
        return
    if parts[0] == _OFFSET_KIND and len(parts) == 4 and value == _OFFSET_DELETED:
        stored = groups.get(parts[1].decode())
        if stored is not None:
            stored.offsets.pop((parts[2].decode(), int(parts[3])), None)
            stored.metadata.pop((parts[2].decode(), int(parts[3])), None)
        return
    if parts[0] == _OFFSET_KIND and len(parts) == 4 and len(value) >= _OFFSET.size:
        stored = groups.setdefault(parts[1].decode(), StoredGroup())
        tp = (parts[2].decode(), int(parts[3]))
        stored.offsets[tp] = _OFFSET.unpack_from(value)[0]
        # Bytes after the offset are its metadata; a record from before metadata has none.
        metadata = value[_OFFSET.size:].decode("utf-8", "replace")
        if metadata:
            stored.metadata[tp] = metadata
        else:
            stored.metadata.pop(tp, None)
    elif parts[0] == _SETTING_KIND and len(parts) == 3:
        stored = groups.setdefault(parts[1].decode(), StoredGroup())
        stored.settings[parts[2].decode()] = value.decode()
    else:
        log.warning("ignored an unknown record in %s: key %r, a value of %d bytes", DIR_NAME,
                    key[:64], len(value))
        return
    stored.written_ms = max(stored.written_ms, timestamp_ms)


def _compact(directory: Path, plog: PartitionLog, groups: dict[str, StoredGroup],
             now_ms: int) -> PartitionLog:
    fresh_dir = directory.with_name(DIR_NAME + ".compacting")
    shutil.rmtree(fresh_dir, ignore_errors=True)
    fresh = PartitionLog.open(fresh_dir, _LOG_CONFIG)
    for batch in _batches(_live_records(groups, now_ms)):
        builder = BatchBuilder()
        for key, value, timestamp_ms in batch:
            builder.append(key, value, timestamp_ms)
        fresh.append(builder.build(), builder.record_count, now_ms)
    fresh.close()
    plog.close()
    # Swap with renames: a crash leaves either the old log or the new one in place.
    old_dir = directory.with_name(DIR_NAME + ".old")
    shutil.rmtree(old_dir, ignore_errors=True)
    directory.rename(old_dir)
    fresh_dir.rename(directory)
    shutil.rmtree(old_dir)
    return PartitionLog.open(directory, _LOG_CONFIG)


def _live_records(groups: dict[str, StoredGroup], now_ms: int) -> list[tuple[bytes, bytes, int]]:
    """Every live record, (key, value, timestamp), each stamped with its group's
    ``written_ms`` (at most OFFSETS_RETENTION_MS old: older only means "expired", and
    a batch's timestamps span less than 2**32 ms), which the groups then keep."""
    oldest_ms = now_ms - limits.OFFSETS_RETENTION_MS
    records = []
    for name, stored in groups.items():
        written_ms = min(now_ms, max(oldest_ms, stored.written_ms))
        records += [(_offset_key(name, t, p), _offset_value(o, stored.metadata.get((t, p), "")),
                     written_ms)
                    for (t, p), o in stored.offsets.items()]
        records += [(_setting_key(name, n), v.encode(), written_ms)
                    for n, v in stored.settings.items()]
        stored.written_ms = written_ms
    return records


Record = tuple[bytes, bytes, int]   # key, value, timestamp_ms


def _batches(records: list[Record]) -> list[list[Record]]:
    """``records`` cut into batches of at most OFFSETS_COMPACT_BATCH_RECORDS_MAX records
    and about OFFSETS_COMPACT_BATCH_BYTES_MAX bytes of keys and values (a batch ends
    after the record that passes it; limits.py: that still fits a batch)."""
    batches: list[list[Record]] = []
    batch_bytes = 0
    for record in records:
        if (not batches or len(batches[-1]) >= limits.OFFSETS_COMPACT_BATCH_RECORDS_MAX
                or batch_bytes >= limits.OFFSETS_COMPACT_BATCH_BYTES_MAX):
            batches.append([])
            batch_bytes = 0
        batches[-1].append(record)
        batch_bytes += len(record[0]) + len(record[1])
    return batches
