"""An offline check of a data dir's partition logs: ``plinth check``.

A running shard scans only its active segments when it starts (segment.py,
``recover``): older ones were fsynced when they rolled, and their damage is
found only when a read reaches it (as CorruptDataError, logged by the shard).
This reads every segment of every partition directory under
``<data dir>/shards/<shard id>/`` whole, as recovery would, and the files beside
the segments (indexes, producers' snapshots), and changes no data:
no cut, no index written, no file set aside. Run it on a stopped broker (the
caller holds the data dir's lock), to learn before a consumer does which
records a disk damaged.

What it finds, per partition directory (``PartitionCheck.problems``, one line
each, naming the directory or file, the position or entry number and the offsets):

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
  ``offset-gaps.corrupt``; with the gaps not known (so too without the file), a
  hole is damage if it ends past the manifest's ``initial_offset`` (no move made
  it: offset_gaps.py's rule), else a note naming its offsets;
- a ``partition.metadata`` (partition_metadata.py) that is not one, or that
  says another topic id than the shard's manifest: one of the two is damaged, and
  a start keeps the log (metadata.json's id says which file it writes again;
  control/data_dir_check.py, ``disagreements``, which plinth check runs too, says
  a manifest that disagrees with metadata.json);
- a leader-epoch checkpoint that is not one (log_check_files.py says what a start
  does with it);
- a directory that holds no segment;
- an older segment's ``.index`` or ``.timeindex`` the shard rebuilds when it first
  reads the segment (torn, out of order, its last entry not the log's), or one it
  keeps though an entry before the last points wrong (reads, or look-ups by time,
  through that entry fail or answer wrong until the file is removed); a
  producers' snapshot (``<base>.producers``) of a segment there that is not the
  one a roll wrote: both in log_check_files.py, which says what each costs;
- a file of the directory, or the directory, that the broker cannot write
  (immutable, append-only, read-only, or not the user's to write), though it
  reads: log_check_writable.py, which tries each as the broker would use it;
- a lost last segment (or several), where files of segments past the last one
  prove the log held them: a producers' snapshot, written when the log rolled to
  its offset, after the segment there was created and the one before it fsynced,
  or index files, written when a segment rolled or closed. Such files past a last
  segment that ends before them were left by a truncation (a follower cutting its
  log back) that a crash cut short: noted, not damage. A follower's truncation cut
  short after it deleted the later segments but before it cut the last one left
  looks the same as a lost last segment, and is said as one (the follower's next
  fetch cuts the log back anyway). A last segment lost with every file of its own
  and no later roll is not seen.

A lost first segment is not reported: nothing on disk tells it from segments the
log deleted on purpose. Retention, the local retention of a tiered log, the
segments below a deleteRecords floor (log_start_floor.py) and a follower's
``restart_at`` all delete the first segments, and every file that remembers them
is brought up to date only after the segments go, with no fsync between, or is
only logged when the disk refuses: the producers' snapshots below the start,
the leader-epoch checkpoint's first entries (leader_epochs.py; it may also name
an epoch whose entries were never fsynced), the index files (unlinked after the
.log file). The manifest's ``initial_offset`` is where the log began, but the
retention settings beside it are today's, not those the old segments were
deleted under; committed offsets may lag the start or point anywhere. Index
files left without their .log file below the last segment are noted (a deletion
a crash cut short, or a lost .log: which is not known); snapshots are not, as a
move or a follower's restart leaves them there on purpose.

Per shard (``ShardsCheck.problems``): a manifest (shard_manifest.py) that cannot
be read, and a partition it names whose directory is missing; the shards
directory, a shard's directory or its manifest that the broker cannot write.

Notes (``notes``), not damage: bytes earlier recoveries cut and kept (cut files,
segment.py), each file, since they may hold acknowledged records; a log of
several segments without an offset-gaps file (written before gaps were kept:
holes cannot be checked); a directory no manifest names (checked all the same);
a shard without a manifest; an older segment's index file missing (rebuilt);
index files without their .log file (above); directories set aside, not checked or counted: a
deletion's (``-delete``, removed at the shard's next start: partition_log.py)
and a log kept aside (``-orphan``): a deleted topic's leftover, or one whose topic
id disagreed with metadata.json's.

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
from plinth.shards.log_check_files import (
    index_findings, leader_epochs_findings, snapshot_problem)
from plinth.shards.log_check_writable import directory_and_files, unwritable_lines
from plinth.shards.producer_state import SNAPSHOT_SUFFIX
from plinth.shards.segment import (
    INDEX_SUFFIX, LOG_SUFFIX, OFFSET_DIGITS, TIME_INDEX_SUFFIX, Segment, SegmentCheck,
    cut_file_paths, parse_log_file_name, segment_file_name)
from plinth.shards.shard_manifest import MANIFEST_FILE, ShardManifest

# A deleted topic's leftover directory, moved aside by a shard (``<name>.<ns>-orphan``).
ORPHAN_DIRECTORY_SUFFIX = "-orphan"
# The files named by a segment's base offset beside its .log file (the cut files aside).
SIDE_FILE_SUFFIXES = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, SNAPSHOT_SUFFIX)


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
    found.problems.extend(unwritable_lines([shards_dir]))
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
    found.problems.extend(unwritable_lines([shard_dir, shard_dir / MANIFEST_FILE]))
    for directory in _subdirectories(shard_dir):
        if _set_aside(directory, found.notes):
            continue
        in_manifest = directory.name in named
        if not in_manifest and not _base_offsets(directory):
            continue   # not a partition log
        check = check_partition_directory(directory, _initial_offset(manifest, directory.name))
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
        notes.append(f"{directory}: kept aside: a deleted topic's leftover log, or one "
                     f"of another topic id than metadata.json's ({_tree_bytes(directory):,} "
                     f"bytes), not checked; remove it once it is not needed")
    else:
        return False
    return True


def check_partition_directory(directory: Path,
                              initial_offset: int | None = None) -> PartitionCheck:
    """Read every segment of one partition log whole, and the files beside them
    (module docstring). ``initial_offset``: where the partition last continued on its
    shard, as the manifest says (None: no manifest names it), which tells a hole
    from a gap when the offset-gaps file is bad or missing (``_unknown_gap_finding``)."""
    check = PartitionCheck(directory)
    gaps = _checked_gaps(check)
    _check_leader_epochs(check)
    base_offsets = _base_offsets(directory)
    if not base_offsets:
        check.problems.append(f"{directory} holds no segment (no .log file): every record "
                              f"it held is lost")
    elif len(base_offsets) > 1 and gaps is None and not check.problems:
        check.notes.append(f"{directory}: no {GAPS_FILE} file (a log written before gaps were "
                           f"kept): holes between its {len(base_offsets)} segments are told "
                           f"from gaps made on purpose by its initial_offset only")
    previous: tuple[int, SegmentCheck] | None = None
    for base_offset in base_offsets:
        found = _check_segment(check, base_offset, active=base_offset == base_offsets[-1])
        if previous is not None:
            _check_contiguous(check, previous, base_offset, gaps)
            if gaps is None:
                _unknown_gap_finding(check, previous, base_offset, initial_offset)
        previous = (base_offset, found)
    if previous is not None:
        _check_side_files(check, base_offsets, previous[1])
    check.problems.extend(unwritable_lines(directory_and_files(directory)))
    return check


def _check_segment(check: PartitionCheck, base_offset: int, active: bool) -> SegmentCheck:
    """Check one segment's .log file whole, and an older one's indexes; note its cut files."""
    directory = check.directory
    found = Segment.check_file(directory, base_offset, past_bad_crc=not active)
    check.segments += 1
    check.entries_valid += found.entries_valid
    check.bytes_valid += found.bytes_valid
    check.problems.extend(_segment_problems(directory / segment_file_name(
        base_offset, LOG_SUFFIX), found, active=active))
    if not active:   # (the active segment's are rebuilt at every start, never read)
        problems, notes = index_findings(directory, base_offset, found.unreadable_position)
        check.problems.extend(problems)
        check.notes.extend(notes)
    for cut_path in cut_file_paths(directory, base_offset):
        check.notes.append(f"{cut_path}: {cut_path.stat().st_size} bytes an earlier "
                           f"recovery cut from this segment, kept")
    return found


def _check_side_files(check: PartitionCheck, base_offsets: list[int],
                      last: SegmentCheck) -> None:
    """The producers' snapshots of the segments there, then what the files of segments
    not there say: index files left without their .log, and a lost last segment."""
    directory = check.directory
    for base_offset in base_offsets:
        problem = snapshot_problem(directory, base_offset, active_base_offset=base_offsets[-1])
        if problem:
            check.problems.append(problem)
    for base_offset, names in sorted(_files_without_log(directory, set(base_offsets)).items()):
        # (A snapshot below the last segment is left on purpose too: continue_at deletes
        # an empty active segment, restart_at keeps the snapshots below its offset.)
        names = [name for name in names if not name.endswith(SNAPSHOT_SUFFIX)]
        if base_offset < base_offsets[-1] and names:
            check.notes.append(f"{directory}: {', '.join(names)} without "
                               f"{segment_file_name(base_offset, LOG_SUFFIX)}: left by a "
                               f"segment deletion a crash cut short, or its .log file was "
                               f"lost (which cannot be told)")
    _check_lost_tail(check, base_offsets[-1], last)


def _files_without_log(directory: Path, base_offsets: set[int]) -> dict[int, list[str]]:
    """{base offset: file names} of the index files and producers' snapshots in
    ``directory`` named by a base offset no .log file has."""
    named: dict[int, list[str]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.partition(".")
            if (f"{dot}{suffix}" in SIDE_FILE_SUFFIXES and len(stem) == OFFSET_DIGITS
                    and stem.isdigit() and int(stem) not in base_offsets):
                named.setdefault(int(stem), []).append(entry.name)
    return {base_offset: sorted(names) for base_offset, names in named.items()}


def _check_lost_tail(check: PartitionCheck, last_base_offset: int, last: SegmentCheck) -> None:
    """A problem if files of segments past the last one say the log rolled past it:
    a producers' snapshot is written when the log rolls to its offset (after the
    segment there was created, the one before it fsynced whole), index files when a
    segment rolls or closes. A last segment whose readable entries end before that
    offset was cut back since (a follower's truncation, which a crash cut short
    before it removed them): noted, not damage."""
    later = {base_offset: names for base_offset, names in
             _files_without_log(check.directory, {last_base_offset}).items()
             if base_offset > last_base_offset}
    if not later:
        return
    first, newest = min(later), max(later)
    said = "; ".join(f"{', '.join(names)} (offset {base_offset})"
                     for base_offset, names in sorted(later.items()))
    last_name = segment_file_name(last_base_offset, LOG_SUFFIX)
    if not last.reason and last.end_offset < first:
        check.notes.append(f"{check.directory}: files of segments past the last one are left "
                           f"({said}), but {last_name} ends at offset {last.end_offset}: "
                           f"left by a truncation that cut the log back (a crash kept it from "
                           f"removing them); no start reads them")
        return
    lost = (f"the segment at offset {first} is lost, with whatever records it held"
            if first == newest else f"the segments from offset {first} on are lost: offsets "
                                    f"{first}..{newest - 1} at least held records")
    check.problems.append(f"{check.directory}: {lost}: the last segment left is {last_name}, "
                          f"but files of segments past it are ({said}; a producers' snapshot "
                          f"is written when the log rolls to its offset, index files when a "
                          f"segment rolls or closes), unless a follower's truncation was cut "
                          f"short by a crash (its next fetch cuts the log back anyway)")


def _checked_gaps(check: PartitionCheck) -> list[Gap] | None:
    """The log's gaps made on purpose, None if not known (a problem if a bad file is why)."""
    directory = check.directory
    gaps, gaps_file_there = read_gaps(directory)
    if gaps is None and gaps_file_there:
        check.problems.append(f"{directory / GAPS_FILE} is not an offset-gaps file: a start "
                              f"sets it aside, and takes a hole between segments as a gap "
                              f"only if it ends at or before the partition's initial_offset "
                              f"(offset_gaps.py)")
    corrupt = directory / (GAPS_FILE + CORRUPT_SUFFIX)
    if corrupt.exists():
        check.problems.append(f"{corrupt}: an offset-gaps file the broker found bad and set "
                              f"aside: a hole between segments is told from a gap by the "
                              f"partition's initial_offset only (offset_gaps.py)")
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
                              f"{manifest_topic_id}: one of them is damaged (a start keeps "
                              f"the log, and writes again the one whose id is not "
                              f"metadata.json's)")


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


def _check_leader_epochs(check: PartitionCheck) -> None:
    """The leader-epoch checkpoint: bad (a problem), or set aside by a start (a note)."""
    problems, notes = leader_epochs_findings(check.directory)
    check.problems.extend(problems)
    check.notes.extend(notes)


def _initial_offset(manifest: ShardManifest | None, name: str) -> int | None:
    """The manifest's initial_offset of the partition whose directory is ``name``."""
    if manifest is None:
        return None
    for pid, spec in manifest.partitions.items():
        if f"{pid.topic}-{pid.partition}" == name:
            return spec.initial_offset
    return None


def _unknown_gap_finding(check: PartitionCheck, previous: tuple[int, SegmentCheck],
                         base_offset: int, initial_offset: int | None) -> None:
    """With the log's gaps not known (a bad or missing offset-gaps file), a hole
    between two segments, by offset_gaps.py's rule: damage if it ends past where the
    partition last continued on its shard (no move made it; the shard reads it as
    missing offsets too), else a note naming the offsets (a move's gap, or lost)."""
    previous_base, found = previous
    end = found.end_offset
    if found.reason or base_offset <= end:
        return
    before = segment_file_name(previous_base, LOG_SUFFIX)
    missing = (f"{check.directory}: offsets {end}..{base_offset - 1} are missing: {before} "
               f"ends at offset {end}, the next segment starts at {base_offset}")
    if initial_offset is not None and base_offset > initial_offset:
        check.problems.append(
            f"{missing}, and no move of the partition left a gap there (its offset-gaps "
            f"file is bad or missing, but its manifest says it last continued on this "
            f"shard at offset {initial_offset}, and a move's gap ends there or before): "
            f"reads of them fail")
    else:
        continued = ("no manifest names the partition" if initial_offset is None else
                     f"the partition last continued on this shard at offset {initial_offset}")
        check.notes.append(f"{missing}: a gap a move left, or lost records, which cannot be "
                           f"told without its offset-gaps file ({continued}); the shard "
                           f"reads on past them")


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
