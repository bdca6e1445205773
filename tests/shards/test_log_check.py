"""The offline check of partition logs (shards/log_check.py, ``plinth check``): it reads
every segment whole, says which file, position and offsets are damaged, and changes
no data; and compares each shard's directories with its manifest. Real logs written by
PartitionLog, damaged on disk."""

from __future__ import annotations

import json
import os
import random

from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES, iter_entries
from plinth.limits import SEGMENT_BYTES_MIN
from plinth.shards import log_check
from plinth.shards.log_check import check_partition_directory, check_shards_directory
from plinth.shards.offset_gaps import GAPS_FILE
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.partition_metadata import PARTITION_METADATA_FILE, save_topic_id

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


def test_an_offset_gaps_file_the_broker_set_aside_is_damage_holes_cannot_be_checked(tmp_path):
    # Given a log that lost its second segment, whose offset-gaps file a shard found bad
    # and renamed (offset_gaps.py)
    paths = written_log(tmp_path)
    paths[1].unlink()
    (tmp_path / GAPS_FILE).rename(tmp_path / "offset-gaps.corrupt")
    # When checked / Then that is said, since the hole cannot be told from a gap
    [problem] = check_partition_directory(tmp_path).problems
    assert problem == (f"{tmp_path / 'offset-gaps.corrupt'}: an offset-gaps file the broker "
                       f"found bad and set aside: holes between segments cannot be checked "
                       f"(the log takes every hole as a gap made on purpose)")


def test_a_log_of_several_segments_without_an_offset_gaps_file_is_noted(tmp_path):
    paths = written_log(tmp_path)
    (tmp_path / GAPS_FILE).unlink()
    check = check_partition_directory(tmp_path)
    assert check.problems == []
    assert check.notes == [f"{tmp_path}: no offset-gaps file (a log written before gaps were "
                           f"kept): holes between its {len(paths)} segments cannot be told "
                           f"from gaps made on purpose, and none is reported"]


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
    assert problem == (f"{tmp_path / GAPS_FILE} is not an offset-gaps file: the log takes "
                       f"every hole between its segments as made on purpose")
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
        f"{orphan}: kept aside: a deleted topic's leftover log ({size[orphan]:,} bytes), "
        f"not checked"]


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
                f"shard's manifest {TOPIC_ID}: damaged (the shard keeps the log and writes the "
                f"file again when it reopens the partition)"],
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
