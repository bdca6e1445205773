"""``plinth check``'s checks of the files beside a partition's segments: each older
segment's ``.index`` and ``.timeindex`` (offset_index.py, time_index.py) and the
producer-state snapshots (``<base>.producers``, producer_state.py). log_check.py
runs them on each partition directory and says what they return, one line each.

The indexes. A shard rebuilds the active segment's indexes from its log at every
start (segment.py, ``recover``) and never reads their files, so those are not
checked. An older segment's are read when the segment is first read after a
start (``load_indexes``): a file that is not whole entries, whose columns do not
strictly increase, whose last offset entry does not point at the entry of that
offset, or whose time index does not match its offset index is rebuilt from the
log then (logged at WARNING): damage, said with "rebuilt", that loses no record.
An entry before the last is not checked by the shard: one that does not point at
the start of the entry of its offset is kept, and reads looked up through it
fail until the file is removed (the shard then rebuilds it). A time index entry
(T, O) is written with an offset index entry for O, and T is the largest
timestamp up to and including that entry: one whose offset the offset index
does not hold, or whose T is below the entry's own largest timestamp, is kept
too, and look-ups by time through it may answer too late an offset. A missing
index file is noted: the shard rebuilds it.

The snapshots. ``<X>.producers`` is the producers' state before the first batch
of the segment at X, written when the log rolled to X, after that segment's file
was created and the one before it fsynced. It is JSON with no checksum, written
atomically: one that is not JSON, not the layout producer_state.py documents,
says another base offset than its name, or holds a batch that does not end
before X (or out of order within its producer) is damaged (producer_state.py,
``snapshot_fault``). A start reads only the active segment's, sets a damaged one
aside (``<X>.producers.corrupt``, logged at WARNING), and replays only that
segment: an idempotent producer's retry of a batch it wrote before X may then be
stored twice. Only
the snapshots of segments on disk are checked: those below the log's start are
retention's leftovers, those past its end are evidence of lost segments
(log_check.py).

The leader-epoch checkpoint (leader_epochs.py). One that is not one
``save_leader_epochs`` wrote (torn, flipped, its CRC line not the lines') is
damage: a start sets it aside as ``leader-epoch-checkpoint.corrupt`` and starts
the partition's history empty; a replica of a replicated partition then needs
repair (not in sync, not elected, until its leader's epoch lookup has cut its log
back to where their histories agree and it has caught up), one of one copy loses
nothing. A checkpoint set aside by an earlier start is noted.

Any process; reads only.
"""

from __future__ import annotations

import os
from pathlib import Path

from plinth.errors import CorruptDataError
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, LogEntryHeader, unpack_entry_header
from plinth.shards.leader_epochs import (
    CHECKPOINT_FILE, CORRUPT_SUFFIX as EPOCHS_CORRUPT_SUFFIX, parse_checkpoint)
from plinth.shards.offset_index import OffsetIndex
from plinth.shards.producer_state import snapshot_fault, snapshot_path
from plinth.shards.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, segment_file_name
from plinth.shards.time_index import TimeIndex

REBUILT = "the shard rebuilds both indexes from the log when it first reads the segment"
KEPT = ("the shard checks only an index's last entry and keeps this file; remove it to "
        "have it rebuilt from the log")


def index_findings(directory: Path, base_offset: int, readable_bytes: int
                   ) -> tuple[list[str], list[str]]:
    """(problems, notes) of an older segment's two index files, checked against its
    .log file, whose entries are readable up to ``readable_bytes`` (module docstring)."""
    index_path = directory / segment_file_name(base_offset, INDEX_SUFFIX)
    time_path = directory / segment_file_name(base_offset, TIME_INDEX_SUFFIX)
    missing = [path for path in (index_path, time_path) if not path.exists()]
    if missing:
        return [], [f"{path}: missing; {REBUILT}" for path in missing]
    try:
        offset_index = OffsetIndex.load(index_path, base_offset)
        time_index = TimeIndex.load(time_path, base_offset)
    except CorruptDataError as error:
        return [f"{error.message}: {REBUILT}"], []
    with _LogHeaders(directory / segment_file_name(base_offset, LOG_SUFFIX)) as headers:
        problem = (_offset_index_problem(index_path, offset_index, headers, readable_bytes)
                   or _time_index_problem(time_path, time_index, offset_index, headers))
    return [problem] if problem else [], []


class _LogHeaders:
    """The entry headers of a .log file, read where an index points; opened read-only."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self._fd = os.open(log_path, os.O_RDONLY | os.O_CLOEXEC)
        self.file_bytes = os.fstat(self._fd).st_size

    def __enter__(self) -> _LogHeaders:
        return self

    def __exit__(self, *_) -> None:
        os.close(self._fd)

    def at(self, position: int) -> LogEntryHeader | str:
        """The header at ``position``, or why there is none (a reason, for a message)."""
        try:
            return unpack_entry_header(os.pread(self._fd, LOG_ENTRY_HEADER_BYTES, position),
                                       0, position)
        except CorruptDataError as error:
            return f"no entry header ({error.message})"


def _offset_index_problem(path: Path, index: OffsetIndex, headers: _LogHeaders,
                          readable_bytes: int) -> str | None:
    """The last entry if it does not point at the start of its offset's entry (the
    shard sees that), else the first earlier one that does not (it does not), with
    how many do not; None if all do. Earlier entries past ``readable_bytes`` point
    into damage the log's own check says."""
    entries = list(index.entries())
    if not entries:
        return None
    last_offset, last_position = entries[-1]
    if last_position + LOG_ENTRY_HEADER_BYTES > headers.file_bytes:
        return (f"offset index {path}: its last entry ({len(entries) - 1}) points to position "
                f"{last_position}, past the end of {headers.log_path} ({headers.file_bytes} "
                f"bytes): {REBUILT}")
    found = headers.at(last_position)
    if not _is_entry_of(found, last_offset):
        return f"{_mismatch(path, headers, len(entries) - 1, entries[-1], found)}: {REBUILT}"
    wrong = [(slot, entry, found) for slot, entry in enumerate(entries[:-1])
             if entry[1] < readable_bytes and not _is_entry_of(found := headers.at(entry[1]),
                                                                entry[0])]
    if not wrong:
        return None
    slot, (offset, position), found = wrong[0]
    return (f"{_mismatch(path, headers, slot, (offset, position), found)} ({len(wrong)} of its "
            f"{len(entries)} entries point wrong): {KEPT}; until then reads of offsets "
            f"{offset}..{entries[slot + 1][0] - 1} start there and fail")


def _mismatch(path: Path, headers: _LogHeaders, slot: int, entry: tuple[int, int],
              found: LogEntryHeader | str) -> str:
    there = found if isinstance(found, str) else f"the entry of base offset {found.base_offset}"
    return (f"offset index {path}: entry {slot} maps offset {entry[0]} to position {entry[1]}, "
            f"where {headers.log_path} has {there}")


def _is_entry_of(found: LogEntryHeader | str, offset: int) -> bool:
    return not isinstance(found, str) and found.base_offset == offset


def _time_index_problem(path: Path, time_index: TimeIndex, offset_index: OffsetIndex,
                        headers: _LogHeaders) -> str | None:
    """The first time index entry the offset index and the log do not bear out, or None."""
    positions = dict(offset_index.entries())
    entries = list(time_index.entries())
    if (not entries) != (not positions) or (
            entries and entries[-1][1] > offset_index.last_entry[0]):
        return (f"time index {path} ({len(entries)} entries, last {entries[-1:]}) does not "
                f"match its offset index ({len(positions)} entries, last offset "
                f"{offset_index.last_entry[0]}): {REBUILT}")
    for slot, (timestamp_ms, offset) in enumerate(entries):
        if offset not in positions:
            why = "which its offset index does not hold (the two are written together)"
        else:
            found = headers.at(positions[offset])
            if isinstance(found, str) or found.max_timestamp_ms <= timestamp_ms:
                continue   # an offset index entry the log does not bear out is said already
            why = (f"whose entry's own largest timestamp is {found.max_timestamp_ms} ms, "
                   f"above it")
        return (f"time index {path}: entry {slot} says {timestamp_ms} ms for offset {offset}, "
                f"{why}: {KEPT}; until then look-ups by time through it may answer too late "
                f"an offset")
    return None


def snapshot_problem(directory: Path, base_offset: int, active_base_offset: int) -> str | None:
    """What is wrong with the producers' snapshot that precedes the segment at
    ``base_offset``, with what it costs, or None if it is sound or not there."""
    path = snapshot_path(directory, base_offset)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    fault = snapshot_fault(data, base_offset)
    if fault is None:
        return None
    if base_offset == active_base_offset:
        cost = (f"a start sets it aside (as {path.name}.corrupt, with a WARNING) and "
                f"replays only the active segment: an idempotent producer's retry of a "
                f"batch written before offset {base_offset} may be stored twice")
    else:
        cost = (f"no start reads it (only the active segment's is read), but tiered storage "
                f"uploads it with the segment that ends at offset {base_offset}")
    return f"{path}: {fault}: {cost}"


def leader_epochs_findings(directory: Path) -> tuple[list[str], list[str]]:
    """(problems, notes) of a partition's leader-epoch checkpoint (module docstring)."""
    problems, notes = [], []
    path = directory / CHECKPOINT_FILE
    try:
        parse_checkpoint(path.read_bytes(), path)
    except FileNotFoundError:
        pass
    except CorruptDataError as error:
        problems.append(
            f"{error.message}: a start sets it aside as {CHECKPOINT_FILE}"
            f"{EPOCHS_CORRUPT_SUFFIX} and starts the partition's leader-epoch history "
            f"empty: a replica of a replicated partition then needs repair (out of the "
            f"in-sync set until its leader has cut its log back to where their histories "
            f"agree and it has caught up); one of one copy loses nothing")
    aside = directory / (CHECKPOINT_FILE + EPOCHS_CORRUPT_SUFFIX)
    if aside.exists():
        notes.append(f"{aside}: a leader-epoch checkpoint a start found bad and set aside "
                     f"({aside.stat().st_size} bytes); the history was started empty")
    return problems, notes
