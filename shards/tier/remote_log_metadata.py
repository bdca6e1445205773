"""One partition's remote segments and their states, as Kafka's RemoteLogMetadataManager keeps them.

Runs on the shard actor's thread that owns the partition (one thread, every
method; nothing awaits between a query and its use). Each remote segment
(remote_segment.py) goes through these states, in this order:

    COPY_SEGMENT_STARTED     the upload began: its objects may be partly written
    COPY_SEGMENT_FINISHED    its manifest is written: readable, counted, retained
    DELETE_SEGMENT_STARTED   its deletion began: no longer read or counted
    DELETE_SEGMENT_FINISHED  every object of it is gone: forgotten here

(COPY_SEGMENT_STARTED may also go straight to DELETE_SEGMENT_STARTED: an upload
that failed or crashed is cleaned up.) Anything else is a programmer error.

The journal. Each change is appended to ``<partition dir>/remote-log-metadata``
and fsynced before the step it records is taken (before the first object is
uploaded; before the first object is deleted), so that after a crash the shard
knows every upload or deletion it may have left half done. One entry:

    offset size  field
         0    4  payload_bytes  UInt32 LE   bytes of the payload that follows
         4    4  crc            UInt32 LE   CRC-32C of the payload
         8    -  payload        UTF-8 JSON, one object:
                   {"state": "COPY_SEGMENT_STARTED", "time_ms": T, "segment": {...}}
                   {"state": "<any other state>", "time_ms": T, "segment_id": "..."}
                 where "segment" is RemoteSegment.to_record() (remote_segment.py)

    [payload_bytes][crc][payload][payload_bytes][crc][payload]...

``recover_journal`` (run by ``open``) reads every entry and cuts the file at
the first torn one (fewer bytes than its header says), one whose CRC does not
match, whose payload is not such an object, or whose state change is not
allowed; it returns how many bytes it cut and why, as a segment's recovery
does. The journal is rewritten whole (atomically) on open once it holds more
than REMOTE_METADATA_ENTRIES_DEAD_MAX entries beyond what its live segments
need (``compact``).

Without a journal (a lost disk, a shard taking over a partition) the state is
rebuilt from the remote manifests (``rebuild``, given the segments listed from
the store: remote_transfer.py): every manifest is a finished copy. A journal
that may be behind the store (this shard led the partition before another
did) takes the manifests it lacks with ``adopt`` (remote_transfer.sync_with_store).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import NamedTuple

import crc32c

from plinth import limits
from plinth.durable_files import fsync_directory, write_file_atomically
from plinth.errors import CorruptDataError, StorageError
from plinth.shards.tier.remote_log_view import RemoteLogView
from plinth.shards.tier.remote_segment import RemoteSegment

logger = logging.getLogger(__name__)

__all__ = ["JOURNAL_FILE", "JournalRecovery", "RemoteLogMetadata", "SegmentState",
           "finished_segments_in_journal", "recover_journal"]

JOURNAL_FILE = "remote-log-metadata"
_ENTRY_HEADER = struct.Struct(
    "<"
    "I"  # 0  payload_bytes
    "I"  # 4  crc: CRC-32C of the payload
)
ENTRY_HEADER_BYTES = 8
if _ENTRY_HEADER.size != ENTRY_HEADER_BYTES:
    raise AssertionError(f"journal entry header is {_ENTRY_HEADER.size} bytes, the layout says 8")


class SegmentState(Enum):
    COPY_SEGMENT_STARTED = "COPY_SEGMENT_STARTED"
    COPY_SEGMENT_FINISHED = "COPY_SEGMENT_FINISHED"
    DELETE_SEGMENT_STARTED = "DELETE_SEGMENT_STARTED"
    DELETE_SEGMENT_FINISHED = "DELETE_SEGMENT_FINISHED"


_ALLOWED = {
    SegmentState.COPY_SEGMENT_FINISHED: (SegmentState.COPY_SEGMENT_STARTED,),
    SegmentState.DELETE_SEGMENT_STARTED: (SegmentState.COPY_SEGMENT_STARTED,
                                          SegmentState.COPY_SEGMENT_FINISHED),
    SegmentState.DELETE_SEGMENT_FINISHED: (SegmentState.DELETE_SEGMENT_STARTED,),
}


class JournalRecovery(NamedTuple):
    """What ``recover_journal`` found."""

    bytes_truncated: int   # cut from the end of the journal
    entries_valid: int     # whole, valid entries kept
    reason: str = ""       # why the first cut entry was invalid; "" if nothing was cut


@dataclass
class _Tracked:
    segment: RemoteSegment
    state: SegmentState
    state_ms: int


class RemoteLogMetadata:
    """The remote segments of one partition and their states. Owning thread only.

    Make one with ``open`` (reads, recovers and maybe compacts the journal) or
    ``rebuild`` (a new journal from the remote manifests).
    """

    def __init__(self, directory: Path, fd: int, entries: int):
        self.directory = Path(directory)
        self._fd = fd
        self._entries = entries            # in the journal file
        self._segments: dict[str, _Tracked] = {}

    @property
    def journal_path(self) -> Path:
        return self.directory / JOURNAL_FILE

    # --- Opening --------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path) -> tuple[RemoteLogMetadata, JournalRecovery]:
        """The partition's metadata from its journal (an empty one if there is none;
        the directory is created if missing), and what recovery cut from it. Raises
        StorageError if the disk refuses."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        path = Path(directory) / JOURNAL_FILE
        recovery, records = recover_journal(path)
        if recovery.bytes_truncated:
            logger.warning("cut %d bytes from %s after %d valid entries: %s",
                           recovery.bytes_truncated, path, recovery.entries_valid, recovery.reason)
        metadata = cls(directory, _open_for_append(path), 0)
        for record in records:
            metadata._apply(record)
        metadata._entries = len(records)
        if metadata._entries - metadata._live_entries() > limits.REMOTE_METADATA_ENTRIES_DEAD_MAX:
            metadata.compact()
        return metadata, recovery

    @classmethod
    def rebuild(cls, directory: Path, segments: list[RemoteSegment],
                now_ms: int) -> RemoteLogMetadata:
        """A new journal (replacing any) in which each of ``segments`` (read from
        the remote manifests) is a finished copy."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        records = []
        for segment in segments:
            records.append(_record(SegmentState.COPY_SEGMENT_STARTED, now_ms, segment=segment))
            records.append(_record(SegmentState.COPY_SEGMENT_FINISHED, now_ms, segment.segment_id))
        _write_journal(Path(directory) / JOURNAL_FILE, records)
        metadata = cls(directory, _open_for_append(Path(directory) / JOURNAL_FILE), len(records))
        for record in records:
            metadata._apply(record)
        return metadata

    def compact(self) -> None:
        """Rewrite the journal with only what its live segments need (atomically)."""
        records = []
        for tracked in self._segments.values():
            records.append(_record(SegmentState.COPY_SEGMENT_STARTED, tracked.state_ms,
                                   segment=tracked.segment))
            if tracked.state is not SegmentState.COPY_SEGMENT_STARTED:
                # (a deletion that started after the copy finished needs only its own entry)
                records.append(_record(tracked.state, tracked.state_ms,
                                       tracked.segment.segment_id))
        os.close(self._fd)
        _write_journal(self.journal_path, records)
        self._fd = _open_for_append(self.journal_path)
        logger.info("compacted %s from %d entries to %d", self.journal_path, self._entries,
                    len(records))
        self._entries = len(records)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # --- State changes (each durable before it returns) -------------------------------

    def copy_started(self, segment: RemoteSegment, now_ms: int) -> None:
        """Before the first object of ``segment`` is uploaded."""
        if segment.segment_id in self._segments:
            raise AssertionError(f"{segment.describe()} is already tracked")
        if len(self._segments) >= limits.REMOTE_SEGMENTS_PER_PARTITION_MAX:
            raise StorageError(f"{self.journal_path}: {len(self._segments)} remote segments "
                               f"tracked, the limit is {limits.REMOTE_SEGMENTS_PER_PARTITION_MAX}")
        self._append(_record(SegmentState.COPY_SEGMENT_STARTED, now_ms, segment=segment))

    def copy_finished(self, segment_id: str, now_ms: int) -> None:
        """After its manifest is written."""
        self._append(_record(SegmentState.COPY_SEGMENT_FINISHED, now_ms, segment_id))

    def delete_started(self, segment_id: str, now_ms: int) -> None:
        """Before the first object of it is deleted."""
        self._append(_record(SegmentState.DELETE_SEGMENT_STARTED, now_ms, segment_id))

    def delete_finished(self, segment_id: str, now_ms: int) -> None:
        """After every object of it is gone."""
        self._append(_record(SegmentState.DELETE_SEGMENT_FINISHED, now_ms, segment_id))

    def adopt(self, segments: list[RemoteSegment], now_ms: int) -> None:
        """Track ``segments``, read from the store's manifests and not tracked yet, as
        finished copies (another shard uploaded them): a started and a finished entry
        each, written with one fsync. A crash in the middle leaves some started only,
        which ``clean_up_unfinished`` finishes (their manifests exist)."""
        if not segments:
            return
        if len(self._segments) + len(segments) > limits.REMOTE_SEGMENTS_PER_PARTITION_MAX:
            raise StorageError(f"{self.journal_path}: {len(self._segments)} remote segments "
                               f"tracked and {len(segments)} to adopt, over the limit of "
                               f"{limits.REMOTE_SEGMENTS_PER_PARTITION_MAX}")
        records = []
        for segment in segments:
            records.append(_record(SegmentState.COPY_SEGMENT_STARTED, now_ms, segment=segment))
            records.append(_record(SegmentState.COPY_SEGMENT_FINISHED, now_ms,
                                   segment.segment_id))
        self._append(*records)

    def _append(self, *records: dict) -> None:
        for record in records:   # a bad change fails before anything is written
            self._apply(record, source="a new entry")
        entries = b"".join(_entry_bytes(record) for record in records)
        try:
            os.write(self._fd, entries)
            os.fsync(self._fd)
        except OSError as error:
            raise StorageError(f"cannot append {len(entries)} bytes ({len(records)} entries, "
                               f"{records[0]['state']} first) to {self.journal_path}: "
                               f"{error}") from error
        self._entries += len(records)

    def _apply(self, record: dict, source: str = "the journal") -> None:
        state = SegmentState(record["state"])
        if state is SegmentState.COPY_SEGMENT_STARTED:
            segment = record["segment"]
            if segment.segment_id in self._segments:
                raise AssertionError(f"{source}: {segment.describe()} started twice")
            self._segments[segment.segment_id] = _Tracked(segment, state, record["time_ms"])
            return
        tracked = self._segments.get(record["segment_id"])
        if tracked is None or tracked.state not in _ALLOWED[state]:
            raise AssertionError(
                f"{source}: {state.value} of remote segment {record['segment_id']}, which is "
                f"{tracked.state.value if tracked else 'unknown'} in {self.journal_path}")
        if state is SegmentState.DELETE_SEGMENT_FINISHED:
            del self._segments[record["segment_id"]]
        else:
            tracked.state, tracked.state_ms = state, record["time_ms"]

    def _live_entries(self) -> int:
        return sum(1 if tracked.state is SegmentState.COPY_SEGMENT_STARTED else 2
                   for tracked in self._segments.values())

    # --- Queries ------------------------------------------------------------------------

    def state_of(self, segment_id: str) -> SegmentState | None:
        tracked = self._segments.get(segment_id)
        return tracked.state if tracked else None

    def finished_segments(self) -> list[RemoteSegment]:
        """The readable segments (COPY_SEGMENT_FINISHED), by base offset."""
        return sorted((tracked.segment for tracked in self._segments.values()
                       if tracked.state is SegmentState.COPY_SEGMENT_FINISHED),
                      key=lambda segment: (segment.base_offset, segment.end_offset))

    def copies_unfinished(self) -> list[RemoteSegment]:
        """Uploads that started and neither finished nor were cleaned up (a crash, an error)."""
        return [tracked.segment for tracked in self._segments.values()
                if tracked.state is SegmentState.COPY_SEGMENT_STARTED]

    def deletes_unfinished(self) -> list[RemoteSegment]:
        return [tracked.segment for tracked in self._segments.values()
                if tracked.state is SegmentState.DELETE_SEGMENT_STARTED]

    def view(self) -> RemoteLogView:
        """The readable segments as an immutable snapshot (remote_log_view.py), which
        answers the queries: the segment holding an offset, the remote log's start,
        end and bytes."""
        return RemoteLogView.of(self.finished_segments())

    def segments_past_retention(self, *, now_ms: int, retention_ms: int, retention_bytes: int,
                                local_only_bytes: int, log_start_floor: int = 0
                                ) -> list[RemoteSegment]:
        """Readable segments to delete, oldest first (Kafka's semantics: retention
        counts the whole log, local plus remote). A segment wholly below
        ``log_start_floor``, the offset deleteRecords raised the log start to
        (Partition.floor), goes whatever its age and size, as Kafka's remote log
        manager deletes one that breaches the log start: its records are never served
        again, and a user who deleted them expects them gone from the store too. Not
        the partition's log start offset as derived: a range that starts past remote
        segments its view has not adopted yet (another shard's uploads, after shards
        were added) starts there without any record below it being deleted.

        A segment goes if its newest record is more than ``retention_ms`` old, or
        if the log without it still holds ``retention_bytes`` (its remote bytes plus
        ``local_only_bytes``, what is local and not uploaded). -1 disables either.
        Only a prefix is deleted: retention never opens a hole in the log."""
        segments = self.finished_segments()
        total_bytes = sum(segment.size_bytes for segment in segments) + local_only_bytes
        doomed = []
        for segment in segments:
            too_old = retention_ms >= 0 and segment.max_timestamp_ms < now_ms - retention_ms
            too_big = retention_bytes >= 0 and total_bytes - segment.size_bytes >= retention_bytes
            below_start = segment.end_offset <= log_start_floor
            if not (too_old or too_big or below_start):
                break
            doomed.append(segment)
            total_bytes -= segment.size_bytes
        return doomed

    def __repr__(self) -> str:
        return (f"RemoteLogMetadata({self.journal_path}, {len(self._segments)} segments, "
                f"{self._entries} journal entries)")


# --- The journal file ------------------------------------------------------------------

def _record(state: SegmentState, time_ms: int, segment_id: str | None = None, *,
            segment: RemoteSegment | None = None) -> dict:
    """An entry's payload, in memory (``segment`` a RemoteSegment)."""
    if state is SegmentState.COPY_SEGMENT_STARTED:
        return {"state": state.value, "time_ms": time_ms, "segment": segment}
    return {"state": state.value, "time_ms": time_ms, "segment_id": segment_id}


def _entry_bytes(record: dict) -> bytes:
    """One journal entry, as in the module docstring."""
    encoded = dict(record)
    if "segment" in encoded:
        encoded["segment"] = encoded["segment"].to_record()
    payload = json.dumps(encoded, sort_keys=True, separators=(",", ":")).encode()
    if len(payload) > limits.REMOTE_METADATA_ENTRY_BYTES_MAX:
        raise AssertionError(f"a journal entry of {len(payload)} bytes is over "
                             f"{limits.REMOTE_METADATA_ENTRY_BYTES_MAX}")
    return _ENTRY_HEADER.pack(len(payload), crc32c.crc32c(payload)) + payload


def _decoded(payload: bytes, position: int, path: Path) -> dict:
    """The record of an entry whose CRC matched; CorruptDataError if it is not one."""
    where = f"{path} entry at position {position}"
    try:
        record = json.loads(payload)
        state = SegmentState(record["state"])
        if not isinstance(record["time_ms"], int):
            raise ValueError(f"time_ms {record['time_ms']!r} is not an integer")
        if state is SegmentState.COPY_SEGMENT_STARTED:
            record["segment"] = RemoteSegment.from_record(record["segment"], where)
        elif not isinstance(record["segment_id"], str):
            raise ValueError(f"segment_id {record['segment_id']!r} is not a string")
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptDataError(f"{where}: not a metadata record: {error}") from error
    return record


def finished_segments_in_journal(directory: Path) -> list[RemoteSegment]:
    """The readable segments the journal in ``directory`` records, without writing
    anything (a torn tail is ignored here and cut by the owner's ``open``). Any
    thread, before the owner opens it: the shard's loop reads it when it opens a
    partition, so that the partition serves its remote log from its first fetch
    (the uploader publishes its own view later). Raises StorageError if the disk
    refuses."""
    path = Path(directory) / JOURNAL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise StorageError(f"cannot read {path}: {error}") from error
    replay = RemoteLogMetadata(path.parent, -1, 0)
    position = 0
    while position < len(data):
        try:
            record, entry_bytes = _entry_at(data, position, path)
            replay._apply(record, source=f"{path} entry at position {position}")
        except (CorruptDataError, AssertionError):
            break
        position += entry_bytes
    return replay.finished_segments()


def recover_journal(path: Path) -> tuple[JournalRecovery, list[dict]]:
    """Read the journal at ``path``; cut it at the first invalid entry (module docstring).

    Returns what it cut and why, and the valid records, oldest first. A missing
    journal is an empty one. Raises StorageError if the file cannot be read or cut.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalRecovery(0, 0), []
    except OSError as error:
        raise StorageError(f"cannot read {path}: {error}") from error
    records, position, reason = [], 0, ""
    checker = RemoteLogMetadata(path.parent, -1, 0)   # replays the states, to check them
    while position < len(data):
        try:
            record, entry_bytes = _entry_at(data, position, path)
            checker._apply(record, source=f"{path} entry at position {position}")
        except (CorruptDataError, AssertionError) as error:
            reason = str(error)
            break
        records.append(record)
        position += entry_bytes
    bytes_truncated = len(data) - position
    if bytes_truncated:
        _cut(path, position, reason)
    return JournalRecovery(bytes_truncated, len(records), reason), records


def _entry_at(data: bytes, position: int, path: Path) -> tuple[dict, int]:
    if len(data) - position < ENTRY_HEADER_BYTES:
        raise CorruptDataError(f"{path}: torn entry header at position {position}: "
                               f"{len(data) - position} bytes left, need {ENTRY_HEADER_BYTES}")
    payload_bytes, crc = _ENTRY_HEADER.unpack_from(data, position)
    start = position + ENTRY_HEADER_BYTES
    if payload_bytes > limits.REMOTE_METADATA_ENTRY_BYTES_MAX:
        raise CorruptDataError(f"{path}: entry at position {position} declares {payload_bytes} "
                               f"bytes, over {limits.REMOTE_METADATA_ENTRY_BYTES_MAX}")
    if start + payload_bytes > len(data):
        raise CorruptDataError(f"{path}: torn entry at position {position}: declares "
                               f"{payload_bytes} bytes, {len(data) - start} left")
    payload = data[start:start + payload_bytes]
    computed = crc32c.crc32c(payload)
    if computed != crc:
        raise CorruptDataError(f"{path}: CRC mismatch in entry at position {position}: "
                               f"computed 0x{computed:08x}, header says 0x{crc:08x}")
    return _decoded(payload, position, path), ENTRY_HEADER_BYTES + payload_bytes


def _cut(path: Path, position: int, reason: str) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, position)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise StorageError(f"cannot cut {path} to {position} bytes ({reason}): {error}") from error


def _write_journal(path: Path, records: list[dict]) -> None:
    try:
        write_file_atomically(path, b"".join(_entry_bytes(record) for record in records),
                              sync_dir=True)
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error}") from error


def _open_for_append(path: Path) -> int:
    """The journal, opened for appending; a new one's creation made durable."""
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not existed:
            fsync_directory(path.parent)
    except OSError as error:
        raise StorageError(f"cannot open {path} for appending: {error}") from error
    return fd
