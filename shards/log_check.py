"""An offline check of a data dir's partition logs: ``plinth check``.

A running shard scans only its active segments when it starts (segment.py,
``recover``): older ones were fsynced when they rolled, and their damage is
found only when a read reaches it (as CorruptDataError, logged by the shard).
This reads every segment of every partition directory under
``<data dir>/shards/<shard id>/`` whole, as recovery would, and changes no data:
no cut, no index written, no file set aside. Run it on a stopped broker (the
caller holds the data dir's lock), to learn before a consumer does which
records a disk damaged.

What it finds, per partition directory (``PartitionCheck.problems``, one line
each, naming the directory or file, the position and the offsets):

- in an older segment, each entry whose batch fails its CRC (its header sound):
  reads of its offsets fail, and the broker reads the entries after it through
  the segment's index, so the check goes on after it too;
- where entries stop being readable (a torn entry, a bad header, an offset out
  of order): the bytes from there to the end of that segment cannot be checked;
  in the newest (active) segment, the first bad entry of any kind, from which a
  start's recovery cuts (keeping the bytes cut in a cut file);
- a hole between two segments that no gap made on purpose explains
  (offset_gaps.py), or segments that overlap;
- an offset-gaps file that is not one, or one the broker set aside as
  ``offset-gaps.corrupt``: holes between segments cannot be told from gaps then;
- a ``partition.metadata`` (partition_metadata.py) that is not one, or that
  says another topic id than the shard's manifest: a shard deletes such a log
  when it opens the partition;
- a directory that holds no segment.

Per shard (``ShardsCheck.problems``): a manifest (shard_manifest.py) that cannot
be read, and a partition it names whose directory is missing.

Notes (``notes``), not damage: bytes earlier recoveries cut and kept (cut files,
segment.py), each file, since they may hold acknowledged records; a log of
several segments without an offset-gaps file (written before gaps were kept:
holes cannot be checked); a directory no manifest names (checked all the same);
a shard without a manifest; directories set aside, not checked or counted: a
deletion's (``-delete``, removed at the shard's next start: partition_log.py)
and a deleted topic's leftover log kept aside (``-orphan``).

Any process; reads only.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from plinth.errors import CorruptDataError
from plinth.limits import CHECK_BAD_ENTRIES_SAID_MAX
from plinth.shards import partition_metadata
from plinth.shards.offset_gaps import CORRUPT_SUFFIX, GAPS_FILE, Gap, read_gaps
from plinth.shards.offset_store import DIR_NAME as OFFSETS_DIR_NAME
from plinth.shards.partition_log import DELETED_DIRECTORY_SUFFIX
from plinth.shards.partition_metadata import PARTITION_METADATA_FILE, load_topic_id
from plinth.shards.segment import (
    LOG_SUFFIX, Segment, SegmentCheck, cut_file_paths, parse_log_file_name, segment_file_name)
from plinth.shards.shard_manifest import MANIFEST_FILE, ShardManifest

# A deleted topic's leftover directory, moved aside by a shard (``<name>.<ns>-orphan``).
ORPHAN_DIRECTORY_SUFFIX = "-orphan"


@dataclass
class PartitionCheck:
    """What ``check_partition_directory`` found in one partition directory."""

    directory: Path
    segments: int = 0
    entries_valid: int = 0
    bytes_valid: int = 0
    problems: list[str] = field(default_factory=list)   # damage, one line each
    notes: list[str] = field(default_factory=list)      # not damage: cut bytes kept, ...


@dataclass
class ShardManifests:
    """The manifests of a shards directory's shards, by shard directory."""

    found: dict[Path, ShardManifest] = field(default_factory=dict)   # read
    unreadable: dict[Path, str] = field(default_factory=dict)   # why not, one line each


@dataclass
class ShardsCheck:
    """What ``check_shards_directory`` found: each partition log, and per shard."""

    partitions: list[PartitionCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # damage of no directory checked
    notes: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> int:
        """Partition logs found damaged, and problems of the shards' own."""
        return sum(1 for check in self.partitions if check.problems) + len(self.problems)


def read_manifests(shards_dir: Path) -> ShardManifests:
    """Every shard directory's manifest; one that cannot be read is said, not raised."""
    manifests = ShardManifests()
    for shard_dir in _subdirectories(shards_dir):
        if not (shard_dir / MANIFEST_FILE).exists():
            continue
        try:
            manifests.found[shard_dir] = ShardManifest.load(shard_dir / MANIFEST_FILE)
        except CorruptDataError as error:
            manifests.unreadable[shard_dir] = (
                f"{error.message}: which partitions shard {shard_dir.name} serves is "
                f"unknown; its directories are checked as logs only")
    return manifests


def check_shards_directory(shards_dir: Path,
                           manifests: ShardManifests | None = None) -> ShardsCheck:
    """Check every partition directory of every shard under ``shards_dir`` (a data
    dir's ``shards``), in name order, against its shard's manifest (``manifests``,
    read here if not given): a directory holding a .log file, or one a manifest
    names, is a partition directory."""
    manifests = read_manifests(shards_dir) if manifests is None else manifests
    found = ShardsCheck(problems=list(manifests.unreadable.values()))
    for shard_dir in _subdirectories(shards_dir):
        _check_shard(shard_dir, manifests, found)
    return found


def _check_shard(shard_dir: Path, manifests: ShardManifests, found: ShardsCheck) -> None:
    manifest = manifests.found.get(shard_dir)
    named = {} if manifest is None else {
        f"{pid.topic}-{pid.partition}": spec.topic_id for pid, spec in manifest.partitions.items()}
    if manifest is None and shard_dir not in manifests.unreadable and _base_offsets_below(
            shard_dir):
        found.notes.append(f"{shard_dir}: no {MANIFEST_FILE} (the controller opens this "
                           f"shard's partitions again from metadata.json): its directories "
                           f"are checked as logs only")
    for directory in _subdirectories(shard_dir):
        if _set_aside(directory, found.notes):
            continue
        in_manifest = directory.name in named
        if not in_manifest and not _base_offsets(directory):
            continue   # not a partition log
        check = check_partition_directory(directory)
        if in_manifest:
            _check_topic_id(check, named[directory.name])
        elif manifest is not None and directory.name != OFFSETS_DIR_NAME:
            check.notes.append(f"{directory}: not served by shard {shard_dir.name} (its "
                               f"{MANIFEST_FILE} names no partition {directory.name}): a "
                               f"deleted topic's leftover?")
        found.partitions.append(check)
    for name in sorted(set(named) - {p.name for p in _subdirectories(shard_dir)}):
        found.problems.append(f"{shard_dir / name} is missing, but {shard_dir / MANIFEST_FILE} "
                              f"names partition {name}: every record it held is lost")


def _set_aside(directory: Path, notes: list[str]) -> bool:
    """Whether ``directory`` is one a shard set aside (noted so), not a partition's."""
    if directory.name.endswith(DELETED_DIRECTORY_SUFFIX):
        notes.append(f"{directory}: left by a deletion a crash cut short "
                     f"({_tree_bytes(directory):,} bytes); the shard removes it at its next "
                     f"start, not checked")
    elif directory.name.endswith(ORPHAN_DIRECTORY_SUFFIX):
        notes.append(f"{directory}: kept aside: a deleted topic's leftover log "
                     f"({_tree_bytes(directory):,} bytes), not checked")
    else:
        return False
    return True


def check_partition_directory(directory: Path) -> PartitionCheck:
    """Read every segment of one partition log whole (module docstring)."""
    check = PartitionCheck(directory)
    gaps = _checked_gaps(check)
    base_offsets = _base_offsets(directory)
    if not base_offsets:
        check.problems.append(f"{directory} holds no segment (no .log file): every record "
                              f"it held is lost")
    elif len(base_offsets) > 1 and gaps is None and not check.problems:
        check.notes.append(f"{directory}: no {GAPS_FILE} file (a log written before gaps were "
                           f"kept): holes between its {len(base_offsets)} segments cannot be "
                           f"told from gaps made on purpose, and none is reported")
    previous: tuple[int, SegmentCheck] | None = None
    for base_offset in base_offsets:
        found = Segment.check_file(directory, base_offset,
                                   past_bad_crc=base_offset != base_offsets[-1])
        check.segments += 1
        check.entries_valid += found.entries_valid
        check.bytes_valid += found.bytes_valid
        check.problems.extend(_segment_problems(directory / segment_file_name(
            base_offset, LOG_SUFFIX), found, active=base_offset == base_offsets[-1]))
        if previous is not None:
            _check_contiguous(check, previous, base_offset, gaps)
        previous = (base_offset, found)
        for cut_path in cut_file_paths(directory, base_offset):
            check.notes.append(f"{cut_path}: {cut_path.stat().st_size} bytes an earlier "
                               f"recovery cut from this segment, kept")
    return check


def _checked_gaps(check: PartitionCheck) -> list[Gap] | None:
    """The log's gaps made on purpose, None if not known (a problem if a bad file is why)."""
    directory = check.directory
    gaps, gaps_file_there = read_gaps(directory)
    if gaps is None and gaps_file_there:
        check.problems.append(f"{directory / GAPS_FILE} is not an offset-gaps file: the log "
                              f"takes every hole between its segments as made on purpose")
    corrupt = directory / (GAPS_FILE + CORRUPT_SUFFIX)
    if corrupt.exists():
        check.problems.append(f"{corrupt}: an offset-gaps file the broker found bad and set "
                              f"aside: holes between segments cannot be checked (the log "
                              f"takes every hole as a gap made on purpose)")
    return gaps


def _segment_problems(log_path: Path, found: SegmentCheck, active: bool) -> Iterator[str]:
    for bad in found.bad_entries[:CHECK_BAD_ENTRIES_SAID_MAX]:
        yield (f"{log_path}: entry at position {bad.position} (offsets {bad.base_offset}.."
               f"{bad.end_offset - 1}, {bad.entry_bytes} bytes) fails its checks, reads of "
               f"those offsets fail: {bad.reason}")
    unsaid = found.bad_entries[CHECK_BAD_ENTRIES_SAID_MAX:]
    if unsaid:
        yield (f"{log_path}: {len(unsaid)} more entries fail their checks "
               f"({sum(bad.entry_bytes for bad in unsaid)} bytes, offsets "
               f"{unsaid[0].base_offset}..{unsaid[-1].end_offset - 1}); lines for the first "
               f"{CHECK_BAD_ENTRIES_SAID_MAX} only (limits.CHECK_BAD_ENTRIES_SAID_MAX)")
    if found.reason:
        then = (f"a start's recovery cuts the {found.bytes_bad} bytes from there on (keeping "
                f"them in a cut file)" if active else
                f"the {found.bytes_bad} bytes from there on cannot be checked")
        yield (f"{log_path}: from position {found.unreadable_position} (offset "
               f"{found.end_offset}) on: {found.reason}; {then}")


def _check_topic_id(check: PartitionCheck, manifest_topic_id: str) -> None:
    """A problem unless the directory's partition.metadata is one, and says the topic id
    the manifest says (a manifest written before topics had ids says none: any goes)."""
    path = check.directory / PARTITION_METADATA_FILE
    try:
        with _quiet(partition_metadata.log):   # its words are a shard's: "written again"
            topic_id = load_topic_id(check.directory)
    except OSError as error:
        check.problems.append(f"{path}: cannot be read: {error}")
        return
    if topic_id is None and path.exists():
        check.problems.append(f"{path} is not a partition.metadata file "
                              f"({path.stat().st_size} bytes): the topic this log is of "
                              f"cannot be told")
    elif topic_id is not None and manifest_topic_id and topic_id != manifest_topic_id:
        check.problems.append(f"{path} says topic id {topic_id}, the shard's manifest "
                              f"{manifest_topic_id}: damaged (the shard keeps the log and "
                              f"writes the file again when it reopens the partition)")


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Keep ``logger``'s records out of the check's output while in the block."""
    def drop(record: logging.LogRecord) -> bool:
        return False
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _check_contiguous(check: PartitionCheck, previous: tuple[int, SegmentCheck],
                      base_offset: int, gaps: list[Gap] | None) -> None:
    """A problem unless the segment at ``base_offset`` starts where the one before it
    ends, or after a gap made on purpose (any gap, if the gaps are not known)."""
    previous_base, found = previous
    if found.reason:
        return   # its end is where its damage starts: already said
    directory = check.directory
    end, before = found.end_offset, segment_file_name(previous_base, LOG_SUFFIX)
    if base_offset < end:
        check.problems.append(f"{directory}: {segment_file_name(base_offset, LOG_SUFFIX)} "
                              f"starts at offset {base_offset}, inside the segment before it "
                              f"({before} ends at offset {end})")
    elif base_offset > end and gaps is not None and \
            not any(start <= end and base_offset <= stop for start, stop in gaps):
        check.problems.append(f"{directory}: offsets {end}..{base_offset - 1} are missing: "
                              f"{before} ends at offset {end}, the next segment starts at "
                              f"{base_offset}, and no move of the partition left a gap there")


def _subdirectories(directory: Path) -> list[Path]:
    return sorted(path for path in Path(directory).iterdir() if path.is_dir())


def _base_offsets(directory: Path) -> list[int]:
    with os.scandir(directory) as entries:
        return sorted(base for entry in entries
                      if (base := parse_log_file_name(entry.name)) is not None)


def _base_offsets_below(shard_dir: Path) -> bool:
    """Whether any directory in ``shard_dir`` holds a .log file."""
    return any(_base_offsets(directory) for directory in _subdirectories(shard_dir))


def _tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
