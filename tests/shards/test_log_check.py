"""The offline check of partition logs (shards/log_check.py, ``plinth check``): it reads
every segment whole, says which file, position and offsets are damaged, and changes
nothing. Real logs written by PartitionLog, damaged on disk."""

from __future__ import annotations

import os
import random

from plinth.format.log_entry import LOG_ENTRY_HEADER_BYTES
from plinth.limits import SEGMENT_BYTES_MIN
from plinth.shards.log_check import check_partition_directory, check_shards_directory
from plinth.shards.offset_gaps import GAPS_FILE
from plinth.shards.partition_log import LogConfig, PartitionLog

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


def test_a_flipped_byte_in_an_older_segment_is_found_naming_file_position_and_offset(tmp_path):
    # Given a log whose oldest segment (never scanned at a restart) has a flipped byte
    # in its third entry's batch
    paths = written_log(tmp_path)
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    third_position = len(log.read(0, 1, log.end_offset)) + len(log.read(2, 1, log.end_offset))
    log.close()
    flip_byte(paths[0], third_position + LOG_ENTRY_HEADER_BYTES + 1)
    before = tree(tmp_path)
    # When the directory is checked
    check = check_partition_directory(tmp_path)
    # Then that segment is said damaged from that entry on, at offset 4, and nothing changed
    [problem] = check.problems
    bad_bytes = os.path.getsize(paths[0]) - third_position
    assert problem.startswith(f"{paths[0]}: {bad_bytes} bytes from position {third_position} "
                              f"(offset 4 on) fail their checks: CRC mismatch in entry at "
                              f"position {third_position}")
    assert tree(tmp_path) == before


def test_a_lost_middle_segment_is_a_hole_of_named_offsets(tmp_path):
    # Given a log (it keeps its gaps: none) whose second segment's file is lost
    paths = written_log(tmp_path)
    log = PartitionLog.open(tmp_path, SMALL_SEGMENTS)
    hole = (log.segments[1].base_offset, log.segments[2].base_offset)
    log.close()
    paths[1].unlink()
    # When checked / Then the missing offsets are said, between the files around them
    [problem] = check_partition_directory(tmp_path).problems
    assert problem == (f"offsets {hole[0]}..{hole[1] - 1} are missing: {paths[0].name} ends "
                       f"at offset {hole[0]}, the next segment starts at {hole[1]}, and no "
                       f"move of the partition left a gap there")


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


def test_every_partition_directory_of_every_shard_is_checked(tmp_path):
    for shard, partition in (("shard-0", "a-0"), ("shard-0", "a-1"), ("shard-1", "b-0")):
        written_log(tmp_path / shard / partition)
    (tmp_path / "shard-1" / "not-a-log").mkdir()
    checks = check_shards_directory(tmp_path)
    assert [c.directory.relative_to(tmp_path).as_posix() for c in checks] == [
        "shard-0/a-0", "shard-0/a-1", "shard-1/b-0"]
