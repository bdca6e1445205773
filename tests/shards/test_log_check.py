"""The offline check of partition logs (shards/log_check.py, ``plinth check``): it reads
every segment whole, says which file, position and offsets are damaged, and changes
no data; and compares each shard's directories with its manifest. Real logs written by
PartitionLog, damaged on disk."""

from __future__ import annotations

import json
import os
import random
import struct

import pytest

from plinth.errors import CorruptDataError
from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, iter_entries
from plinth.limits import SEGMENT_BYTES_MIN
from plinth.shards import log_check
from plinth.shards.log_check import check_partition_directory, check_shards_directory
from plinth.shards.leader_epochs import EpochEntry, LeaderEpochs, save_leader_epochs
from plinth.shards.offset_gaps import GAPS_FILE
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.partition_metadata import PARTITION_METADATA_FILE, save_topic_id
from plinth.shards.producer_state import ProducerStates, discard_snapshots_before, save_snapshot

SMALL_SEGMENTS = LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN, index_interval_bytes=512)


def written_log(directory, batches=400, seed=0):
    """A closed log of several segments; returns its segments' .log paths, oldest first."""
    log = PartitionLog.open(directory, SMALL_SEGMENTS)
    rng = random.Random(seed)
    for i in range(batches):
        log.append(rng.randbytes(rng.randrange(1, 900)), 2, 50_000 + i)
    paths = [segment.log_path for segment in log.segments]
    log.close()
    assert len(paths) >= 3
    return paths


def tree(directory) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


def flip_byte(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_whole_log_is_checked_clean_with_every_entry_counted(tmp_path):
    paths = written_log(tmp_path)
    check = check_partition_directory(tmp_path)
    assert check.problems == [] and check.notes == []
    assert (check.segments, check.entries_valid) == (len(paths), 400)
    assert check.bytes_valid == sum(os.path.getsize(path) for path in paths)


def entry_positions(path):
    """[(position, header)] of every entry of a .log file."""
    positions, position = [], 0
    for header, _ in iter_entries(path.read_bytes()):
        positions.append((position, header))
        position += header.entry_bytes
    return positions


def test_a_bad_batch_in_an_older_segment_is_said_alone_and_the_entries_after_it_checked(
        tmp_path):
    # Given a log whose oldest segment (never scanned at a restart) has a flipped byte
    # in its third entry's batch (its header sound: reads find the entries after it)
    paths = written_log(tmp_path)
    [_, _, (third_position, third), *_] = entry_positions(paths[0])
    flip_byte(paths[0], third_position + LOG_ENTRY_HEADER_BYTES + 1)
    before = tree(tmp_path)
    # When the directory is checked
    check = check_partition_directory(tmp_path)
    # Then that entry alone is said damaged, with its position and offsets; every other
    # entry is checked and counted valid; and nothing changed
    [problem] = check.problems
    assert problem.startswith(
        f"{paths[0]}: entry at position {third_position} (offsets 4..5, {third.entry_bytes} "
        f"bytes) fails its checks, reads of those offsets fail: CRC mismatch in entry at "
        f"position {third_position}")
    assert check.entries_valid == 399
    assert check.bytes_valid == sum(map(os.path.getsize, paths)) - third.entry_bytes
    assert tree(tmp_path) == before


def test_each_bad_batch_is_said_up_to_a_limit_then_the_rest_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(log_check, "CHECK_BAD_ENTRIES_SAID_MAX", 2)
    paths = written_log(tmp_path)
    entries = entry_positions(paths[0])
    for position, _ in entries[1:5]:
        flip_byte(paths[0], position + LOG_ENTRY_HEADER_BYTES)
    problems = check_partition_directory(tmp_path).problems
    assert [problem.split(" (")[0] for problem in problems[:2]] == [
        f"{paths[0]}: entry at position {entries[1][0]}",
        f"{paths[0]}: entry at position {entries[2][0]}"]
    assert problems[2] == (
        f"{paths[0]}: 2 more entries fail their checks "
        f"({entries[3][1].entry_bytes + entries[4][1].entry_bytes} bytes, offsets "
        f"{entries[3][1].base_offset}..{entries[4][1].end_offset - 1}); lines for the first 2 "
        f"only (limits.CHECK_BAD_ENTRIES_SAID_MAX)")
    assert len(problems) == 3


def test_a_bad_header_in_an_older_segment_says_the_bytes_after_it_cannot_be_checked(tmp_path):
    # Given an older segment whose third entry's header is damaged (its length unknown)
    paths = written_log(tmp_path)
    [_, _, (third_position, _), *_] = entry_positions(paths[0])
    flip_byte(paths[0], third_position + 3)
    # When checked / Then the check says where and why it stops, and what it cannot check
    [problem] = check_partition_directory(tmp_path).problems
    unchecked_bytes = os.path.getsize(paths[0]) - third_position
    assert problem.startswith(f"{paths[0]}: from position {third_position} (offset 4) on: "
                              f"bad entry magic at position {third_position}")
    assert problem.endswith(f"; the {unchecked_bytes} bytes from there on cannot be checked")


def test_a_bad_batch_in_the_newest_segment_is_where_recovery_would_cut(tmp_path):
    paths = written_log(tmp_path)
    [_, (second_position, second), *_] = entry_positions(paths[-1])
    flip_byte(paths[-1], second_position + LOG_ENTRY_HEADER_BYTES)
    [problem] = check_partition_directory(tmp_path).problems
    cut_bytes = os.path.getsize(paths[-1]) - second_position
    assert problem.startswith(f"{paths[-1]}: from position {second_position} (offset "
                              f"{second.base_offset}) on: CRC mismatch")
    assert problem.endswith(f"; a start's recovery cuts the {cut_bytes} bytes from there on "
                            f"(keeping them in a cut file)")


def test_a_lost_middle_segment_is_a_hole_of_named_offsets_in_a_named_directory(tmp_path):
    # Given a log (it keeps its gaps: none) whose second segment's file is lost
    paths = written_log(tmp_path)
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    hole = (log.segments[1].base_offset, log.segments[2].base_offset)
    log.close()
    paths[1].unlink()
    # When checked / Then the missing offsets are said, between the files around them
    [problem] = check_partition_directory(tmp_path).problems
    assert problem == (f"{tmp_path}: offsets {hole[0]}..{hole[1] - 1} are missing: "
                       f"{paths[0].name} ends at offset {hole[0]}, the next segment starts at "
                       f"{hole[1]}, and no move of the partition left a gap there")


def test_overlapping_segments_are_said_in_a_named_directory(tmp_path):
    paths = written_log(tmp_path)
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    second_base = log.segments[1].base_offset
    log.close()
    paths[1].rename(paths[1].with_name(f"{second_base - 1:020d}.log"))
    problems = check_partition_directory(tmp_path).problems
    assert f"{tmp_path}: {second_base - 1:020d}.log starts at offset {second_base - 1}, inside " \
           f"the segment before it ({paths[0].name} ends at offset {second_base})" in problems


def lost_segment_offsets(paths, lost):
    """(first, last) offset the segment ``paths[lost]`` held (its name, the next one's)."""
    return int(paths[lost].stem), int(paths[lost + 1].stem) - 1


def test_an_offset_gaps_file_the_broker_set_aside_is_damage_and_the_hole_is_still_named(
        tmp_path):
    # Given a log that lost its second segment, whose offset-gaps file a shard found bad
    # and renamed (offset_gaps.py), and no manifest
    paths = written_log(tmp_path)
    paths[1].unlink()
    (tmp_path / GAPS_FILE).rename(tmp_path / "offset-gaps.corrupt")
    first, last = lost_segment_offsets(paths, 1)
    # When checked / Then that is said, and the hole named, as one that cannot be told
    # from a gap without a manifest's initial_offset
    check = check_partition_directory(tmp_path)
    assert check.problems == [
        f"{tmp_path / 'offset-gaps.corrupt'}: an offset-gaps file the broker found bad and "
        f"set aside: a hole between segments is told from a gap by the partition's "
        f"initial_offset only (offset_gaps.py)"]
    assert any(note.startswith(f"{tmp_path}: offsets {first}..{last} are missing: ")
               and "cannot be told" in note for note in check.notes)


def test_a_log_of_several_segments_without_an_offset_gaps_file_is_noted(tmp_path):
    paths = written_log(tmp_path)
    (tmp_path / GAPS_FILE).unlink()
    check = check_partition_directory(tmp_path)
    assert check.problems == []
    assert check.notes == [f"{tmp_path}: no offset-gaps file (a log written before gaps were "
                           f"kept): holes between its {len(paths)} segments are told from "
                           f"gaps made on purpose by its initial_offset only"]


@pytest.mark.parametrize("gaps_file", [b"garbagegarbage!!", None])
def test_a_lost_segment_of_a_never_moved_partition_is_damage_whatever_its_gaps_file(
        tmp_path, gaps_file):
    # Given a shard's partition whose manifest says it never moved (initial_offset 0),
    # that lost its second segment's .log file, and whose offset-gaps file is 16 bytes
    # of garbage (the tester's printf) or gone
    directory = tmp_path / "shard-0" / "a-0"
    paths = written_log(directory)
    write_manifest(tmp_path / "shard-0", {"a-0": TOPIC_ID})
    save_topic_id(directory, TOPIC_ID)
    paths[1].unlink()
    if gaps_file is None:
        (directory / GAPS_FILE).unlink()
    else:
        (directory / GAPS_FILE).write_bytes(gaps_file)
    first, last = lost_segment_offsets(paths, 1)
    # When checked / Then the missing offsets are named as damage
    [check] = check_shards_directory(tmp_path).partitions
    missing = [p for p in check.problems if f"offsets {first}..{last} are missing" in p]
    assert len(missing) == 1 and "last continued on this shard at offset 0" in missing[0]


def test_a_gap_a_move_made_is_no_problem(tmp_path):
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    log.append(b"x" * 100, 3, 1)
    log.continue_at(1000)
    log.append(b"y" * 100, 3, 2)
    log.close()
    check = check_partition_directory(tmp_path)
    assert check.problems == [] and (check.segments, check.entries_valid) == (2, 2)


def test_an_offset_gaps_file_that_is_not_one_is_said_and_left_in_place(tmp_path):
    written_log(tmp_path)
    (tmp_path / GAPS_FILE).write_bytes(b"not gaps")
    [problem] = check_partition_directory(tmp_path).problems
    assert problem == (f"{tmp_path / GAPS_FILE} is not an offset-gaps file: a start sets it "
                       f"aside, and takes a hole between segments as a gap only if it ends "
                       f"at or before the partition's initial_offset (offset_gaps.py)")
    assert (tmp_path / GAPS_FILE).read_bytes() == b"not gaps"


def test_bytes_a_recovery_cut_and_kept_are_noted_not_called_damage(tmp_path):
    # Given a log whose newest segment's last entry was damaged, then recovered
    paths = written_log(tmp_path)
    flip_byte(paths[-1], os.path.getsize(paths[-1]) - 1)
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    cut_path = log.recovery.cut_kept_path
    log.close()
    # When checked / Then the log is whole again, and the kept bytes are noted
    check = check_partition_directory(tmp_path)
    assert check.problems == []
    assert check.notes == [f"{cut_path}: {cut_path.stat().st_size} bytes an earlier recovery "
                           f"cut from this segment, kept"]


TOPIC_ID = "ab" * 16


def write_manifest(shard_dir, topic_ids):
    """A manifest naming ``{"topic-partition": topic id}`` (shard_manifest.py's file)."""
    partitions = {}
    for name, topic_id in topic_ids.items():
        topic, partition = name.rsplit("-", 1)
        partitions[f"{topic}/{partition}"] = {"config": {}, "initial_offset": 0,
                                              "sealed": False, "producers": None,
                                              "topic_id": topic_id}
    counts = {}
    for name in topic_ids:
        counts[name.rsplit("-", 1)[0]] = counts.get(name.rsplit("-", 1)[0], 0) + 1
    shard_dir.mkdir(parents=True, exist_ok=True)
    (shard_dir / "manifest.json").write_text(json.dumps(
        {"version": 1, "partitions": partitions, "partition_counts": counts}))


def test_every_partition_directory_of_every_shard_is_checked(tmp_path):
    for shard, partition in (("shard-0", "a-0"), ("shard-0", "a-1"), ("shard-1", "b-0")):
        written_log(tmp_path / shard / partition)
    (tmp_path / "shard-1" / "not-a-log").mkdir()
    checks = check_shards_directory(tmp_path).partitions
    assert [c.directory.relative_to(tmp_path).as_posix() for c in checks] == [
        "shard-0/a-0", "shard-0/a-1", "shard-1/b-0"]


def test_directories_a_shard_set_aside_are_noted_with_their_size_not_checked(tmp_path):
    # Given a shard with a live log, a deletion's directory a crash left (damaged: it
    # is removed at the next start all the same), and a deleted topic's leftover log
    written_log(tmp_path / "shard-0" / "a-0")
    deleted = tmp_path / "shard-0" / "b-0.123-delete"
    orphan = tmp_path / "shard-0" / "c-0.4-orphan"
    written_log(orphan)
    flip_byte(written_log(deleted)[0], 100)
    write_manifest(tmp_path / "shard-0", {"a-0": TOPIC_ID})
    # When checked
    found = check_shards_directory(tmp_path)
    # Then only the live log is checked and counted; the others are noted, with their size
    assert [c.directory.name for c in found.partitions] == ["a-0"] and found.damaged == 0
    size = {d: sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
            for d in (deleted, orphan)}
    assert found.notes == [
        f"{deleted}: left by a deletion a crash cut short ({size[deleted]:,} bytes); the shard "
        f"removes it at its next start, not checked",
        f"{orphan}: kept aside: a deleted topic's leftover log, or one of another topic id "
        f"than metadata.json's ({size[orphan]:,} bytes), not checked; remove it once it is "
        f"not needed"]


def test_a_partition_the_manifest_names_without_its_directory_is_damage(tmp_path):
    written_log(tmp_path / "shard-0" / "a-0")
    write_manifest(tmp_path / "shard-0", {"a-0": TOPIC_ID, "a-1": TOPIC_ID})
    found = check_shards_directory(tmp_path)
    assert found.problems == [f"{tmp_path / 'shard-0' / 'a-1'} is missing, but "
                              f"{tmp_path / 'shard-0' / 'manifest.json'} names partition a-1: "
                              f"every record it held is lost"]
    assert found.damaged == 1


def test_a_directory_no_manifest_names_is_checked_and_noted(tmp_path):
    written_log(tmp_path / "shard-0" / "a-0")
    written_log(tmp_path / "shard-0" / "ghost-0")
    written_log(tmp_path / "shard-0" / "__consumer_offsets")
    write_manifest(tmp_path / "shard-0", {"a-0": TOPIC_ID})
    found = check_shards_directory(tmp_path)
    assert [c.directory.name for c in found.partitions] == ["__consumer_offsets", "a-0",
                                                            "ghost-0"]
    [ghost] = [c for c in found.partitions if c.directory.name == "ghost-0"]
    assert ghost.notes == [f"{ghost.directory}: not served by shard shard-0 (its manifest.json "
                           f"names no partition ghost-0): a deleted topic's leftover?"]
    assert found.damaged == 0 and all(not c.notes for c in found.partitions if c is not ghost)


def test_a_partition_metadata_of_another_topic_id_or_none_is_damage(tmp_path):
    # Given a shard's partitions, one saying another topic id than the manifest, one a
    # partition.metadata that is not one, one as it should be
    shard_dir = tmp_path / "shard-0"
    for name in ("a-0", "a-1", "a-2"):
        written_log(shard_dir / name, batches=100)
    other_id = "cd" * 16
    save_topic_id(shard_dir / "a-0", other_id)
    (shard_dir / "a-1" / PARTITION_METADATA_FILE).write_text("garbage\n")
    save_topic_id(shard_dir / "a-2", TOPIC_ID)
    write_manifest(shard_dir, {"a-0": TOPIC_ID, "a-1": TOPIC_ID, "a-2": TOPIC_ID})
    # When checked / Then both ids, and the bad file, are said
    problems = {c.directory.name: c.problems for c in check_shards_directory(tmp_path).partitions}
    assert problems == {
        "a-0": [f"{shard_dir / 'a-0' / PARTITION_METADATA_FILE} says topic id {other_id}, the "
                f"shard's manifest {TOPIC_ID}: one of them is damaged (a start keeps the log, "
                f"and writes again the one whose id is not metadata.json's)"],
        "a-1": [f"{shard_dir / 'a-1' / PARTITION_METADATA_FILE} is not a partition.metadata "
                f"file (8 bytes): the topic this log is of cannot be told"],
        "a-2": []}


def test_a_manifest_that_cannot_be_read_is_damage_and_the_logs_are_checked_all_the_same(
        tmp_path):
    paths = written_log(tmp_path / "shard-0" / "a-0")
    flip_byte(paths[0], os.path.getsize(paths[0]) - 1)
    (tmp_path / "shard-0" / "manifest.json").write_text("{bad")
    found = check_shards_directory(tmp_path)
    [problem] = found.problems
    assert problem.startswith(f"{tmp_path / 'shard-0' / 'manifest.json'}: not a shard "
                              f"manifest: ")
    assert problem.endswith(": which partitions shard shard-0 serves is unknown; its "
                            "directories are checked as logs only")
    [check] = found.partitions
    assert len(check.problems) == 1 and found.damaged == 2


# --- A lost last segment, and what cannot tell a lost first one ------------------------


def rolled_log(directory, batches=400):
    """A closed log of several segments, and the producers' snapshot a partition saves
    when its log rolls (producer_state.py), one per segment after the first; returns
    the segments' base offsets, oldest first."""
    written_log(directory, batches)
    base_offsets = sorted(int(path.name[:-4]) for path in directory.glob("*.log"))
    for base_offset in base_offsets[1:]:
        states = ProducerStates()
        states.record(7, base_offset // 2 - 1, 2, base_offset - 2, now_ms=1_000)
        save_snapshot(directory, base_offset, states)
    return base_offsets


def lose_segment(directory, base_offset):
    """Every file of the segment at ``base_offset`` is lost but its producers' snapshot."""
    for suffix in (".log", ".index", ".timeindex"):
        (directory / f"{base_offset:020d}{suffix}").unlink()


def test_a_log_with_its_producers_snapshots_is_checked_clean(tmp_path):
    rolled_log(tmp_path)
    check = check_partition_directory(tmp_path)
    assert check.problems == [] and check.notes == []


def test_a_lost_last_segment_is_damage_its_producers_snapshot_proves(tmp_path):
    # Given a log whose active segment's files are all lost, its snapshot left (written
    # when the log rolled to it)
    *_, before_last, last = rolled_log(tmp_path)
    lose_segment(tmp_path, last)
    # When checked / Then the segment is said lost, with the file that proves it was there
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(
        f"{tmp_path}: the segment at offset {last} is lost, with whatever records it held: "
        f"the last segment left is {before_last:020d}.log, but files of segments past it are "
        f"({last:020d}.producers (offset {last}); a producers' snapshot is written when the "
        f"log rolls to its offset")


def test_lost_last_segments_name_the_offsets_that_held_records(tmp_path):
    # Given a log that lost its last two segments; the older one's index files are left
    *_, kept, second_last, last = rolled_log(tmp_path)
    (tmp_path / f"{second_last:020d}.log").unlink()
    lose_segment(tmp_path, last)
    # When checked / Then the offsets the log rolled past are said lost
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"{tmp_path}: the segments from offset {second_last} on are "
                              f"lost: offsets {second_last}..{last - 1} at least held records: "
                              f"the last segment left is {kept:020d}.log, but files of segments "
                              f"past it are ({second_last:020d}.index, {second_last:020d}"
                              f".producers, {second_last:020d}.timeindex (offset {second_last}); "
                              f"{last:020d}.producers (offset {last});")


def test_snapshots_a_cut_short_truncation_left_past_the_log_are_noted_not_damage(tmp_path):
    # Given a log a follower cut back into its second segment, whose snapshots of the
    # segments cut a crash kept it from removing
    base_offsets = rolled_log(tmp_path)
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    log.truncate_to(base_offsets[1] + 2)
    log.close()
    # When checked / Then the snapshots are noted, the log is not called damaged
    check = check_partition_directory(tmp_path)
    assert check.problems == []
    [note] = check.notes
    assert note.endswith(f"but {base_offsets[1]:020d}.log ends at offset {base_offsets[1] + 2}: "
                         f"left by a truncation that cut the log back (a crash kept it from "
                         f"removing them); no start reads them")


def test_first_segments_retention_deleted_are_no_damage(tmp_path):
    # Given a log whose first two segments retention deleted (and their snapshots)
    base_offsets = rolled_log(tmp_path)
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    log.delete_segments_before(base_offsets[2], "retention")
    log.close()
    discard_snapshots_before(tmp_path, base_offsets[2])
    # When checked / Then nothing is said (a first segment lost is not told from this:
    # the module docstring says why)
    check = check_partition_directory(tmp_path)
    assert check.problems == [] and check.notes == []


# --- An older segment's index files -----------------------------------------------------


def older_segment(directory):
    """A rolled log; its oldest segment's (.log, .index, .timeindex) paths."""
    [oldest, *_] = written_log(directory)
    return oldest, oldest.with_suffix(".index"), oldest.with_suffix(".timeindex")


def index_rows(path, row_format):
    data = path.read_bytes()
    size = struct.calcsize(row_format)
    return [list(struct.unpack_from(row_format, data, at)) for at in range(0, len(data), size)]


def write_rows(path, row_format, rows):
    path.write_bytes(b"".join(struct.pack(row_format, *row) for row in rows))


def test_a_torn_offset_index_is_damage_the_shard_rebuilds(tmp_path):
    _, index_path, _ = older_segment(tmp_path)
    size = index_path.stat().st_size
    with open(index_path, "r+b") as index_file:
        index_file.truncate(size - 3)
    [problem] = check_partition_directory(tmp_path).problems
    assert problem == (f"offset index {index_path} is {size - 3} bytes, not a multiple of 8: "
                       f"the shard rebuilds both indexes from the log when it first reads the "
                       f"segment")


def test_offset_index_entries_out_of_order_are_damage_the_shard_rebuilds(tmp_path):
    _, index_path, _ = older_segment(tmp_path)
    rows = index_rows(index_path, "<II")
    rows[1], rows[2] = rows[2], rows[1]
    write_rows(index_path, "<II", rows)
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"offset index {index_path}: entry 2 has relative offset "
                              f"{rows[2][0]}, not larger than {rows[1][0]} in entry 1: the shard "
                              f"rebuilds both indexes")


def test_an_offset_index_pointing_past_its_log_is_damage_the_shard_rebuilds(tmp_path):
    log_path, index_path, _ = older_segment(tmp_path)
    rows = index_rows(index_path, "<II")
    rows.append([rows[-1][0] + 2, log_path.stat().st_size + 10])
    write_rows(index_path, "<II", rows)
    [problem] = check_partition_directory(tmp_path).problems
    assert problem == (f"offset index {index_path}: its last entry ({len(rows) - 1}) points to "
                       f"position {log_path.stat().st_size + 10}, past the end of {log_path} "
                       f"({log_path.stat().st_size} bytes): the shard rebuilds both indexes "
                       f"from the log when it first reads the segment")


def test_an_offset_index_entry_before_the_last_pointing_wrong_is_kept_and_reads_fail(tmp_path):
    # Given an older segment whose index's second entry points 10 bytes into its entry
    log_path, index_path, _ = older_segment(tmp_path)
    rows = index_rows(index_path, "<II")
    offset, position = rows[1][0], rows[1][1]
    rows[1][1] += 10
    write_rows(index_path, "<II", rows)
    # When checked / Then it is said, with the offsets whose reads it fails
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"offset index {index_path}: entry 1 maps offset {offset} to "
                              f"position {position + 10}, where {log_path} has no entry header "
                              f"(bad entry magic")
    assert problem.endswith(f"(1 of its {len(rows)} entries point wrong): the shard checks only "
                            f"an index's last entry and keeps this file; remove it to have it "
                            f"rebuilt from the log; until then reads of offsets "
                            f"{offset}..{rows[2][0] - 1} start there and fail")
    # and a shard does keep it: a read of that offset fails
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    with pytest.raises(CorruptDataError):
        log.read(offset, 100, log.end_offset)
    log.close()


def test_a_torn_time_index_is_damage_the_shard_rebuilds(tmp_path):
    _, _, time_path = older_segment(tmp_path)
    time_path.write_bytes(time_path.read_bytes()[:-5])
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"time index {time_path} is ")
    assert problem.endswith("not a multiple of 12: the shard rebuilds both indexes from the log "
                            "when it first reads the segment")


def test_a_time_index_entry_of_an_offset_not_indexed_is_kept_damage(tmp_path):
    _, _, time_path = older_segment(tmp_path)
    rows = index_rows(time_path, "<qI")
    rows[0][1] += 1
    write_rows(time_path, "<qI", rows)
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"time index {time_path}: entry 0 says {rows[0][0]} ms for offset "
                              f"{rows[0][1]}, which its offset index does not hold")
    assert problem.endswith("until then look-ups by time through it may answer too late an "
                            "offset")


def test_a_time_index_timestamp_below_its_entry_s_own_is_kept_damage(tmp_path):
    _, _, time_path = older_segment(tmp_path)
    rows = index_rows(time_path, "<qI")
    timestamp_ms = rows[1][0]
    rows[1][0] = rows[0][0] + 1 if rows[0][0] + 1 < timestamp_ms else timestamp_ms
    assert rows[1][0] < timestamp_ms
    write_rows(time_path, "<qI", rows)
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"time index {time_path}: entry 1 says {rows[1][0]} ms for offset "
                              f"{rows[1][1]}, whose entry's own largest timestamp is "
                              f"{timestamp_ms} ms, above it")


def test_a_missing_index_is_noted_and_the_active_segment_s_indexes_not_checked(tmp_path):
    # Given an older segment without its time index, and a torn active segment's index
    _, _, time_path = older_segment(tmp_path)
    time_path.unlink()
    active_index = sorted(tmp_path.glob("*.index"))[-1]
    active_index.write_bytes(b"torn")
    # When checked / Then the missing file is noted; the active one's (never read) is not said
    check = check_partition_directory(tmp_path)
    assert check.problems == []
    assert check.notes == [f"{time_path}: missing; the shard rebuilds both indexes from the "
                           f"log when it first reads the segment"]


# --- Producers' snapshots ---------------------------------------------------------------


def test_a_torn_producers_snapshot_of_the_active_segment_is_damage(tmp_path):
    *_, last = rolled_log(tmp_path)
    path = tmp_path / f"{last:020d}.producers"
    path.write_bytes(path.read_bytes()[:-4])
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"{path}: not JSON (")
    assert problem.endswith(f"torn or damaged: a start sets it aside (as {path.name}.corrupt, "
                            f"with a WARNING) and replays only the active segment: an "
                            f"idempotent producer's retry of a batch written before offset "
                            f"{last} may be stored twice")


def test_a_producers_snapshot_of_another_base_offset_is_damage(tmp_path):
    _, second, *_ = rolled_log(tmp_path)
    path = tmp_path / f"{second:020d}.producers"
    path.write_text(json.dumps({"base_offset": second + 2, "producers": []}))
    [problem] = check_partition_directory(tmp_path).problems
    assert problem == (f"{path}: says base offset {second + 2}, its name {second}: a start takes "
                       f"it for another segment's and skips it: no start reads it (only the "
                       f"active segment's is read), but tiered storage uploads it with the "
                       f"segment that ends at offset {second}")


def test_a_producers_snapshot_batch_past_its_offset_or_out_of_order_is_damage(tmp_path):
    _, second, third, *_ = rolled_log(tmp_path)
    past, unordered = (tmp_path / f"{base:020d}.producers" for base in (second, third))
    past.write_text(json.dumps({"base_offset": second, "producers": [[7, [[0, 2, second]], 1]]}))
    unordered.write_text(json.dumps({"base_offset": third, "producers": [
        [3, [[0, 2, 10]], 1, 0], [7, [[0, 2, 10], [2, 2, 8]], 1]]}))
    problems = check_partition_directory(tmp_path).problems
    assert [problem.split(": no start")[0] for problem in problems] == [
        f"{past}: producer #0: producer 7, batch #0 (sequence 0, offsets {second}..{second + 1}) "
        f"is not after the batch before it (offset -1) and before offset {second}, where the "
        f"state it is part of ends",
        f"{unordered}: producer #1: producer 7, batch #1 (sequence 2, offsets 8..9) is not after "
        f"the batch before it (offset 10) and before offset {third}, where the state it is part "
        f"of ends"]


def test_a_producers_snapshot_not_in_its_layout_is_damage(tmp_path):
    *_, last = rolled_log(tmp_path)
    path = tmp_path / f"{last:020d}.producers"
    path.write_text(json.dumps({"base_offset": last, "producers": [[7, [[0, "2", 4]], 1]]}))
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"{path}: producer #0: producer 7, batch #0 is not [base sequence, "
                              f'record count, base offset]: [0, "2", 4]: a start sets it aside')


def test_index_files_left_without_their_log_below_the_last_segment_are_noted(tmp_path):
    # Given a log whose second segment lost its .log file alone (its indexes and its
    # producers' snapshot left)
    _, second, third, *_ = rolled_log(tmp_path)
    (tmp_path / f"{second:020d}.log").unlink()
    # When checked / Then the hole is damage, the index files noted; the snapshot is not
    # (a move or a restart leaves snapshots below the last segment on purpose)
    check = check_partition_directory(tmp_path)
    assert [problem.split(":")[1] for problem in check.problems] == [
        f" offsets {second}..{third - 1} are missing"]
    assert check.notes == [f"{tmp_path}: {second:020d}.index, {second:020d}.timeindex without "
                           f"{second:020d}.log: left by a segment deletion a crash cut short, "
                           f"or its .log file was lost (which cannot be told)"]


def test_a_bad_leader_epoch_checkpoint_is_damage_and_one_set_aside_is_noted(tmp_path):
    # Given a log whose leader-epoch checkpoint had one digit changed (the tester's sed)
    written_log(tmp_path)
    save_leader_epochs(tmp_path, LeaderEpochs([EpochEntry(0, 0), EpochEntry(3, 4950)]))
    path = tmp_path / "leader-epoch-checkpoint"
    path.write_bytes(path.read_bytes().replace(b"3 4950", b"3 4050"))
    # When checked / Then the file, the line and what a start does are said
    [problem] = check_partition_directory(tmp_path).problems
    assert problem.startswith(f"leader-epoch checkpoint {path}, line 5: ")
    assert "a start sets it aside as leader-epoch-checkpoint.corrupt" in problem
    # And once a start set it aside, that is noted, not damage
    path.rename(tmp_path / "leader-epoch-checkpoint.corrupt")
    check = check_partition_directory(tmp_path)
    assert check.problems == [] and any(
        "leader-epoch checkpoint a start found bad and set aside" in n for n in check.notes)
