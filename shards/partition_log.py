"""The log of one partition: its segments, in order, in one directory.

Used only by the shard actor's data thread (one thread, every method; no
locks, nothing awaits between checking the log's state and using it).

    <directory>/00000000000000000000.log        oldest segment
                00000000000000000000.index
                00000000000000000000.timeindex
                00000000000000052931.log        ...
                00000000000000104117.log        active segment: appends go here

Offsets are contiguous across segments: each segment's base offset is the
previous one's end offset, except after ``continue_at`` (a partition whose
writes came back from another shard), which leaves a gap (``in_gap``), kept in
``<directory>/offset-gaps`` (offset_gaps.py) so that a hole no move made (a
segment file lost or cut short) is read as CorruptDataError naming the range,
never skipped: the
router sends reads of it to the shard holding that range, or, once the range
is only in object storage (issue 14), here, where the shard reads it from the
store instead of this log. Appends go to the last (active) segment, which
rolls (a new segment starts) when an entry would take it past
``segment_bytes_max`` or it is older than ``segment_ms_max``. Appends are not
fsynced; ``flush()`` is (the shard decides when: group commit). Rolling
fsyncs the old segment and writes its indexes, so after a crash only the
active segment can have a torn tail, and ``open`` recovers it.

Replication. A follower appends its leader's entries exactly as the leader
stored them (``append_entries``: every CRC, the magic and the offsets checked
before a byte is written, so a bad run appends nothing), and cuts its log
back to where it agrees with its leader (``truncate_to``: a named operation
that reports what it cut, as recovery does). Truncation deletes the later
segments newest first, each deletion made durable before the next, so a
crash in the middle leaves a prefix of the old log, which the next fetch's
epoch check cuts again.

Open files. Only the active segment's file is always open. Older segments are
read through the shard's SegmentFiles (segment_files.py), which keeps at most
SEGMENT_FILES_OPEN_MAX of them open; ``open`` lists them without opening any
(their indexes are loaded on the first read), so a log of 100,000 segments
opens in one directory listing and one stat() per segment.

Retention. A segment is deleted, oldest first, when the log without it still
holds ``retention_bytes``, or when its time is more than ``retention_ms`` ago.
Its time is its newest record's timestamp, capped by when it was last written
(the clock at its last append; after a restart, its file's modification
time): min(max_timestamp_ms, last_written_ms). Timestamps are the producers'
(as Kafka's CreateTime), so a record stamped in the past expires early, as in
Kafka; the cap means that a record stamped in the future (up to the topic's
message.timestamp.after.max.ms, or by an older version of Plinth, without
limit) cannot keep its segment, and so every later one, for longer than
retention_ms after the segment was last written.

Deletion. ``delete`` (a deleted topic, a copy moved away) first renames the
directory to ``<topic>-<partition>.<time ns>-delete``, syncing its parent, then
removes it: removing a big log takes a while, and a crash in the middle must
not leave a partition directory that looks live (its topic created again would
open it, old records and all). At a shard's start, ``remove_deleted_directories``
finishes what a crash left. No partition's directory ends in ``-delete``: its
name ends in ``-<partition>``.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from plinth import topics
from plinth.durable_files import fsync_directory
from plinth.errors import (
    CorruptDataError, InvalidConfigError, OffsetOutOfRangeError, StorageError)
from plinth.limits import (
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, CORRUPT_READ_PLACES_LOGGED_MAX, INDEX_INTERVAL_BYTES,
    MESSAGE_TIMESTAMP_AFTER_MS_MAX_DEFAULT, MESSAGE_TIMESTAMP_BEFORE_MS_MAX_DEFAULT,
    RETENTION_BYTES_DEFAULT, RETENTION_MS_DEFAULT, SEGMENT_BYTES_CONFIG_MIN,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_MS_CONFIG_MIN,
    SEGMENT_MS_DEFAULT)
from plinth.format.log_entry import (
    BATCH_FORMAT_PLINTH, LOG_ENTRY_HEADER_BYTES, LogEntryHeader, scan_whole_entries)
from plinth.shards.offset_gaps import Gap, load_gaps, save_gaps
from plinth.shards.segment import (
    RecoveryResult, Segment, log_cut_files_deleted, parse_cut_file_name, parse_log_file_name)
from plinth.shards.segment_files import SegmentFiles
from plinth.shards.tier.tier_policy import resolve_local_retention

logger = logging.getLogger(__name__)

# --- Config -----------------------------------------------------------------


def wall_clock_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LogConfig:
    """How a partition log rolls, indexes and retains its segments, and which record
    timestamps its partition accepts. Any thread may build one.

    The defaults are a topic's (plinth/limits.py). ``retention_ms`` and
    ``retention_bytes`` of -1 keep everything. ``timestamp_before_ms_max`` and
    ``timestamp_after_ms_max`` are Kafka's message.timestamp.before.max.ms and
    .after.max.ms, checked by the partition (partition.py) against the shard's clock.
    ``batch_bytes_max`` is Kafka's max.message.bytes: the largest batch the partition
    (partition.py) appends as leader, in bytes as produced.

    Tiered storage (issue 14): ``remote_storage_enable`` is the topic's
    remote.storage.enable; ``local_retention_ms`` and ``local_retention_bytes`` are
    its local.retention.ms/.bytes as configured (-2: as retention_ms/_bytes; -1:
    keep everything locally), and ``local_retention_ms_resolved`` and
    ``local_retention_bytes_resolved`` what they mean once -2 is resolved. A shard
    that uploads a tiered partition deletes its local segments by
    Partition.enforce_local_retention (uploaded ones only) instead of
    ``enforce_retention``, and applies retention_* to the remote log.
    """

    segment_bytes_max: int = SEGMENT_BYTES_DEFAULT
    segment_ms_max: int = SEGMENT_MS_DEFAULT
    index_interval_bytes: int = INDEX_INTERVAL_BYTES
    retention_ms: int = RETENTION_MS_DEFAULT
    retention_bytes: int = RETENTION_BYTES_DEFAULT
    timestamp_before_ms_max: int = MESSAGE_TIMESTAMP_BEFORE_MS_MAX_DEFAULT
    timestamp_after_ms_max: int = MESSAGE_TIMESTAMP_AFTER_MS_MAX_DEFAULT
    batch_bytes_max: int = BATCH_BYTES_MAX
    remote_storage_enable: bool = False
    local_retention_ms: int = topics.LOCAL_RETENTION_AS_TOTAL
    local_retention_bytes: int = topics.LOCAL_RETENTION_AS_TOTAL

    @classmethod
    def from_topic_config(cls, config: dict[str, str]) -> "LogConfig":
        """The settings of a topic config (Kafka's key names) that plinth.topics checked;
        a key missing from it (a topic created before the key existed) has its default.

        A topic created before segment.bytes and segment.ms had their minimums
        (SEGMENT_BYTES_CONFIG_MIN, SEGMENT_MS_CONFIG_MIN) keeps its smaller value in
        its config, but its logs roll at the minimum.
        """
        def value(key: str) -> int:
            return int(config.get(key, topics.TOPIC_CONFIG_KEYS[key][2]))

        return cls(segment_bytes_max=max(value(topics.SEGMENT_BYTES), SEGMENT_BYTES_CONFIG_MIN),
                   segment_ms_max=max(value(topics.SEGMENT_MS), SEGMENT_MS_CONFIG_MIN),
                   retention_ms=value(topics.RETENTION_MS),
                   retention_bytes=value(topics.RETENTION_BYTES),
                   timestamp_before_ms_max=value(topics.MESSAGE_TIMESTAMP_BEFORE_MAX_MS),
                   timestamp_after_ms_max=value(topics.MESSAGE_TIMESTAMP_AFTER_MAX_MS),
                   batch_bytes_max=value(topics.MAX_MESSAGE_BYTES),
                   remote_storage_enable=topics.remote_storage_enabled(config),
                   local_retention_ms=value(topics.LOCAL_RETENTION_MS),
                   local_retention_bytes=value(topics.LOCAL_RETENTION_BYTES))

    @property
    def local_retention_ms_resolved(self) -> int:
        """local.retention.ms as the shard applies it (tier_policy.resolve_local_retention):
        -2 takes retention_ms; with retention_ms bounded, -1 or a larger value is capped
        to it; with retention_ms -1, -1 stays -1 (keep everything)."""
        return resolve_local_retention(self.local_retention_ms, self.retention_ms)

    @property
    def local_retention_bytes_resolved(self) -> int:
        """local.retention.bytes as the shard applies it (as local_retention_ms_resolved)."""
        return resolve_local_retention(self.local_retention_bytes, self.retention_bytes)

    def __post_init__(self) -> None:
        # The topic minimums do not apply here: tests use smaller segments.
        _check_int_in_range("segment_bytes_max", self.segment_bytes_max,
                            SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)
        _check_int_in_range("segment_ms_max", self.segment_ms_max, 1, None)
        _check_int_in_range("index_interval_bytes", self.index_interval_bytes,
                            0, SEGMENT_BYTES_MAX)
        _check_int_in_range("retention_ms", self.retention_ms, -1, None)
        _check_int_in_range("retention_bytes", self.retention_bytes, -1, None)
        _check_int_in_range("timestamp_before_ms_max", self.timestamp_before_ms_max, 0, None)
        _check_int_in_range("timestamp_after_ms_max", self.timestamp_after_ms_max, 0, None)
        _check_int_in_range("batch_bytes_max", self.batch_bytes_max, 1, BATCH_BYTES_MAX)
        if not isinstance(self.remote_storage_enable, bool):
            raise InvalidConfigError(f"remote_storage_enable must be a bool, got "
                                     f"{self.remote_storage_enable!r}")
        _check_int_in_range("local_retention_ms", self.local_retention_ms,
                            topics.LOCAL_RETENTION_AS_TOTAL, None)
        _check_int_in_range("local_retention_bytes", self.local_retention_bytes,
                            topics.LOCAL_RETENTION_AS_TOTAL, None)


def _check_int_in_range(key: str, value, value_min: int, value_max: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidConfigError(f"{key} must be an integer, got {value!r}")
    if value < value_min or (value_max is not None and value > value_max):
        upper = "" if value_max is None else f", at most {value_max}"
        raise InvalidConfigError(f"{key} is {value}; it must be at least {value_min}{upper}")


# --- The log ----------------------------------------------------------------


@dataclass(frozen=True)
class RetentionResult:
    segments: int          # segments deleted
    bytes: int             # bytes of .log files deleted
    start_offset: int      # the log's first offset afterwards


@dataclass(frozen=True)
class TruncationResult:
    """What ``truncate_to`` cut: the log ended at ``old_end_offset`` and now ends at
    ``end_offset``. ``entries`` counts the whole entries cut from the segment cut in
    place (the entries of deleted segments are not read to be counted)."""

    old_end_offset: int
    end_offset: int
    segments_deleted: int  # whole segments removed
    bytes: int             # bytes of .log files cut or removed
    entries: int           # entries cut from the segment cut in place


class CheckedEntries(NamedTuple):
    """A run of replicated entries that ``check_entries`` found whole and valid."""

    data: memoryview                 # the run, as the leader stored it
    headers: list[LogEntryHeader]    # its entries' headers, in order
    base_offset: int                 # the log's end offset it was checked against
    end_offset: int                  # the offset after its last entry


class PartitionLog:
    """The ordered segments of one partition. Data thread only, every method.

    Make one with ``PartitionLog.open``.
    """

    def __init__(self, directory: Path, config: LogConfig, segments: list[Segment],
                 recovery: RecoveryResult, clock_ms: Callable[[], int], files: SegmentFiles,
                 gaps: list[Gap] | None, initial_offset: int = 0):
        if not segments:
            raise AssertionError(f"partition log {directory} has no segment")
        self.directory = directory
        self.config = config
        self.recovery = recovery
        self._files = files
        self._segments = segments
        self._base_offsets = [segment.base_offset for segment in segments]
        self._clock_ms = clock_ms
        self._size_bytes = sum(segment.size_bytes for segment in segments)
        self._flushed_end_offset = segments[-1].end_offset
        # The gaps continue_at made (offset_gaps.py); None: not known (an older log,
        # or a bad file). Then only a hole ending at or before ``initial_offset``
        # (where the partition last continued here) may be one: offset_gaps.py's rule.
        self._gaps = gaps
        self._initial_offset = initial_offset
        # (file, position) of corrupt data reads found and logged, oldest first.
        self._corrupt_places_logged: dict[tuple[Path | None, int | None], None] = {}
        self._closed = False

    @classmethod
    def open(cls, directory: Path, config: LogConfig, *,
             clock_ms: Callable[[], int] = wall_clock_ms, initial_offset: int = 0,
             files: SegmentFiles | None = None) -> PartitionLog:
        """Open (creating it if missing) and recover the log in ``directory``.

        The active segment is always recovered (its torn or corrupt tail cut,
        reported in ``recovery``); older segments are listed, not opened: each
        one's file is opened, and its indexes loaded (or rebuilt if missing or
        invalid), when it is first read, through ``files`` (the shard's
        SegmentFiles; by default one for this log alone). ``clock_ms`` dates
        new segments for rolling by age, and appends for retention. A new,
        empty log starts at ``initial_offset`` (a partition that moved to this
        shard continues its offsets); for an existing log it is where the partition
        last continued here (its manifest's), which tells a gap a move made from a
        lost segment when the log's gaps are not known (offset_gaps.py).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = SegmentFiles() if files is None else files
        log_files, cut_base_offsets = _log_files(directory)
        if not log_files:
            _save_gaps(directory, [])   # first: a log with a segment and no file is an older one
            segment = Segment.create(directory, initial_offset,
                                     index_interval_bytes=config.index_interval_bytes,
                                     created_ms=clock_ms())
            return cls(directory, config, [segment], RecoveryResult(0, 0), clock_ms, files, [])
        segments = [_unopened_segment(directory, base_offset, entry, config, files)
                    for base_offset, entry in log_files[:-1]]
        active = Segment.open(directory, log_files[-1][0],
                              index_interval_bytes=config.index_interval_bytes)
        try:
            recovery = active.recover()
        except BaseException:
            active.release()
            raise
        segments.append(active)
        for segment in segments:
            segment.cut_files_there = (segment.base_offset in cut_base_offsets
                                       or segment.cut_files_there is True)
        _log_recovery(directory, active, recovery, len(segments))
        return cls(directory, config, segments, recovery, clock_ms, files, load_gaps(directory),
                   initial_offset)

    # --- State ------------------------------------------------------------

    @property
    def start_offset(self) -> int:
        """The first offset in the log."""
        return self._segments[0].base_offset

    @property
    def active_base_offset(self) -> int:
        """Base offset of the active segment, where appends go."""
        return self._segments[-1].base_offset

    @property
    def end_offset(self) -> int:
        """The next offset to assign (one past the last record)."""
        return self._segments[-1].end_offset

    @property
    def flushed_end_offset(self) -> int:
        """The end offset when ``flush()`` last returned: records below it are on disk."""
        return self._flushed_end_offset

    @property
    def size_bytes(self) -> int:
        """Bytes in all .log files."""
        return self._size_bytes

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments, oldest first; the last is the active one."""
        return tuple(self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def max_timestamp_ms(self) -> int | None:
        """The largest timestamp of any record in the log, None if it has none. Reads
        every segment's indexes (an unopened one loads them), as a look-up of Kafka's
        MAX_TIMESTAMP does (time_lookup.py)."""
        if self._closed:
            self._raise_closed()
        stamps = [segment.max_timestamp_ms for segment in self._segments if not segment.is_empty]
        return max(stamps) if stamps else None

    # --- Writing ----------------------------------------------------------

    def append(self, batch, record_count: int, max_timestamp_ms: int,
               batch_format: int = BATCH_FORMAT_PLINTH) -> int:
        """Append one record batch; return the base offset assigned to it.

        ``batch`` is the encoded batch (bytes or a memoryview of bytes) in
        ``batch_format`` (log_entry.py), already validated by the caller: at
        most BATCH_BYTES_MAX bytes, 1..BATCH_RECORDS_MAX records. A Kafka
        batch already carries its base offset (``end_offset``, which a roll
        does not change). Rolls first if needed. Not fsynced: call ``flush()``.
        """
        if self._closed:
            self._raise_closed()
        view = memoryview(batch)
        if not (view.contiguous and view.itemsize == 1 and 0 < view.nbytes <= BATCH_BYTES_MAX
                and 1 <= record_count <= BATCH_RECORDS_MAX):
            raise AssertionError(
                f"attempt to append a batch of {view.nbytes} bytes (contiguous: {view.contiguous}, "
                f"item size {view.itemsize}) and {record_count} records at offset "
                f"{self.end_offset} of {self.directory}; a batch is 1..{BATCH_BYTES_MAX} "
                f"contiguous bytes of 1..{BATCH_RECORDS_MAX} records")
        entry_bytes = LOG_ENTRY_HEADER_BYTES + view.nbytes
        now_ms = self._clock_ms()
        if self._should_roll(entry_bytes, now_ms):
            self._roll(now_ms)
        active = self._segments[-1]
        base_offset = active.end_offset
        active.append(base_offset, max_timestamp_ms, record_count, view, batch_format)
        active.last_written_ms = now_ms
        self._size_bytes += entry_bytes
        return base_offset

    def _should_roll(self, entry_bytes: int, now_ms: int) -> bool:
        active = self._segments[-1]
        if active.is_empty:
            return False
        return (active.size_bytes + entry_bytes > self.config.segment_bytes_max
                or active.age_ms(now_ms) >= self.config.segment_ms_max)

    def _roll(self, now_ms: int) -> None:
        """fsync the active segment, write its indexes, hand its file to the shard's
        SegmentFiles, and start a new segment after it."""
        old = self._segments[-1]
        old.retire(self._files)
        new = Segment.create(self.directory, old.end_offset,
                             index_interval_bytes=self.config.index_interval_bytes,
                             created_ms=now_ms)
        self._segments.append(new)
        self._base_offsets.append(new.base_offset)
        logger.info("rolled %s at offset %d: old segment %d bytes, %d ms old",
                    self.directory, new.base_offset, old.size_bytes,
                    old.age_ms(new.created_ms))

    # --- Replicated entries -----------------------------------------------------

    def append_entries(self, entries) -> int:
        """Append a run of entries exactly as the leader stored them; return the new
        end offset. Not fsynced (group commit does that).

        ``entries`` (bytes or a memoryview of them) are whole log entries whose
        base offsets run on from this log's end offset. Every entry is checked
        first (``check_entries``): a bad one raises CorruptDataError and
        appends nothing. Rolls segments as ``append`` would.
        """
        return self.append_checked(self.check_entries(entries))

    def check_entries(self, entries) -> CheckedEntries:
        """Check a run of replicated entries against this log's end; write nothing.

        Each entry's magic, lengths and attributes, its CRC, and that its base
        offset follows the previous one's, from ``end_offset`` on; the run must
        end on an entry boundary. Raises CorruptDataError naming this log's
        directory, the offset expected, and what is wrong.
        """
        if self._closed:
            self._raise_closed()
        view = memoryview(entries)
        if not (view.contiguous and view.itemsize == 1):
            raise AssertionError(f"replicated entries for {self.directory} must be contiguous "
                                 f"bytes, not items of {view.itemsize} bytes")
        headers: list[LogEntryHeader] = []
        expected_offset, run_end = self.end_offset, 0
        try:
            for position, header, _ in scan_whole_entries(view, verify_crc=True):
                _check_replicated_entry(header, position, expected_offset)
                headers.append(header)
                expected_offset = header.end_offset
                run_end = position + header.entry_bytes
            if run_end != view.nbytes:
                raise CorruptDataError(f"torn entry at position {run_end}: "
                                       f"{view.nbytes - run_end} bytes left over")
        except CorruptDataError as error:
            raise CorruptDataError(
                f"{self.directory}: replicated entries refused at offset {expected_offset} "
                f"({view.nbytes} bytes from offset {self.end_offset}; none appended): "
                f"{error.message}") from None
        return CheckedEntries(view, headers, self.end_offset, expected_offset)

    def append_checked(self, checked: CheckedEntries) -> int:
        """Append what ``check_entries`` returned, if the log has not moved since;
        return the new end offset. Not fsynced.

        Rolls before an entry exactly when ``append`` would; the entries that
        fit between rolls are written with one write each. Raises StorageError
        if the disk refuses: the whole entries before the failed run stay.
        """
        if self._closed:
            self._raise_closed()
        if checked.base_offset != self.end_offset:
            raise AssertionError(f"entries checked against end offset {checked.base_offset} "
                                 f"of {self.directory} appended at {self.end_offset}")
        headers = checked.headers
        now_ms = self._clock_ms()
        first = position = 0
        while first < len(headers):
            if self._should_roll(headers[first].entry_bytes, now_ms):
                self._roll(now_ms)
            active = self._segments[-1]
            last, run_bytes = self._run_before_roll(active, headers, first, now_ms)
            active.append_entries(checked.data[position:position + run_bytes], headers[first:last])
            active.last_written_ms = now_ms
            self._size_bytes += run_bytes
            position += run_bytes
            first = last
        return self.end_offset

    def _run_before_roll(self, active: Segment, headers: list[LogEntryHeader], first: int,
                         now_ms: int) -> tuple[int, int]:
        """(index after the last entry, bytes) of the entries from ``first`` on that
        ``active`` takes before ``append`` would roll (``_should_roll``)."""
        run_bytes = headers[first].entry_bytes
        last = first + 1
        if active.age_ms(now_ms) >= self.config.segment_ms_max:
            return last, run_bytes   # the next entry rolls by age
        room_bytes = self.config.segment_bytes_max - active.size_bytes
        while last < len(headers) and run_bytes + headers[last].entry_bytes <= room_bytes:
            run_bytes += headers[last].entry_bytes
            last += 1
        return last, run_bytes

    # --- Truncation ---------------------------------------------------------------

    def truncate_to(self, end_offset: int) -> TruncationResult:
        """Cut the log so that it ends at ``end_offset``; report what was cut.

        ``end_offset`` is an entry boundary at or below the end offset (a
        programmer error otherwise). The segments after the one holding it
        are deleted, newest first; that one becomes the active segment and is
        cut, with its indexes, and fsynced. Below ``start_offset``, the whole
        log is deleted and starts again, empty, at ``end_offset``
        (``restart_at``: a follower rebuilt from its leader). Raises StorageError if the disk refuses:
        reopening the log then recovers a prefix of it.
        """
        if self._closed:
            self._raise_closed()
        old_end_offset = self.end_offset
        if end_offset > old_end_offset:
            raise AssertionError(f"attempt to truncate {self.directory} to offset {end_offset}, "
                                 f"past its end offset {old_end_offset}")
        if end_offset == old_end_offset:
            return TruncationResult(old_end_offset, end_offset, 0, 0, 0)
        if end_offset < self.start_offset:
            return self.restart_at(end_offset)
        slot = self._slot_for(end_offset)
        kept = self._segments[slot]
        kept.boundary_position(end_offset)   # checked before anything is deleted
        if kept is not self._segments[-1]:
            kept.make_active()
        segments_deleted, deleted_bytes = self._delete_segments_after(slot)
        cut_bytes, entries = kept.truncate_to(end_offset)
        self._size_bytes -= cut_bytes
        self._flushed_end_offset = self.end_offset
        if self._gaps is not None and any(end > end_offset for _, end in self._gaps):
            self._set_gaps([(start, end) for start, end in self._gaps if end <= end_offset])
        result = TruncationResult(old_end_offset, self.end_offset, segments_deleted,
                                  deleted_bytes + cut_bytes, entries)
        _log_truncation(self.directory, result)
        return result

    def cut_unflushed(self) -> TruncationResult:
        """After a failed fsync, cut what was written since the last good one: the
        active segment's tail (``Segment.cut_unflushed``; an older segment was
        fsynced when it rolled, or its roll failed and it is still the active one).
        Returns what was cut (``entries`` 0: the cut bytes are not read).
        StorageError if the disk refuses."""
        if self._closed:
            self._raise_closed()
        old_end_offset = self.end_offset
        cut_bytes = self._segments[-1].cut_unflushed()
        self._size_bytes -= cut_bytes
        self._flushed_end_offset = self.end_offset
        result = TruncationResult(old_end_offset, self.end_offset, 0, cut_bytes, 0)
        if cut_bytes:
            _log_truncation(self.directory, result)
        return result

    def restart_at(self, start_offset: int) -> TruncationResult:
        """Delete every segment and start again, empty, at ``start_offset`` (any offset:
        Kafka's truncateFullyAndStartAt, for a follower whose log ends before its
        leader's starts, or that diverged before its own start). A crash half way
        leaves a prefix of the old log, or none (the next open starts the log at
        its initial offset): the follower's next fetch restarts it again."""
        if self._closed:
            self._raise_closed()
        if start_offset < 0:
            raise AssertionError(f"attempt to restart {self.directory} at offset {start_offset}")
        old_end_offset = self.end_offset
        segments_deleted, deleted_bytes = self._delete_segments_after(-1)
        if self._gaps:
            self._set_gaps([])
        self._segments.append(Segment.create(
            self.directory, start_offset, index_interval_bytes=self.config.index_interval_bytes,
            created_ms=self._clock_ms()))
        self._base_offsets.append(start_offset)
        self._flushed_end_offset = start_offset
        result = TruncationResult(old_end_offset, start_offset, segments_deleted,
                                  deleted_bytes, 0)
        logger.warning("restarted %s empty at offset %d: end offset was %d, %d segments "
                       "(%d bytes) deleted", self.directory, start_offset, old_end_offset,
                       segments_deleted, deleted_bytes)
        return result

    def _delete_segments_after(self, slot: int) -> tuple[int, int]:
        """Delete the segments after ``slot``, newest first, each deletion durable
        before the next (a crash leaves a prefix of the log); returns (segments, bytes)."""
        segments_deleted = deleted_bytes = 0
        while len(self._segments) > slot + 1:
            newest = self._segments.pop()
            self._base_offsets.pop()
            self._size_bytes -= newest.size_bytes
            newest.delete()
            try:
                fsync_directory(self.directory)
            except OSError as error:
                raise StorageError(f"cannot fsync {self.directory} after deleting "
                                   f"{newest.log_path}: {error}") from error
            segments_deleted += 1
            deleted_bytes += newest.size_bytes
        return segments_deleted, deleted_bytes

    def roll_active(self) -> bool:
        """Roll the active segment if it holds entries; returns whether it did. For a
        sealed tiered log, whose last segment would otherwise never roll and so never
        be uploaded (tier_policy uploads rolled segments only)."""
        if self._closed:
            self._raise_closed()
        if self._segments[-1].is_empty:
            return False
        self._roll(self._clock_ms())
        return True

    def continue_at(self, offset: int) -> None:
        """Make ``offset`` the next offset to assign, leaving a gap before it.

        For a partition whose writes come back to this shard after living on
        another: the offsets between this log's end and ``offset`` are on that
        shard, and reads of them are routed there. Rolls to a new segment at
        ``offset`` (an empty active segment is replaced instead). The caller passes
        the partition's ``initial_offset``, which proves the gap if the gaps file is
        lost (offset_gaps.py).
        """
        if self._closed:
            self._raise_closed()
        if offset < self.end_offset:
            raise AssertionError(f"cannot continue {self.directory} at offset {offset}, before its "
                                 f"end {self.end_offset}")
        if offset == self.end_offset:
            return
        previous_end_offset = self.end_offset
        self._initial_offset = max(self._initial_offset, offset)
        if self._gaps is not None:
            self._set_gaps(self._gaps + [(previous_end_offset, offset)])
        active = self._segments[-1]
        if active.is_empty:
            self._segments.pop()
            self._base_offsets.pop()
            active.delete()
        else:
            active.retire(self._files)
        new = Segment.create(self.directory, offset,
                             index_interval_bytes=self.config.index_interval_bytes,
                             created_ms=self._clock_ms())
        self._segments.append(new)
        self._base_offsets.append(offset)
        self._flushed_end_offset = offset
        logger.info("%s continues at offset %d; offsets %d..%d live on another shard",
                    self.directory, offset, previous_end_offset, offset - 1)

    def flush(self) -> None:
        """fsync what was appended since the last flush; advance flushed_end_offset."""
        if self._closed:
            self._raise_closed()
        # Rolling fsynced every segment but the active one.
        self._segments[-1].flush()
        self._flushed_end_offset = self.end_offset

    # --- Reading ----------------------------------------------------------

    def read(self, offset: int, bytes_max: int, end_offset_max: int) -> bytes | memoryview:
        """Whole log entries from the one containing ``offset``, CRC-checked.

        None starts at or past ``end_offset_max`` (pass flushed_end_offset to
        serve only durable records); at most ``bytes_max`` bytes, but the
        first entry is always whole; from one segment per call. An offset in
        a gap (``continue_at``) reads from the first entry after it. Returns b""
        when ``offset`` >= ``end_offset_max``. Raises OffsetOutOfRangeError
        outside [start_offset, end_offset], CorruptDataError on a bad entry.
        A bad entry is also logged, once per place (``_log_corrupt_read``).
        """
        if self._closed:
            self._raise_closed()
        if end_offset_max > self.end_offset:
            raise AssertionError(f"attempt to read {self.directory} up to offset {end_offset_max}, "
                                 f"past its end offset {self.end_offset}")
        self._check_offset(offset)
        if offset >= end_offset_max:
            return b""
        try:
            return self._read_segment(offset, bytes_max, end_offset_max)
        except CorruptDataError as error:
            self._log_corrupt_read(error)
            raise

    def _read_segment(self, offset: int, bytes_max: int,
                      end_offset_max: int) -> bytes | memoryview:
        """``read`` of an offset in [start_offset, end_offset_max): from one segment."""
        slot = self._slot_for(offset)
        segment = self._segments[slot]
        if offset >= segment.end_offset and slot + 1 < len(self._segments):
            # In a gap left by continue_at: read on from the next entry, as a
            # compacted Kafka log answers an offset that no longer exists. A hole
            # no move made is lost data: raise, never skip it.
            self._check_hole(segment, self._segments[slot + 1])
            segment = self._segments[slot + 1]
            offset = segment.base_offset
            if offset >= end_offset_max:
                return b""
        data = segment.read_entries(offset, bytes_max, end_offset_max)
        if not data:
            raise CorruptDataError(
                f"offset {offset} is not in {segment.log_path}, whose readable entries "
                f"end at offset {segment.end_offset}", path=segment.log_path)
        return data

    def _log_corrupt_read(self, error: CorruptDataError) -> None:
        """Log, at ERROR, the corrupt data a read found: the client is only told the
        error, and whoever runs the shard must learn of it. Once per place (file,
        position), so that a consumer retrying a bad offset in a loop adds no line;
        the last CORRUPT_READ_PLACES_LOGGED_MAX places are remembered."""
        place = (error.path, error.position)
        if place in self._corrupt_places_logged:
            return
        if len(self._corrupt_places_logged) >= CORRUPT_READ_PLACES_LOGGED_MAX:
            del self._corrupt_places_logged[next(iter(self._corrupt_places_logged))]
        self._corrupt_places_logged[place] = None
        # (The message names the file, and the position where it knows it.)
        logger.error("partition %s: a read found corrupt data: %s", self.directory.name,
                     error.message)

    def in_gap(self, offset: int) -> bool:
        """Whether ``offset`` is in a gap ``continue_at`` left: within the log's range,
        but no segment holds it (the one before it ends at or before it). ``read``
        of such an offset reads on from the next entry."""
        if self._closed:
            self._raise_closed()
        if not self.start_offset <= offset < self.end_offset:
            return False
        slot = self._slot_for(offset)
        hole = (self._segments[slot].end_offset, self._base_offsets[slot + 1]) \
            if offset >= self._segments[slot].end_offset else None
        return hole is not None and self._made_on_purpose(hole)

    def _check_hole(self, before: Segment, after: Segment) -> None:
        """CorruptDataError if the offsets between two segments are no gap continue_at
        made: a segment file lost, or one cut short."""
        hole = (before.end_offset, after.base_offset)
        if not self._made_on_purpose(hole):
            raise CorruptDataError(
                f"offsets {hole[0]}..{hole[1] - 1} of {self.directory} are missing: no "
                f"segment holds them ({before.log_path} ends at offset {hole[0]}, the next "
                f"segment starts at {hole[1]}), and no move of the partition left a gap "
                f"there{self._why_no_gap(hole)}: a segment file was lost or cut short",
                path=before.log_path, position=before.size_bytes)

    def _made_on_purpose(self, hole: Gap) -> bool:
        """Whether a hole between two segments lies within a gap continue_at made. In a
        log whose gaps are not known, any hole that ends at or before the offset where
        the partition last continued here may be one; no later hole can (offset_gaps.py)."""
        if self._gaps is None:
            return hole[1] <= self._initial_offset
        return any(start <= hole[0] and hole[1] <= end for start, end in self._gaps)

    def _why_no_gap(self, hole: Gap) -> str:
        """How a log whose gaps file is lost still knows ``hole`` is no gap ("" if known)."""
        if self._gaps is not None:
            return ""
        return (f" (its offset-gaps file is missing or was bad, but the partition last "
                f"continued on this shard at offset {self._initial_offset}, and every gap a "
                f"move makes ends there or before)")

    def _set_gaps(self, gaps: list[Gap]) -> None:
        _save_gaps(self.directory, gaps)
        self._gaps = gaps

    def _check_offset(self, offset: int) -> None:
        if not self.start_offset <= offset <= self.end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range [{self.start_offset}, {self.end_offset}] "
                f"of partition log {self.directory}")

    def _slot_for(self, offset: int) -> int:
        """The slot (in the segment list) of the segment holding ``offset``, or before its gap."""
        slot = bisect.bisect_right(self._base_offsets, offset) - 1
        if slot < 0:
            raise AssertionError(f"offset {offset} is below start offset {self.start_offset} "
                                 f"of {self.directory}")
        return slot

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """Base offset of the first entry whose max_timestamp_ms >= timestamp_ms.

        Batch granularity: records of that batch may be older; a consumer
        skips them. Returns end_offset when no entry is that recent.
        """
        if self._closed:
            self._raise_closed()
        for segment in self._segments:
            offset = segment.offset_for_timestamp(timestamp_ms)
            if offset is not None:
                return offset
        return self.end_offset

    # --- Retention --------------------------------------------------------

    def enforce_retention(self, sealed: bool = False) -> RetentionResult:
        """Delete whole old segments beyond ``retention_ms`` or ``retention_bytes``.

        Local retention (config.local_retention_*) does not act here: a partition the
        shard uploads is retained by Partition.enforce_local_retention instead
        (shards/tier/remote_log_manager.py), which deletes only uploaded segments.

        A segment goes when its time (its newest record's timestamp, capped by
        its last write: see the module docstring) is more than retention_ms
        ago, or while the log without it would still hold at least
        retention_bytes; oldest first, never the active segment, unless the log is ``sealed``
        (its writes moved to another shard): then everything may go, and an
        empty segment at the end offset keeps the log's place. Returns what
        was deleted.
        """
        now_ms = self._clock_ms()
        deleted = RetentionResult(0, 0, self.start_offset)
        while ((len(self._segments) > 1 or sealed and not self._segments[0].is_empty)
               and self._expired(self._segments[0], now_ms)):
            deleted = self._delete_oldest(deleted, now_ms)
        if deleted.segments:
            logger.info("retention deleted %d segments (%d bytes) of %s; start offset now %d",
                        deleted.segments, deleted.bytes, self.directory, self.start_offset)
        return deleted

    def delete_segments_before(self, offset: int,
                               why: str = "local retention: uploaded") -> RetentionResult:
        """Delete the oldest segments that end at or before ``offset``, never the
        active one: local retention of a tiered log (tier_policy.py), which has
        decided that object storage holds them, or the segments below a log start
        floor (partition.py, deleteRecords); ``why`` says which in the log line.
        Shard loop thread."""
        now_ms = self._clock_ms()
        deleted = RetentionResult(0, 0, self.start_offset)
        while len(self._segments) > 1 and self._segments[0].end_offset <= offset:
            deleted = self._delete_oldest(deleted, now_ms)
        if deleted.segments:
            logger.info("deleted %d segments (%d bytes) of %s before offset %d (%s); local "
                        "start offset now %d", deleted.segments, deleted.bytes, self.directory,
                        offset, why, self.start_offset)
        return deleted

    def _delete_oldest(self, deleted: RetentionResult, now_ms: int) -> RetentionResult:
        """Delete the oldest segment; if it was the only one (a sealed log), an empty
        one at the end offset keeps the log's place. ``deleted`` plus it."""
        end_offset = self.end_offset
        oldest = self._segments.pop(0)
        self._base_offsets.pop(0)
        self._size_bytes -= oldest.size_bytes
        oldest.delete()
        if not self._segments:
            self._segments.append(Segment.create(
                self.directory, end_offset, index_interval_bytes=self.config.index_interval_bytes,
                created_ms=now_ms))
            self._base_offsets.append(end_offset)
        return RetentionResult(deleted.segments + 1, deleted.bytes + oldest.size_bytes,
                               self.start_offset)

    def _expired(self, segment: Segment, now_ms: int) -> bool:
        config = self.config
        too_big = (config.retention_bytes >= 0
                   and self._size_bytes - segment.size_bytes >= config.retention_bytes)
        return too_big or self._too_old(segment, now_ms)

    def _too_old(self, segment: Segment, now_ms: int) -> bool:
        """now - min(max_timestamp_ms, last_written_ms) > retention_ms, for a segment
        with entries. An old last write decides alone, without reading an unopened
        segment's indexes for its timestamps."""
        retention_ms = self.config.retention_ms
        if retention_ms < 0 or segment.is_empty:
            return False
        return (now_ms - segment.last_written_ms > retention_ms
                or now_ms - segment.max_timestamp_ms > retention_ms)

    # --- Closing ----------------------------------------------------------

    def _raise_closed(self) -> None:
        raise AssertionError(f"partition log {self.directory} is used after it was closed")

    def close(self) -> None:
        """fsync, write every changed index file, close the files. Idempotent."""
        if self._closed:
            return
        self.flush()
        for segment in self._segments:
            segment.close()
        self._closed = True

    def delete(self) -> None:
        """Close, then remove the directory and everything in it (``delete_directory``);
        cut files among it are logged at WARNING, as ``Segment.delete`` logs them."""
        self.close()
        cut_files = [(path, path.stat().st_size) for segment in self._segments
                     if segment.cut_files_there is not False for path in segment.cut_paths()]
        if cut_files:
            log_cut_files_deleted(self.directory, cut_files)
        delete_directory(self.directory)

    def __repr__(self) -> str:
        return (f"PartitionLog({self.directory}, offsets [{self.start_offset}, "
                f"{self.end_offset}), {len(self._segments)} segments)")


def _save_gaps(directory: Path, gaps: list[Gap]) -> None:
    try:
        save_gaps(directory, gaps)
    except OSError as error:
        raise StorageError(f"cannot save the offset gaps of {directory}: {error}") from error


# --- Deleting ---------------------------------------------------------------

DELETED_DIRECTORY_SUFFIX = "-delete"


def delete_directory(directory: Path) -> None:
    """Rename a partition's directory out of the way (``<name>.<time ns>-delete``,
    durable in its parent), then remove it. OSError if the disk refuses either."""
    directory = Path(directory)
    doomed = directory.with_name(f"{directory.name}.{time.time_ns()}{DELETED_DIRECTORY_SUFFIX}")
    os.rename(directory, doomed)
    fsync_directory(directory.parent)
    shutil.rmtree(doomed)


def remove_deleted_directories(data_dir: Path) -> list[str]:
    """Recovery at a shard's start: remove the directories a crash left half-deleted
    by ``delete_directory`` in ``data_dir``; returns their names (the caller logs
    them). Nothing else is touched."""
    with os.scandir(data_dir) as entries:
        removed = sorted(entry.name for entry in entries
                         if entry.name.endswith(DELETED_DIRECTORY_SUFFIX)
                         and entry.is_dir(follow_symlinks=False))
    for name in removed:
        shutil.rmtree(Path(data_dir) / name)
    return removed


# --- Opening helpers --------------------------------------------------------


def _log_files(directory: Path) -> tuple[list[tuple[int, os.DirEntry]], set[int]]:
    """(base offset, directory entry) of every segment's .log file, by base offset; and
    the base offsets of the segments with cut files (segment.py), from the same listing."""
    found, cut_base_offsets = [], set()
    with os.scandir(directory) as entries:
        for entry in entries:
            if (base_offset := parse_log_file_name(entry.name)) is not None:
                found.append((base_offset, entry))
            elif (base_offset := parse_cut_file_name(entry.name)) is not None:
                cut_base_offsets.add(base_offset)
    found.sort(key=lambda found_file: found_file[0])
    return found, cut_base_offsets


def _unopened_segment(directory: Path, base_offset: int, entry: os.DirEntry, config: LogConfig,
                      files: SegmentFiles) -> Segment:
    stat = entry.stat()
    return Segment.unopened(directory, base_offset,
                            index_interval_bytes=config.index_interval_bytes,
                            size_bytes=stat.st_size, modified_ms=stat.st_mtime_ns // 1_000_000,
                            files=files)


def _check_replicated_entry(header: LogEntryHeader, position: int, expected_offset: int) -> None:
    """Raise CorruptDataError unless a replicated entry is one ``append`` could have written."""
    if header.base_offset != expected_offset:
        raise CorruptDataError(f"entry at position {position} has base offset "
                               f"{header.base_offset}, expected {expected_offset}")
    if not header.batch_bytes:
        raise CorruptDataError(f"entry at position {position} (base offset "
                               f"{header.base_offset}) has an empty batch")


def _log_truncation(directory: Path, result: TruncationResult) -> None:
    logger.warning("truncated %s from end offset %d to %d: %d segments deleted, %d bytes and "
                   "%d entries of the last segment cut", directory, result.old_end_offset,
                   result.end_offset, result.segments_deleted, result.bytes, result.entries)


def _log_recovery(directory: Path, active: Segment, recovery: RecoveryResult,
                  segment_count: int) -> None:
    # A clean reopen (nothing cut, no damage) at DEBUG: a shard of 2,400 partitions
    # logged 2,400 such lines at every restart, burying the few that matter.
    level = (logging.WARNING if recovery.bytes_truncated else
             logging.INFO if recovery.reason else logging.DEBUG)
    logger.log(level, "recovered %s: cut %d bytes at position %d of %s%s; kept %d entries, "
               "end offset %d, %d segments%s",
               directory, recovery.bytes_truncated, active.size_bytes, active.log_path.name,
               f" ({recovery.reason})" if recovery.reason else "",
               recovery.entries_valid, active.end_offset, segment_count,
               f"; {cut_kept(recovery)}" if recovery.bytes_truncated else "")


def cut_kept(recovery: RecoveryResult) -> str:
    """Where the bytes a recovery cut are kept, in words, for its log lines."""
    if recovery.cut_kept_path is None:
        return "the bytes cut could not be kept (see the error before)"
    return f"the bytes cut are kept in {recovery.cut_kept_path}"
