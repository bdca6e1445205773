"""An offline check of a data dir's partition logs: ``plinth check``.

A running shard scans only its active segments when it starts (segment.py,
``recover``): older ones were fsynced when they rolled, and their damage is
found only when a read reaches it (as CorruptDataError, logged by the shard).
This reads every segment of every partition directory under
``<data dir>/shards/<shard id>/`` whole, as recovery would, and changes nothing:
no cut, no index written, no file set aside. Run it on a stopped broker (the
caller holds the data dir's lock), to learn before a consumer does which
records a disk damaged.

What it finds, per partition directory (``PartitionCheck.problems``, one line
each, naming the file, the position and the offsets):

- an entry that fails its checks (torn, a bad header, a CRC that does not
  match, an offset out of order): the entries from there to the end of that
  segment are what a recovery (of the active segment) or a read (of an older
  one) would refuse;
- a hole between two segments that no gap made on purpose explains
  (offset_gaps.py), or segments that overlap;
- an offset-gaps file that is not one (the log then takes any hole as a gap);
- bytes earlier recoveries cut and kept (cut files, segment.py): not damage now,
  but said, each file, since they may hold acknowledged records.

Any process; reads only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from plinth.shards.offset_gaps import GAPS_FILE, Gap, read_gaps
from plinth.shards.segment import (
    LOG_SUFFIX, Segment, SegmentCheck, cut_file_paths, parse_log_file_name, segment_file_name)


@dataclass
class PartitionCheck:
    """What ``check_partition_directory`` found in one partition directory."""

    directory: Path
    segments: int = 0
    entries_valid: int = 0
    bytes_valid: int = 0
    problems: list[str] = field(default_factory=list)   # damage, one line each
    notes: list[str] = field(default_factory=list)      # not damage: cut bytes kept


def check_shards_directory(shards_dir: Path) -> list[PartitionCheck]:
    """Check every partition directory of every shard under ``shards_dir`` (a data
    dir's ``shards``), in name order: a directory holding a .log file is one."""
    checks = []
    for shard_dir in sorted(p for p in Path(shards_dir).iterdir() if p.is_dir()):
        for directory in sorted(p for p in shard_dir.iterdir() if p.is_dir()):
            if _base_offsets(directory):
                checks.append(check_partition_directory(directory))
    return checks


def check_partition_directory(directory: Path) -> PartitionCheck:
    """Read every segment of one partition log whole (module docstring)."""
    check = PartitionCheck(directory)
    gaps, gaps_file_there = read_gaps(directory)
    if gaps is None and gaps_file_there:
        check.problems.append(f"{directory / GAPS_FILE} is not an offset-gaps file: the log "
                              f"takes every hole between its segments as made on purpose")
    previous: tuple[int, SegmentCheck] | None = None
    for base_offset in _base_offsets(directory):
        found = Segment.check_file(directory, base_offset)
        check.segments += 1
        check.entries_valid += found.entries_valid
        check.bytes_valid += found.bytes_valid
        log_path = directory / segment_file_name(base_offset, LOG_SUFFIX)
        if found.reason:
            check.problems.append(
                f"{log_path}: {found.bytes_bad} bytes from position {found.bytes_valid} "
                f"(offset {found.end_offset} on) fail their checks: {found.reason}")
        if previous is not None:
            _check_contiguous(check, previous, base_offset, gaps)
        previous = (base_offset, found)
        for cut_path in cut_file_paths(directory, base_offset):
            check.notes.append(f"{cut_path}: {cut_path.stat().st_size} bytes an earlier "
                               f"recovery cut from this segment, kept")
    return check


def _check_contiguous(check: PartitionCheck, previous: tuple[int, SegmentCheck],
                      base_offset: int, gaps: list[Gap] | None) -> None:
    """A problem unless the segment at ``base_offset`` starts where the one before it
    ends, or after a gap made on purpose (any gap, if the gaps are not known)."""
    previous_base, found = previous
    if found.reason:
        return   # its end is where its damage starts: already said
    end, before = found.end_offset, segment_file_name(previous_base, LOG_SUFFIX)
    if base_offset < end:
        check.problems.append(f"{segment_file_name(base_offset, LOG_SUFFIX)} starts at offset "
                              f"{base_offset}, inside the segment before it ({before} ends "
                              f"at offset {end})")
    elif base_offset > end and gaps is not None and \
            not any(start <= end and base_offset <= stop for start, stop in gaps):
        check.problems.append(f"offsets {end}..{base_offset - 1} are missing: {before} ends "
                              f"at offset {end}, the next segment starts at {base_offset}, "
                              f"and no move of the partition left a gap there")


def _base_offsets(directory: Path) -> list[int]:
    with os.scandir(directory) as entries:
        return sorted(base for entry in entries
                      if (base := parse_log_file_name(entry.name)) is not None)
