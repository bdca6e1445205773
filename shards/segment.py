"""A segment: one append-only .log file of entries, with its two indexes.

Used only by the shard actor's data thread. A segment is three files in its
partition's directory, named by the segment's base offset zero-padded to 20
digits (as Kafka does, so that ``ls`` sorts them numerically):

    00000000000000001234.log        the entries, appended only
    00000000000000001234.index      offset -> position   (offset_index.py)
    00000000000000001234.timeindex  timestamp -> offset  (time_index.py)
    00000000000000001234.log.cut-<time ns>-<position>    bytes a recovery cut (below)

A cut file's name carries the clock when the cut was made (nanoseconds since the
epoch, 20 digits) and the position in the .log file the cut bytes came from (10
digits: positions are UInt32), zero-padded so that ``ls`` sorts a segment's cut
files oldest first. Each cut gets its own file, never replacing an earlier one;
a segment keeps at most limits.CUT_FILES_KEPT_MAX of them, the smallest removed
(logged at WARNING, named with its size) beyond that, never the newest: a cut of
acknowledged entries mid-file is large, the torn tails of a crash loop small.
``<base>.log.cut``, with no suffix, is the one file per segment an earlier
version kept: the oldest.

The .log file is a run of entries (log_entry.py) from position 0:

    [LogEntryHeader 48 B][RecordBatch batch_bytes B][LogEntryHeader 48 B]...

The first entry's base_offset is the segment's base offset and each next
one's is the previous base_offset + record_count: offsets have no gaps.
Positions are tracked in memory; nothing written is read back. The index
files are written whole when the segment rolls or closes, and rebuilt from
the .log file when missing or invalid. ``recover()`` checks every entry of an
active segment after a restart and cuts the file at the first torn or
corrupt one; before it cuts, it copies the bytes it cuts, as they were, to
a new cut file, fsynced: a torn tail is most often a write never acknowledged,
but a flipped byte mid-file cuts acknowledged entries too, and an operator may
want to salvage them (so a later cut, most often a small torn tail, must not
replace them). ``delete()`` removes the cut files with the segment, logging at
WARNING what they held. ``truncate_to()`` cuts the active segment at an entry boundary
(a follower whose log diverged from its leader's), and ``append_entries()``
writes a run of entries exactly as a leader stored them (a follower's
replication), with the headers they came with.

Open files. The active segment keeps its .log file open. A segment that
rolled out of being active (``retire``), or an older one found on disk at a
restart (``unopened``: known by its file's name, size and modification time
only), reads its file through the shard's SegmentFiles (segment_files.py): the
file is opened when read, its indexes loaded the first time, and closed again
when the shard needs room. So the descriptors a shard holds do not grow with
its segments, and a restart opens none of the older ones.

The time of the last write (``last_written_ms``: the clock at the last append,
or the file's modification time for a segment found on disk) caps the
segment's timestamps for retention (partition_log.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from collections.abc import Iterator
from typing import NamedTuple

from plinth.durable_files import fsync_directory
from plinth.errors import CorruptDataError, StorageError
from plinth.limits import (
    CUT_FILES_KEPT_MAX, INDEX_INTERVAL_BYTES, SEGMENT_FIND_CHUNK_BYTES_MAX,
    SEGMENT_SCAN_CHUNK_BYTES)
from plinth.format.log_entry import (
    BATCH_FORMAT_PLINTH, LOG_ENTRY_HEADER_BYTES, LogEntryHeader, build_entry_header, check_entry_crc,
    scan_whole_entries, unpack_entry_header)
from plinth.shards.offset_index import UINT32_LIMIT, OffsetIndex
from plinth.shards.segment_files import SegmentFiles
from plinth.shards.time_index import TimeIndex

logger = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
CUT_SUFFIX = ".log.cut"   # then "-<time ns>-<position>" (module docstring)
OFFSET_DIGITS = 20
CUT_TIME_NS_DIGITS = 20
CUT_POSITION_DIGITS = 10
# The running maximum timestamp of a segment with no entries.
TIMESTAMP_MS_NONE = -(1 << 63)

__all__ = ["BadEntry", "RecoveryResult", "Segment", "SegmentCheck", "cut_file_name",
           "cut_file_paths", "log_cut_files_deleted", "parse_cut_file_name", "parse_log_file_name",
           "segment_file_name"]


class RecoveryResult(NamedTuple):
    """What ``Segment.recover()`` (or a whole partition's recovery) found."""

    bytes_truncated: int   # bytes cut from the end of the .log file
    entries_valid: int     # whole, valid entries kept
    reason: str = ""       # why the first cut entry was invalid; "" if nothing was cut
    cut_kept_path: Path | None = None   # the new cut file holding the bytes cut, if kept


class BadEntry(NamedTuple):
    """An entry ``Segment.check_file()`` found whole, its header sound, its batch failing
    its CRC: a read of its offsets fails, the entries after it are read past it."""

    position: int
    base_offset: int
    end_offset: int      # the offset after its records
    entry_bytes: int
    reason: str


class SegmentCheck(NamedTuple):
    """What ``Segment.check_file()`` found in a .log file, which it left as it was."""

    entries_valid: int   # whole, valid entries (after a skipped bad entry too)
    bytes_valid: int     # the bytes they take
    end_offset: int      # the offset after the last entry read: where ``reason`` starts
    bytes_bad: int       # from where ``reason`` starts to the end: what cannot be read on
    reason: str = ""     # why the entries stop being readable there; "" if they do not
    bad_entries: tuple[BadEntry, ...] = ()   # entries skipped (past_bad_crc), in order

    @property
    def unreadable_position(self) -> int:
        """Where the entries stop being readable (the file's end if they do not)."""
        return self.bytes_valid + sum(bad.entry_bytes for bad in self.bad_entries)


def segment_file_name(base_offset: int, suffix: str) -> str:
    """``00000000000000001234.log`` for base offset 1234 and suffix ``.log``."""
    if not 0 <= base_offset < 10 ** OFFSET_DIGITS:
        raise AssertionError(f"base offset {base_offset} does not fit {OFFSET_DIGITS} digits "
                             f"of a segment file name")
    return f"{base_offset:0{OFFSET_DIGITS}d}{suffix}"


def cut_file_name(base_offset: int, time_ns: int, position: int) -> str:
    """``00000000000000001234.log.cut-<time ns>-<position>`` (module docstring)."""
    if not (0 <= time_ns < 10 ** CUT_TIME_NS_DIGITS
            and 0 <= position < 10 ** CUT_POSITION_DIGITS):
        raise AssertionError(f"cut time {time_ns} ns or position {position} does not fit "
                             f"a cut file name")
    return segment_file_name(base_offset, f"{CUT_SUFFIX}-{time_ns:0{CUT_TIME_NS_DIGITS}d}"
                                          f"-{position:0{CUT_POSITION_DIGITS}d}")


def parse_cut_file_name(name: str) -> int | None:
    """The base offset of a cut file's name (or an earlier version's ``.log.cut``),
    or None for any other file."""
    stem, rest = name[:OFFSET_DIGITS], name[OFFSET_DIGITS:]
    if not stem.isdigit() or not (rest == CUT_SUFFIX or rest.startswith(CUT_SUFFIX + "-")):
        return None
    return int(stem)


def cut_file_paths(directory: Path, base_offset: int) -> list[Path]:
    """The cut files of the segment at ``base_offset`` in ``directory``, oldest first
    (their names sort so; an earlier version's ``.log.cut`` first). Any thread."""
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries
                       if parse_cut_file_name(entry.name) == base_offset)
    return [Path(directory) / name for name in names]


def parse_log_file_name(name: str) -> int | None:
    """The base offset of a ``.log`` file name, or None for any other file."""
    stem, suffix = name[:-len(LOG_SUFFIX)], name[-len(LOG_SUFFIX):]
    if suffix != LOG_SUFFIX or len(stem) != OFFSET_DIGITS or not stem.isdigit():
        return None
    return int(stem)


class Segment:
    """One .log file and its indexes. Data thread only, every method.

    Make one with ``Segment.create`` (a new, empty active segment),
    ``Segment.open`` followed by ``recover()`` (the active segment after a
    restart) or ``load_indexes()``, or ``Segment.unopened`` (an older segment
    after a restart, read through a SegmentFiles). A segment read through a
    SegmentFiles (``unopened``, or ``retire``d when the log rolled) opens and
    closes its file as that cache says.
    """

    # Many thousands of older segments may be known at once: no per-instance dict.
    __slots__ = ("directory", "base_offset", "created_ms", "last_written_ms", "_fd", "_files",
                 "_index_interval_bytes", "_flushed_size_bytes", "_ready", "_offset_index",
                 "_time_index", "_size_bytes", "_end_offset", "_max_timestamp_ms",
                 "_bytes_since_index_entry", "_indexed_position", "_indexes_written",
                 "cut_files_there", "_fsync_failed", "_flushed_end_offset")

    def __init__(self, directory: Path, base_offset: int, fd: int, *,
                 index_interval_bytes: int, created_ms: int, files: SegmentFiles | None = None):
        # One Path object shared by a partition's segments, not one each.
        self.directory = directory if isinstance(directory, Path) else Path(directory)
        self.base_offset = base_offset
        self.created_ms = created_ms
        self.last_written_ms = created_ms
        self._fd = fd
        self._files = files
        self._index_interval_bytes = index_interval_bytes
        self._flushed_size_bytes = 0
        self._flushed_end_offset = base_offset   # the end offset at the last good fsync
        # An fsync failed: what was written since the last good one may not be on the
        # disk, and the kernel reports that once; every fsync fails until it is cut.
        self._fsync_failed = False
        self._ready = False
        # Whether cut files of this segment are there; None: not known, ``delete`` lists
        # the directory to know (the partition log says, from its one listing at open,
        # so that retention does not list a directory of thousands of files per segment).
        self.cut_files_there: bool | None = None
        self._reset(indexes=fd >= 0)   # a segment without its file loads them with it

    @property
    def log_path(self) -> Path:
        return self.directory / segment_file_name(self.base_offset, LOG_SUFFIX)

    @property
    def index_path(self) -> Path:
        return self.directory / segment_file_name(self.base_offset, INDEX_SUFFIX)

    @property
    def time_index_path(self) -> Path:
        return self.directory / segment_file_name(self.base_offset, TIME_INDEX_SUFFIX)

    def cut_paths(self) -> list[Path]:
        """The files holding bytes recoveries cut from this segment, oldest first."""
        return cut_file_paths(self.directory, self.base_offset)

    def _reset(self, indexes: bool = True) -> None:
        """Forget every entry: empty indexes (or none yet), nothing tracked."""
        self._offset_index = OffsetIndex(self.base_offset) if indexes else None
        self._time_index = TimeIndex(self.base_offset) if indexes else None
        self._size_bytes = 0
        self._end_offset = self.base_offset
        self._max_timestamp_ms = TIMESTAMP_MS_NONE
        self._bytes_since_index_entry = 0
        self._indexed_position = 0
        self._indexes_written = False

    # --- Opening -------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, *, index_interval_bytes: int,
               created_ms: int) -> Segment:
        """A new, empty segment; fails if its .log file already exists."""
        path = Path(directory) / segment_file_name(base_offset, LOG_SUFFIX)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as error:
            raise StorageError(f"cannot create segment {path}: {error}") from error
        try:
            fsync_directory(Path(directory))
        except OSError as error:
            os.close(fd)
            path.unlink(missing_ok=True)   # else every retry fails on O_EXCL: "File exists"
            raise StorageError(f"cannot fsync directory {directory} after creating {path}: "
                               f"{error}") from error
        segment = cls(directory, base_offset, fd, index_interval_bytes=index_interval_bytes,
                      created_ms=created_ms)
        segment._ready = True
        segment.cut_files_there = False   # a cut file of a new base offset would be a stray
        return segment

    @classmethod
    def open(cls, directory: Path, base_offset: int, *,
             index_interval_bytes: int) -> Segment:
        """An existing segment; call ``recover()`` or ``load_indexes()`` next.

        Its age counts from the .log file's last modification: Linux does not
        give Python a file's creation time, so after a restart the active
        segment rolls by age at the earliest ``segment_ms_max`` after its last write.
        """
        path = Path(directory) / segment_file_name(base_offset, LOG_SUFFIX)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError as error:
            raise StorageError(f"cannot open segment {path}: {error}") from error
        modified_ms = os.fstat(fd).st_mtime_ns // 1_000_000
        return cls(directory, base_offset, fd, index_interval_bytes=index_interval_bytes,
                   created_ms=modified_ms)

    @classmethod
    def unopened(cls, directory: Path, base_offset: int, *, index_interval_bytes: int,
                 size_bytes: int, modified_ms: int, files: SegmentFiles) -> Segment:
        """An older segment known by its .log file's name, size and modification time.

        Nothing is opened or read now: the first read through ``files`` opens
        the file and loads (or rebuilds) its indexes, and with them its end
        offset and largest timestamp. Its age and last write count from the
        modification time.
        """
        segment = cls(directory, base_offset, -1, index_interval_bytes=index_interval_bytes,
                      created_ms=modified_ms, files=files)
        segment._size_bytes = segment._flushed_size_bytes = size_bytes
        segment._indexes_written = True   # on disk, or rebuilt when loaded
        return segment

    def open_file(self) -> None:
        """Open the .log file for reading, loading the indexes the first time.

        Called by SegmentFiles (``use``) only. Raises StorageError, with the
        file closed again, if the file cannot be opened or read.
        """
        try:
            self._fd = os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise StorageError(f"cannot open segment {self.log_path}: {error}") from error
        if self._ready:
            return
        try:
            rebuild_reason = self.load_indexes()
        except BaseException:
            self.close_file()
            raise
        if rebuild_reason is not None:
            logger.warning("rebuilt the indexes of %s: %s", self.log_path, rebuild_reason)

    def close_file(self) -> None:
        """Close the .log file, keeping the indexes and what is known of the entries.

        Called by SegmentFiles (to make room) and by ``release``.
        """
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def retire(self, files: SegmentFiles) -> None:
        """The log rolled past this segment: fsync it, write its indexes, and let
        ``files`` close its file when the shard needs room (and reopen it on a read)."""
        self.flush()
        self.write_indexes()
        self._files = files
        files.add(self)

    def _use_file(self) -> None:
        """Before reading the file: have it open (and the indexes loaded)."""
        if self._files is not None:
            self._files.use(self)
        elif not self._ready:
            self._raise_not_ready()

    def _file_bytes(self) -> int:
        return os.fstat(self._fd).st_size

    # --- Recovery and index loading -------------------------------------------

    def recover(self) -> RecoveryResult:
        """Check every entry from position 0; cut the file at the first bad one.

        An entry is bad if its header is torn or has a wrong magic, length or
        attributes, if its batch is torn, if its CRC does not match, or if its
        base offset does not follow the previous entry's. Rebuilds both indexes, fsyncs,
        and returns how many bytes it cut and why.
        """
        file_bytes = self._file_bytes()
        self._reset()
        entries_valid, reason = self._track_valid_entries(file_bytes)
        bytes_truncated = file_bytes - self._size_bytes
        cut_kept_path = None
        if bytes_truncated:
            cut_kept_path = self._keep_cut_bytes(file_bytes)
            try:
                os.ftruncate(self._fd, self._size_bytes)
            except OSError as error:
                raise StorageError(f"cannot cut {self.log_path} to {self._size_bytes} bytes "
                                   f"({reason}): {error}") from error
        self._fsync()
        self._ready = True
        return RecoveryResult(bytes_truncated, entries_valid, reason, cut_kept_path)

    def _track_valid_entries(self, file_bytes: int, position: int = 0) -> tuple[int, str]:
        """Track every entry from ``position`` (the tracked size: 0, or past an entry
        ``check_file`` skipped) that passes its checks, its CRC included, up to the
        first bad one; (entries tracked, why the first bad one is bad or "")."""
        entries_valid = 0
        try:
            for position, header, _ in self._scan_file(position, file_bytes, verify_crc=True):
                self._track_scanned(header, position)
                entries_valid += 1
        except CorruptDataError as error:
            return entries_valid, error.message
        return entries_valid, ""

    def _keep_cut_bytes(self, file_bytes: int) -> Path | None:
        """Copy the bytes from ``_size_bytes`` to ``file_bytes``, which recovery is about
        to cut, to a new cut file, durably (the copy must outlive the cut), then remove
        the smallest earlier ones beyond CUT_FILES_KEPT_MAX. None, logged, if the disk
        refuses: the log must start anyway."""
        path = self.directory / cut_file_name(self.base_offset, time.time_ns(),
                                              self._size_bytes)
        try:
            _copy_range(self._fd, self._size_bytes, file_bytes, path)
            fsync_directory(path.parent)
        except OSError as error:
            with contextlib.suppress(OSError):   # (a half copy misleads; it may not go either)
                path.unlink(missing_ok=True)
            logger.error("%s: cannot keep the %d bytes recovery cuts at position %d in %s: %s",
                         self.log_path, file_bytes - self._size_bytes, self._size_bytes, path,
                         error)
            return None
        self.cut_files_there = True
        self._remove_smallest_cut_files()
        return path

    def _remove_smallest_cut_files(self) -> None:
        """Keep CUT_FILES_KEPT_MAX cut files: the disk is not to fill with the cuts of a
        segment torn at every restart. Those removed are the smallest of the earlier
        ones (the oldest of equal size), never the newest: a large one most likely
        holds acknowledged entries a flipped byte cut, a small one the torn tail of a
        write never acknowledged. Each removal is logged."""
        paths = self.cut_paths()
        if len(paths) <= CUT_FILES_KEPT_MAX:
            return
        sized = []
        for order, path in enumerate(paths[:-1]):
            with contextlib.suppress(OSError):   # (gone meanwhile: nothing to remove)
                sized.append((path.stat().st_size, order, path))
        for size_bytes, _, path in sorted(sized)[:len(paths) - CUT_FILES_KEPT_MAX]:
            try:
                path.unlink()
            except OSError as error:
                logger.error("%s: cannot remove the cut file %s: %s", self.log_path, path,
                             error)
                continue
            logger.warning("%s: removed %s (%d bytes an earlier recovery cut, which may hold "
                           "acknowledged records): a segment keeps %d cut files "
                           "(limits.CUT_FILES_KEPT_MAX), and this was the smallest of the %d "
                           "before the newest", self.log_path, path, size_bytes,
                           CUT_FILES_KEPT_MAX, len(paths) - 1)

    @classmethod
    def check_file(cls, directory: Path, base_offset: int, *,
                   past_bad_crc: bool = False) -> SegmentCheck:
        """Check every entry of a segment's .log file as ``recover()`` does, changing
        nothing: the file is opened read-only and no index is written. With
        ``past_bad_crc`` (an older segment, which reads find entries in through its
        index), an entry whose header is sound but whose batch fails its CRC is noted
        and skipped, and the check goes on after it; else the first bad entry ends it,
        as it ends a recovery. Any process (an offline check: plinth check);
        StorageError if the file cannot be read."""
        path = Path(directory) / segment_file_name(base_offset, LOG_SUFFIX)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise StorageError(f"cannot open segment {path}: {error}") from error
        segment = cls(directory, base_offset, fd, index_interval_bytes=INDEX_INTERVAL_BYTES,
                      created_ms=0)
        try:
            file_bytes = segment._file_bytes()
            try:
                entries_valid, reason, bad_entries = segment._check_entries(file_bytes,
                                                                            past_bad_crc)
            except OSError as error:
                raise StorageError(f"cannot read segment {path}: {error}") from error
            bad_bytes = sum(bad.entry_bytes for bad in bad_entries)
            return SegmentCheck(entries_valid, segment._size_bytes - bad_bytes,
                                segment._end_offset, file_bytes - segment._size_bytes, reason,
                                tuple(bad_entries))
        finally:
            os.close(fd)

    def _check_entries(self, file_bytes: int, past_bad_crc: bool
                       ) -> tuple[int, str, list[BadEntry]]:
        """``check_file``'s scan: (entries valid, why the entries stop being readable
        or "", the bad entries skipped). Ends: each round tracks or skips an entry."""
        entries_valid, bad_entries = 0, []
        while True:
            count, reason = self._track_valid_entries(file_bytes, self._size_bytes)
            entries_valid += count
            header = self._header_of_bad_batch(file_bytes) if reason and past_bad_crc else None
            if header is None:
                return entries_valid, reason, bad_entries
            bad_entries.append(BadEntry(self._size_bytes, header.base_offset,
                                        header.end_offset, header.entry_bytes, reason))
            self._track(header.base_offset, header.record_count, header.max_timestamp_ms,
                        self._size_bytes, header.entry_bytes)

    def _header_of_bad_batch(self, file_bytes: int) -> LogEntryHeader | None:
        """The header of the entry at the tracked size if only its batch is bad (its
        header sound, its offsets next, the entry whole, its CRC failing): reads find
        the entries after it. None if anything else is wrong with it."""
        position = self._size_bytes
        try:
            header = unpack_entry_header(os.pread(self._fd, LOG_ENTRY_HEADER_BYTES, position))
        except CorruptDataError:
            return None
        if header.base_offset != self._end_offset or position + header.entry_bytes > file_bytes:
            return None
        batch = os.pread(self._fd, header.batch_bytes, position + LOG_ENTRY_HEADER_BYTES)
        try:
            check_entry_crc(header, batch, position)
        except CorruptDataError:
            return header
        return None

    def load_indexes(self) -> str | None:
        """Load the index files of an older segment, or rebuild them from the log.

        Returns why the files were rebuilt (missing or invalid), or None if
        they were used. Never cuts the .log file: an older segment was fsynced
        when it rolled, and a corrupt entry in it is reported when read.
        """
        file_bytes = self._file_bytes()
        try:
            self._load_index_files(file_bytes)
            reason = None
        except (OSError, CorruptDataError) as error:
            reason = str(error)
            self._reset()
            self._scan_tail(file_bytes)
            self.write_indexes()
        self._size_bytes = file_bytes
        self._flushed_size_bytes = file_bytes
        self._flushed_end_offset = self._end_offset
        self._ready = True
        return reason

    def _load_index_files(self, file_bytes: int) -> None:
        offset_index = OffsetIndex.load(self.index_path, self.base_offset)
        time_index = TimeIndex.load(self.time_index_path, self.base_offset)
        last_offset, last_position = offset_index.last_entry
        if len(offset_index):
            self._check_indexed_entry(last_offset, last_position, file_bytes)
        time_entry = time_index.last_entry
        if (time_entry is None) != (len(offset_index) == 0) or (
                time_entry is not None and time_entry[1] > last_offset):
            raise CorruptDataError(
                f"time index {self.time_index_path} (last entry {time_entry}) does not match "
                f"offset index {self.index_path} ({len(offset_index)} entries, last offset {last_offset})")
        self._reset()
        self._offset_index, self._time_index = offset_index, time_index
        self._indexes_written = True   # until the tail scan indexes more
        self._resume_from_indexes(file_bytes)

    def _resume_from_indexes(self, file_bytes: int) -> None:
        """Track the entries from the last offset index entry on, up to ``file_bytes``.

        What the indexes say stands: the entry of their last offset, the
        largest timestamp up to it (the time index's last entry)."""
        last_offset, last_position = self._offset_index.last_entry
        time_entry = self._time_index.last_entry
        self._size_bytes = self._indexed_position = last_position
        self._end_offset = last_offset
        self._max_timestamp_ms = TIMESTAMP_MS_NONE if time_entry is None else time_entry[0]
        self._bytes_since_index_entry = 0
        self._scan_tail(file_bytes)

    def _check_indexed_entry(self, offset: int, position: int, file_bytes: int) -> None:
        """Raise CorruptDataError unless an entry with base ``offset`` starts at ``position``."""
        if position + LOG_ENTRY_HEADER_BYTES > file_bytes:
            raise CorruptDataError(
                f"offset index {self.index_path} points to position {position}, "
                f"past the end of {self.log_path} ({file_bytes} bytes)")
        header = self._read_header(position)
        if header.base_offset != offset:
            raise CorruptDataError(
                f"offset index {self.index_path} maps offset {offset} to position {position}, "
                f"where {self.log_path} has base offset {header.base_offset}")

    def _scan_tail(self, file_bytes: int) -> None:
        """Track the entries from the tracked size on; stop at a bad one."""
        try:
            for position, header, _ in self._scan_file(self._size_bytes, file_bytes,
                                                       verify_crc=False):
                self._track_scanned(header, position)
        except CorruptDataError as error:
            logger.warning("%s: entries from position %d on are unreadable, "
                           "reads there will fail: %s", self.log_path, self._size_bytes,
                           error.message)

    def _track_scanned(self, header: LogEntryHeader, position: int) -> None:
        if header.base_offset != self._end_offset:
            raise CorruptDataError(
                f"entry at position {position} has base offset {header.base_offset}, "
                f"expected {self._end_offset} after the previous entry")
        self._track(header.base_offset, header.record_count, header.max_timestamp_ms,
                    position, header.entry_bytes)

    def _track(self, base_offset: int, record_count: int, max_timestamp_ms: int,
               position: int, entry_bytes: int) -> None:
        """Account for the entry at ``position``; index it every index_interval_bytes."""
        if max_timestamp_ms > self._max_timestamp_ms:
            self._max_timestamp_ms = max_timestamp_ms
        if (self._bytes_since_index_entry >= self._index_interval_bytes
                and position > self._indexed_position):
            self._offset_index.append(base_offset, position)
            self._time_index.append(self._max_timestamp_ms, base_offset)
            self._indexed_position = position
            self._bytes_since_index_entry = 0
            self._indexes_written = False
        self._bytes_since_index_entry += entry_bytes
        self._size_bytes = position + entry_bytes
        self._end_offset = base_offset + record_count

    def _scan_file(self, position: int, end_position: int, verify_crc: bool
                   ) -> Iterator[tuple[int, LogEntryHeader, memoryview]]:
        """Yield (position, header, batch view) of each entry in [position, end_position).

        Reads in chunks of SEGMENT_SCAN_CHUNK_BYTES (more for a larger entry). Raises
        CorruptDataError, naming the position, at the first bad entry,
        including one torn by the end of the range. A view is valid only
        until the next one is yielded.
        """
        read_bytes = SEGMENT_SCAN_CHUNK_BYTES
        while position < end_position:
            wanted_bytes = min(read_bytes, end_position - position)
            chunk = os.pread(self._fd, wanted_bytes, position)
            chunk_end = position
            for entry_position, header, batch in scan_whole_entries(chunk, verify_crc, position):
                yield entry_position, header, batch
                chunk_end = entry_position + header.entry_bytes
            if chunk_end == position:
                # Not one whole entry in the chunk: read the first one whole or report it torn.
                if len(chunk) < wanted_bytes or position + wanted_bytes >= end_position:
                    self._raise_torn(position, chunk)
                read_bytes = unpack_entry_header(chunk, 0, position).entry_bytes
            else:
                read_bytes = SEGMENT_SCAN_CHUNK_BYTES
            position = chunk_end

    def _raise_torn(self, position: int, chunk: bytes) -> None:
        """CorruptDataError for the entry at ``position``, cut short: ``chunk`` is all
        there is from there, less than the entry needs (a header, or the bytes its
        header declares: ``scan_whole_entries`` yields an entry that fits)."""
        if len(chunk) < LOG_ENTRY_HEADER_BYTES:
            needed_bytes, what = LOG_ENTRY_HEADER_BYTES, "for its header"
        else:
            needed_bytes = unpack_entry_header(chunk, 0, position).entry_bytes
            what = "as its header declares"
        if needed_bytes <= len(chunk):
            raise AssertionError(f"entry at position {position} of {self.log_path} called "
                                 f"torn, but its {needed_bytes} bytes are all there")
        raise CorruptDataError(
            f"torn entry in {self.log_path}: the entry at position {position} needs "
            f"{needed_bytes} bytes {what}, the file has only {len(chunk)} from there",
            path=self.log_path, position=position)

    # --- Writing ---------------------------------------------------------------

    def append(self, base_offset: int, max_timestamp_ms: int, record_count: int,
               batch, batch_format: int = BATCH_FORMAT_PLINTH) -> int:
        """Write one entry (header + batch) at the end; return its position.

        ``batch`` is contiguous bytes (bytes or a memoryview of them) in
        ``batch_format`` (log_entry.py's BATCH_FORMAT_*). No fsync: see ``flush()``. On a write error the partial entry is cut off
        again and StorageError is raised.
        """
        if not self._ready:
            self._raise_not_ready()
        if base_offset != self._end_offset:
            raise AssertionError(f"attempt to append offset {base_offset} at position "
                                 f"{self._size_bytes} to {self.log_path}, expected offset "
                                 f"{self._end_offset}")
        position = self._size_bytes
        entry_bytes = LOG_ENTRY_HEADER_BYTES + len(batch)
        if position + entry_bytes >= UINT32_LIMIT:
            raise AssertionError(f"entry of {entry_bytes} bytes at position {position} overflows "
                                 f"UInt32 positions in {self.log_path}")
        header = build_entry_header(base_offset, max_timestamp_ms, record_count, batch,
                                    batch_format)
        self._write_entry(header, batch, position, entry_bytes)
        self._track(base_offset, record_count, max_timestamp_ms, position, entry_bytes)
        return position

    def _write_entry(self, header: bytes, batch, position: int, entry_bytes: int) -> None:
        try:
            written_bytes = os.writev(self._fd, (header, batch))
            if written_bytes < entry_bytes:   # rare: a signal or a full disk
                _write_all(self._fd, memoryview(header + bytes(batch))[written_bytes:])
        except OSError as error:
            self._cut_partial_entry(position)
            raise StorageError(
                f"cannot append {entry_bytes} bytes at position {position} "
                f"to {self.log_path}: {error}") from error

    def append_entries(self, entries: memoryview, headers: list[LogEntryHeader]) -> None:
        """Write a run of whole entries as they are, ``headers`` being theirs, in order.

        The caller (PartitionLog.append_entries) checked every entry: its
        magic, lengths, attributes and CRC, and that base offsets run on from
        this segment's end offset. No fsync: see ``flush()``. On a write error
        the partial run is cut off again and StorageError is raised.
        """
        if not self._ready:
            self._raise_not_ready()
        if headers[0].base_offset != self._end_offset:
            raise AssertionError(f"attempt to append a run of entries from offset "
                                 f"{headers[0].base_offset} at position {self._size_bytes} to "
                                 f"{self.log_path}, expected offset {self._end_offset}")
        position = self._size_bytes
        run_bytes = entries.nbytes
        if position + run_bytes >= UINT32_LIMIT:
            raise AssertionError(f"run of {run_bytes} bytes at position {position} overflows "
                                 f"UInt32 positions in {self.log_path}")
        try:
            _write_all(self._fd, entries)
        except OSError as error:
            self._cut_partial_entry(position)
            raise StorageError(f"cannot append {run_bytes} bytes of replicated entries at "
                               f"position {position} to {self.log_path}: {error}") from error
        for header in headers:
            self._track(header.base_offset, header.record_count, header.max_timestamp_ms,
                        position, header.entry_bytes)
            position += header.entry_bytes

    def _cut_partial_entry(self, position: int) -> None:
        try:
            os.ftruncate(self._fd, position)
        except OSError as error:
            logger.error("%s: cannot cut a partial entry back to position %d: %s; "
                         "recovery will cut it at the next start", self.log_path, position, error)

    def flush(self) -> None:
        """fsync the .log file if anything was appended since the last flush, or the last
        fsync failed (``_fsync``)."""
        if self._flushed_size_bytes < self._size_bytes or self._fsync_failed:
            self._fsync()

    def _fsync(self) -> None:
        # After a failed fsync the kernel would answer the next one without writing what
        # it lost: refused until that is cut (to the last good fsync's size, or less)
        if self._fsync_failed and self._size_bytes > self._flushed_size_bytes:
            raise StorageError(f"cannot fsync {self.log_path} at {self._size_bytes} bytes: an "
                               f"earlier fsync failed, and what was written since its last "
                               f"good one ({self._flushed_size_bytes} bytes) is not cut yet")
        try:
            os.fsync(self._fd)
        except OSError as error:
            self._fsync_failed = True
            raise StorageError(f"cannot fsync {self.log_path} at {self._size_bytes} bytes: "
                               f"{error}") from error
        self._fsync_failed = False
        self._flushed_size_bytes = self._size_bytes
        self._flushed_end_offset = self._end_offset

    def write_indexes(self) -> None:
        """Write both index files if they changed since they were last written."""
        if self._indexes_written:
            return
        try:
            self._offset_index.write(self.index_path)
            self._time_index.write(self.time_index_path)
        except OSError as error:
            raise StorageError(f"cannot write the indexes of {self.log_path}: {error}") from error
        self._indexes_written = True

    # --- Truncation --------------------------------------------------------------

    def boundary_position(self, offset: int) -> int:
        """The position of the entry whose base offset is ``offset``, or the segment's
        size if ``offset`` is its end offset. Anything else (inside an entry,
        outside the segment) is a programmer error: truncation cuts whole entries."""
        self._use_file()
        if offset == self._end_offset:
            return self._size_bytes
        found = self._find_entry(offset) if self.base_offset <= offset < self._end_offset else None
        if found is None or found[1].base_offset != offset:
            raise AssertionError(
                f"offset {offset} is not an entry boundary of {self.log_path} (offsets "
                f"[{self.base_offset}, {self._end_offset}), entry there: {found})")
        return found[0]

    def truncate_to(self, end_offset: int) -> tuple[int, int]:
        """Cut every entry from ``end_offset`` on; returns (bytes cut, entries cut).

        ``end_offset`` is an entry boundary (``boundary_position``). The
        active segment only (its file is open for writing). Cuts the file,
        the indexes and what is tracked, and fsyncs. Raises StorageError if
        the disk refuses: reopening the log then recovers a prefix of it.
        """
        if self._files is not None or self._fd < 0:
            raise AssertionError(f"attempt to truncate {self.log_path}, which is not the "
                                 f"active segment (make_active first)")
        position = self.boundary_position(end_offset)
        bytes_cut = self._size_bytes - position
        if not bytes_cut:
            return 0, 0
        entries_cut = self._count_entries(position)
        self._cut_at(position, end_offset, "an entry boundary")
        return bytes_cut, entries_cut

    def cut_unflushed(self) -> int:
        """Cut what was written since the last good fsync, after one failed: by the
        position and end offset that fsync left (the bytes after it are not read:
        they may not read back whole), with the indexes, then fsync. Returns the
        bytes cut. The active segment only. StorageError if the disk refuses (the
        segment then refuses fsyncs until a later call succeeds)."""
        if self._files is not None or self._fd < 0:
            raise AssertionError(f"attempt to cut {self.log_path}, which is not the active "
                                 f"segment")
        position, end_offset = self._flushed_size_bytes, self._flushed_end_offset
        bytes_cut = max(self._size_bytes - position, 0)
        self._cut_at(position, end_offset, "its last good fsync")   # fsyncs, even if 0 cut
        return bytes_cut

    def _cut_at(self, position: int, end_offset: int, where: str) -> None:
        """Cut the file at ``position``, where the entry of ``end_offset`` starts (known as
        ``where`` says), with the indexes and what is tracked, and fsync."""
        try:
            os.ftruncate(self._fd, position)
        except OSError as error:
            raise StorageError(f"cannot cut {self.log_path} to {position} bytes at offset "
                               f"{end_offset} ({where}): {error}") from error
        self._offset_index.truncate_to(end_offset)
        self._time_index.truncate_to(end_offset)
        self._resume_from_indexes(position)
        self._indexes_written = False   # rewritten when it rolls or closes
        self._fsync()
        if (self._size_bytes, self._end_offset) != (position, end_offset):
            # The entries before the cut did not scan whole (a flipped header).
            raise CorruptDataError(f"{self.log_path}, cut at position {position} (offset "
                                   f"{end_offset}, {where}), reads only {self._size_bytes} "
                                   f"bytes, up to offset {self._end_offset}: an entry before "
                                   f"it is corrupt")

    def _count_entries(self, position: int) -> int:
        """How many entries start at or after ``position``: one header read each."""
        count = 0
        while position < self._size_bytes:
            position += self._read_header(position).entry_bytes
            count += 1
        return count

    def make_active(self) -> None:
        """The log was cut back into this older segment: it takes appends again.

        Loads its indexes if it never did, leaves the shard's SegmentFiles and
        reopens its file for appending. Raises StorageError if it cannot."""
        self._use_file()
        if self._files is not None:
            self._files.discard(self)
            self._files = None
        self.close_file()
        try:
            self._fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError as error:
            raise StorageError(f"cannot reopen {self.log_path} for appending: {error}") from error

    # --- Reading ---------------------------------------------------------------

    def read_entries(self, offset: int, bytes_max: int, end_offset_max: int) -> bytes | memoryview:
        """Whole entries, from the one containing ``offset``, CRC-checked.

        None starts at or past ``end_offset_max``; the total is at most
        ``bytes_max`` except that the first entry is always whole. A read
        that ends inside an entry is returned as a memoryview of its whole
        entries, not a copy (4 MiB fetches cut their last entry). Returns
        b"" if no entry here contains ``offset`` before ``end_offset_max``.
        Raises CorruptDataError naming the file, position and offset.
        """
        if self._files is not None:   # (the active segment, read by every tailing consumer, skips this)
            self._files.use(self)
        found = self._find_entry(offset)
        if found is None or found[1].base_offset >= end_offset_max:
            return b""
        position, header = found
        read_bytes = max(header.entry_bytes, min(bytes_max, self._size_bytes - position))
        chunk = os.pread(self._fd, read_bytes, position)
        end = self._checked_entries_end(chunk, position, offset, end_offset_max)
        if end < header.entry_bytes:
            raise CorruptDataError(
                f"{self.log_path}: entry at position {position} for offset {offset} "
                f"needs {header.entry_bytes} bytes, the file has only {len(chunk)} from there",
                path=self.log_path, position=position)
        return chunk if end == len(chunk) else memoryview(chunk)[:end]

    def _checked_entries_end(self, chunk: bytes, position: int, offset: int,
                             end_offset_max: int) -> int:
        """Length of the run of whole, CRC-valid entries at the start of ``chunk``. A bad
        entry after good ones ends the run: the good ones are served, and the read
        that starts at the bad one raises (a reader learns the offset it cannot
        pass, and loses none of the records before it)."""
        end = 0
        try:
            for entry_position, header, batch in scan_whole_entries(chunk, False, position):
                if header.base_offset >= end_offset_max:
                    break
                check_entry_crc(header, batch, entry_position)
                end = entry_position + header.entry_bytes - position
        except CorruptDataError as error:
            if end > 0:
                return end
            # The first entry is the bad one: nothing before it in the chunk was good.
            raise CorruptDataError(f"{self.log_path}: {error.message} (reading offset {offset})",
                                   path=self.log_path, position=position) from error
        return end

    def _find_entry(self, offset: int) -> tuple[int, LogEntryHeader] | None:
        """(position, header) of the entry containing ``offset``: index, then scan headers."""
        if not self._ready:
            self._raise_not_ready()
        _, position = self._offset_index.lookup(offset)
        chunk, chunk_position = b"", position
        # Read this much at a time from the indexed entry on.
        read_bytes = (min(self._index_interval_bytes, SEGMENT_FIND_CHUNK_BYTES_MAX)
                      + LOG_ENTRY_HEADER_BYTES)
        while position < self._size_bytes:
            if position + LOG_ENTRY_HEADER_BYTES > chunk_position + len(chunk):
                chunk_position = position
                chunk = os.pread(self._fd, read_bytes, position)
            header = self._unpack_header(chunk, position - chunk_position, chunk_position, offset)
            if offset < header.end_offset:
                if header.base_offset > offset:
                    raise CorruptDataError(
                        f"{self.log_path}: entry at position {position} starts at offset "
                        f"{header.base_offset}, past offset {offset} being looked up",
                        path=self.log_path, position=position)
                return position, header
            position += header.entry_bytes
        return None

    def _raise_not_ready(self) -> None:
        raise AssertionError(f"segment {self.log_path} used before recover() or load_indexes()")

    def _read_header(self, position: int) -> LogEntryHeader:
        chunk = os.pread(self._fd, LOG_ENTRY_HEADER_BYTES, position)
        return self._unpack_header(chunk, 0, position, None)

    def _unpack_header(self, chunk: bytes, position: int, position_base: int,
                       offset: int | None) -> LogEntryHeader:
        try:
            return unpack_entry_header(chunk, position, position_base)
        except CorruptDataError as error:
            looking_for = "" if offset is None else f" (looking for offset {offset})"
            raise CorruptDataError(f"{self.log_path}: {error.message}{looking_for}",
                                   path=self.log_path,
                                   position=position_base + position) from error

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first entry with max_timestamp_ms >= timestamp_ms, or None."""
        self._use_file()
        if self._max_timestamp_ms < timestamp_ms:
            return None
        found = self._find_entry(self._time_index.lookup(timestamp_ms))
        if found is None:
            return None
        try:
            for _, header, _ in self._scan_file(found[0], self._size_bytes, verify_crc=False):
                if header.max_timestamp_ms >= timestamp_ms:
                    return header.base_offset
        except CorruptDataError as error:
            raise CorruptDataError(f"{self.log_path}: {error.message} "
                                   f"(looking for timestamp {timestamp_ms} ms)") from error
        return None

    # --- State ---------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def end_offset(self) -> int:
        """The offset after the last entry (the next one to append); an unopened
        segment reads its indexes to know it."""
        if not self._ready:
            self._use_file()
        return self._end_offset

    @property
    def max_timestamp_ms(self) -> int:
        """Largest max_timestamp_ms of the entries, TIMESTAMP_MS_NONE if empty; an
        unopened segment reads its indexes to know it."""
        if not self._ready:
            self._use_file()
        return self._max_timestamp_ms

    @property
    def is_file_open(self) -> bool:
        return self._fd >= 0

    @property
    def is_empty(self) -> bool:
        return self._size_bytes == 0

    def age_ms(self, now_ms: int) -> int:
        return now_ms - self.created_ms

    def close(self) -> None:
        """fsync, write the index files if they changed, close the .log file."""
        self.flush()
        self.write_indexes()
        self.release()

    def release(self) -> None:
        """Close the .log file without writing anything (a failed open, a delete)."""
        if self._files is not None:
            self._files.discard(self)
        self.close_file()

    def delete(self) -> None:
        """Close without writing anything and remove the three files, and the cut files
        (logged at WARNING: they may hold acknowledged records an operator meant to
        salvage)."""
        self.release()
        for path in (self.log_path, self.index_path, self.time_index_path):
            path.unlink(missing_ok=True)
        cut_paths = self.cut_paths() if self.cut_files_there is not False else []
        if cut_paths:
            log_cut_files_deleted(self.log_path,
                                  [(path, _unlinked_bytes(path)) for path in cut_paths])

    def __repr__(self) -> str:
        return (f"Segment({self.log_path}, offsets [{self.base_offset}, {self._end_offset}), "
                f"{self._size_bytes} bytes)")


def log_cut_files_deleted(owner: Path, removed: list[tuple[Path, int]]) -> None:
    """Say at WARNING that the cut files ``removed`` (path, bytes) went with ``owner``
    (a segment's .log file, or a partition's directory)."""
    logger.warning("%s deleted with %d cut files (%d bytes earlier recoveries cut, which may "
                   "hold acknowledged records): %s", owner, len(removed),
                   sum(size for _, size in removed),
                   ", ".join(f"{path.name} ({size} bytes)" for path, size in removed))


def _unlinked_bytes(path: Path) -> int:
    """Remove ``path``; the bytes it held (0 if it was gone already)."""
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:
        return 0
    path.unlink(missing_ok=True)
    return size_bytes


def _copy_range(fd: int, start_position: int, end_position: int, path: Path) -> None:
    """Write bytes [start_position, end_position) of the open file ``fd`` to ``path``,
    a new file (never one that is there: an earlier cut's), and fsync it; a chunk of
    SEGMENT_SCAN_CHUNK_BYTES at a time."""
    out_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        position = start_position
        while position < end_position:
            chunk = os.pread(fd, min(SEGMENT_SCAN_CHUNK_BYTES, end_position - position),
                             position)
            if not chunk:
                raise AssertionError(f"{path}: the file being cut ended at {position}, "
                                     f"before {end_position}")
            _write_all(out_fd, chunk)
            position += len(chunk)
        os.fsync(out_fd)
    finally:
        os.close(out_fd)


def _write_all(fd: int, data) -> None:
    """Write all of ``data`` at the file's offset: os.write may write less (a signal, a
    full disk), and raises OSError when it can write nothing."""
    rest = memoryview(data)
    while rest:
        rest = rest[os.write(fd, rest):]
