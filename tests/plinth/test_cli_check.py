"""``plinth check`` (plinth/cli.py, over shards/log_check.py): on a stopped broker's data
dir it says what is damaged and exits 1, or sums up a clean one and exits 0, noting a
format a start would upgrade; it refuses a data dir a server holds, one that holds no
Plinth data, one whose metadata cannot be read, and one a newer Plinth wrote, in one
line and exit status 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from plinth import limits
from plinth.cli import main
from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.data_dir_lock import DataDirLock
from plinth.limits import SEGMENT_BYTES_MIN
from plinth.shards.leader_epochs import (
    CHECKPOINT_FILE, EpochEntry, LeaderEpochs, save_leader_epochs)
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.producer_state import ProducerStates, save_snapshot
from plinth.version import VERSION
from tests.control.broker_without_ray import MAIN_DATA_DIR
from tests.support import fill_file_system


def check(data_dir):
    return CliRunner().invoke(main, ["check", "--data-dir", str(data_dir)])


def data_dir_with_a_log(tmp_path, batches=20):
    """A data dir whose shard-0 holds partition t-0, its manifest naming it (and a
    metadata.json with topic t: a data dir's manifests without one are refused, and a
    partition of a topic it lacks is damage); returns (data dir, its first .log)."""
    log = PartitionLog.open(tmp_path / "shards" / "shard-0" / "t-0", LogConfig())
    for i in range(batches):
        log.append(b"%d" % i * 50, 1, 1_000 + i)
    path = log.segments[0].log_path
    log.close()
    spec = {"config": {}, "initial_offset": 0, "sealed": False, "producers": None}
    (tmp_path / "shards" / "shard-0" / "manifest.json").write_text(json.dumps(
        {"version": 1, "partitions": {"t/0": spec}, "partition_counts": {"t": 1}}))
    BrokerMetadata(shards=["shard-0"], topics={"t": TopicMetadata(1, {}, ["shard-0"])}).save(
        tmp_path / "metadata.json")
    return tmp_path, path


def test_a_clean_data_dir_is_summed_up_and_exits_0(tmp_path):
    data_dir, path = data_dir_with_a_log(tmp_path)
    result = check(data_dir)
    assert result.exit_code == 0, result.output
    assert result.output == (f"checked 1 partition log in {data_dir / 'shards'}: 1 segment, "
                             f"record batches valid: 20 ({path.stat().st_size:,} bytes); "
                             f"0 damaged\n")


def test_a_data_dir_with_tiered_topics_notes_that_their_remote_segments_are_not_checked(
        tmp_path):
    # Given a data dir whose topic t is tiered, in the store metadata.json records
    data_dir, path = data_dir_with_a_log(tmp_path)
    BrokerMetadata(shards=["shard-0"], tier_store="s3://tier/p", topics={"t": TopicMetadata(
        1, {"remote.storage.enable": "true"}, ["shard-0"])}).save(tmp_path / "metadata.json")
    # When it is checked / Then a note says the store was not read, and the check passes
    result = check(data_dir)
    assert result.exit_code == 0, result.output
    assert ("note    1 tiered topic(s) (t): their remote segments in s3://tier/p are not "
            "checked, only the local logs") in result.output


def test_a_shard_holding_several_partitions_is_checked_partition_by_partition(tmp_path):
    # Given a shard whose manifest names three partitions, of two topics (a broker of
    # a few topics has several per shard; session 37's check sorted them and could not)
    specs = {}
    for topic, partition in (("u", 0), ("t", 1), ("t", 0)):
        log = PartitionLog.open(tmp_path / "shards" / "shard-0" / f"{topic}-{partition}",
                                LogConfig())
        log.append(b"x" * 50, 1, 1_000)
        log.close()
        specs[f"{topic}/{partition}"] = {"config": {}, "initial_offset": 0, "sealed": False,
                                         "producers": None}
    (tmp_path / "shards" / "shard-0" / "manifest.json").write_text(json.dumps(
        {"version": 1, "partitions": specs, "partition_counts": {"t": 2, "u": 1}}))
    BrokerMetadata(shards=["shard-0"], topics={"t": TopicMetadata(2, {}, ["shard-0", "shard-0"]),
                                               "u": TopicMetadata(1, {}, ["shard-0"])}).save(
        tmp_path / "metadata.json")
    # When it is checked
    result = check(tmp_path)
    # Then it is clean, every log counted
    assert result.exit_code == 0, result.output
    assert result.output.startswith("checked 3 partition logs in "), result.output
    assert result.output.endswith("; 0 damaged\n"), result.output


def test_a_damaged_log_is_said_with_its_file_and_exits_1(tmp_path):
    data_dir, path = data_dir_with_a_log(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    result = check(data_dir)
    assert result.exit_code == 1
    [damaged, summary] = result.output.splitlines()
    assert damaged.startswith(f"DAMAGED {path}: ") and "CRC mismatch" in damaged
    assert summary.endswith("; 1 damaged")


def test_a_data_dir_a_server_holds_is_refused_naming_the_holder(tmp_path):
    data_dir, _ = data_dir_with_a_log(tmp_path)
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        result = check(data_dir)
    finally:
        lock.release()
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: InvalidConfigError: {data_dir} is in use by "
                                    f"another Plinth server")


@pytest.fixture
def read_only_fs(tmp_path):
    """``(mount point, make_read_only())``: a real 4 MiB tmpfs, writable until
    make_read_only() remounts it read-only, as the kernel remounts an ext4 after an
    error (tests/shards/test_storage_faults.py has the ext4 itself)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                    str(mount_point)], check=True)

    def make_read_only():
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)

    yield mount_point, make_read_only
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("lock_file", ["left by a server", "never made"])
def test_a_data_dir_on_a_read_only_file_system_is_checked_and_left_as_it_is(
        read_only_fs, lock_file):
    # Given a data dir with a clean log (and a server's .lock, or none), whose file
    # system then turned read-only
    mount_point, make_read_only = read_only_fs
    data_dir, path = data_dir_with_a_log(mount_point / "data")
    if lock_file == "left by a server":
        lock = DataDirLock(data_dir)
        lock.acquire()
        lock.release()
    before = files_of(data_dir)
    lock_text = (data_dir / ".lock").read_text() if lock_file == "left by a server" else None
    make_read_only()
    # When it is checked
    result = check(data_dir)
    # Then the check is done as on any other file system: summed up, exit 0, noting
    # once (not file by file) that a broker could not write there
    assert result.exit_code == 0, (result.output, result.stderr)
    assert result.output == (f"note    {data_dir}: its file system is mounted read-only: a "
                             f"broker cannot start on it until it is mounted read-write "
                             f"(whether it could write each file is not checked)\n"
                             f"checked 1 partition log in {data_dir / 'shards'}: 1 segment, "
                             f"record batches valid: 20 ({path.stat().st_size:,} bytes); "
                             f"0 damaged\n")
    # And nothing was changed, the lock's holder line included
    assert files_of(data_dir) == before
    assert ((data_dir / ".lock").read_text() if (data_dir / ".lock").exists()
            else None) == lock_text


def test_a_data_dir_whose_disk_is_too_full_to_start_on_is_noted_but_not_damaged(read_only_fs):
    # Given a clean data dir on a 4 MiB file system: less free than a start asks
    # (tester T-fd ran the check after filling the disk, and was told all was well)
    mount_point, _ = read_only_fs
    data_dir, path = data_dir_with_a_log(mount_point / "data")
    # When it is checked
    result = check(data_dir)
    # Then a note says a start is refused there, with the free bytes (less than the
    # file system's 4 MiB: the check's lock file takes a block) and what a start asks;
    # nothing is damaged, so the check exits 0
    assert result.exit_code == 0, (result.output, result.stderr)
    first, *rest = result.output.splitlines()
    said = re.match(rf"note    plinth serve refuses to start here: --data-dir "
                    rf"{re.escape(str(data_dir))}: its file system has (\d+) bytes free, under the "
                    rf"{limits.DATA_DIR_FREE_BYTES_MIN} a start needs", first)
    assert said is not None and 0 < int(said[1]) < 4 * 1024 * 1024, first
    assert rest == [f"checked 1 partition log in {data_dir / 'shards'}: 1 segment, record "
                    f"batches valid: 20 ({path.stat().st_size:,} bytes); 0 damaged"]


def test_a_copy_on_a_disk_full_to_its_last_byte_is_checked_without_making_a_lock_file(
        read_only_fs):
    # Given a data dir copied without its .lock onto a disk then filled to its last
    # byte (tester T-fd: "nothing was checked", as the lock file could not be made)
    mount_point, _ = read_only_fs
    data_dir, path = data_dir_with_a_log(mount_point / "data")
    fill_file_system(mount_point)
    before = files_of(data_dir)
    # When it is checked
    result = check(data_dir)
    # Then it is checked as anywhere else: a start is refused there, nothing is damaged
    assert result.exit_code == 0, (result.output, result.stderr)
    assert result.output.splitlines()[-1] == (
        f"checked 1 partition log in {data_dir / 'shards'}: 1 segment, record batches "
        f"valid: 20 ({path.stat().st_size:,} bytes); 0 damaged")
    assert "plinth serve refuses to start here" in result.output
    # And nothing was changed; the lock file, if the disk let it be made (tmpfs makes
    # an empty file without a block), names no holder
    assert files_of(data_dir) == before
    assert not (data_dir / ".lock").exists() or (data_dir / ".lock").read_bytes() == b""


def test_a_shard_on_a_nearly_full_disk_of_its_own_is_noted_but_not_damaged(tmp_path):
    # Given a data dir whose shard-0 has a small disk of its own (a tmpfs mounted on
    # shards/shard-0 before the first start), under the reserve a shard keeps free
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    shard_disk = tmp_path / "data" / "shards" / "shard-0"
    shard_disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(shard_disk)],
                   check=True)
    try:
        data_dir, _ = data_dir_with_a_log(tmp_path / "data")
        # When it is checked
        result = check(data_dir)
    finally:
        subprocess.run(["umount", "-l", str(shard_disk)], check=False)
    # Then a note names the shard's directory, its free bytes and the reserve, and
    # nothing is damaged
    assert result.exit_code == 0, (result.output, result.stderr)
    said = re.search(rf"note    {re.escape(str(shard_disk))} is on a file system of its own "
                     rf"with (\d+) bytes free, under the {limits.PRODUCE_FREE_BYTES_MIN_DEFAULT} a "
                     rf"shard keeps free by default", result.output)
    assert said is not None and int(said[1]) < 4 * 1024 * 1024, result.output
    assert result.output.splitlines()[-1].endswith("0 damaged")


def test_a_data_dir_a_server_holds_on_a_full_disk_is_refused_naming_the_holder(read_only_fs):
    # Given a data dir whose server holds its lock while its disk is full to the last byte
    mount_point, _ = read_only_fs
    data_dir, _ = data_dir_with_a_log(mount_point / "data")
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        fill_file_system(mount_point)
        # When it is checked
        result = check(data_dir)
    finally:
        lock.release()
    # Then the check is refused, naming the server, as on a disk with room
    assert result.exit_code == 2, (result.output, result.stderr)
    assert result.stderr.startswith(f"error: InvalidConfigError: {data_dir} is in use by "
                                    f"another Plinth server (process {os.getpid()} ")


@pytest.fixture
def immutable():
    """``immutable(path)``: ``chattr +i path``, undone at the end. Fails the test where
    chattr cannot set it (it needs root, and a file system that keeps attributes):
    a skip would pass having checked nothing."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.fail("chattr +i needs root and e2fsprogs")
    made = []

    def make(path) -> None:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"chattr +i {path}: {done.stderr}"
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_an_immutable_segment_and_metadata_file_are_said_damaged_and_left_as_they_are(
        tmp_path, immutable):
    # Given a data dir whose segment and metadata.json were made immutable (the broker
    # reads them at a start, then cannot append to the segment nor replace the file)
    data_dir, path = data_dir_with_a_log(tmp_path)
    immutable(path)
    immutable(data_dir / "metadata.json")
    before = files_of(data_dir)
    # When it is checked
    result = check(data_dir)
    # Then each is said damaged, naming it and why, and the check exits 1
    assert result.exit_code == 1, result.output
    damaged = [line for line in result.output.splitlines() if line.startswith("DAMAGED")]
    assert [line.split(": the broker cannot")[0] for line in damaged] == [
        f"DAMAGED {data_dir / 'metadata.json'}", f"DAMAGED {path}"]
    assert all("it is immutable (lsattr shows i; chattr -i clears it)" in line
               for line in damaged)
    assert result.output.endswith("; 2 damaged\n")
    # And nothing was changed
    assert files_of(data_dir) == before


def test_a_file_the_check_cannot_read_is_refused_in_one_line_naming_it(tmp_path):
    # Given a data dir whose metadata.json is a directory (unreadable as a file)
    (tmp_path / "shards").mkdir()
    (tmp_path / "metadata.json").mkdir()
    # When it is checked
    result = check(tmp_path)
    # Then one error line names the file and the cause, exit status 2 (not a traceback)
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: IsADirectoryError: {tmp_path / 'metadata.json'}: Is a "
                             f"directory (errno 21); nothing was checked\n")


def test_a_directory_without_plinth_data_is_refused_in_one_line(tmp_path):
    result = check(tmp_path)
    assert result.exit_code == 2
    assert result.stderr == (f"error: InvalidConfigError: {tmp_path} holds no Plinth data (no "
                             f"metadata.json, no shards/): pass the --data-dir plinth serve "
                             f"uses\n")


def test_a_damaged_metadata_file_is_refused_naming_it(tmp_path):
    data_dir, _ = data_dir_with_a_log(tmp_path)
    (data_dir / "metadata.json").write_text("{not json")
    result = check(data_dir)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: CorruptDataError: {data_dir / 'metadata.json'}: "
                                    f"not broker metadata")
    assert result.stdout == ""


def test_a_damaged_manifest_is_said_and_the_logs_are_checked_all_the_same(tmp_path):
    data_dir, path = data_dir_with_a_log(tmp_path)
    (data_dir / "shards" / "shard-0" / "manifest.json").write_text("{not json")
    result = check(data_dir)
    assert result.exit_code == 1, result.output
    [damaged, summary] = result.stdout.splitlines()
    assert damaged.startswith(f"DAMAGED {data_dir / 'shards' / 'shard-0' / 'manifest.json'}: "
                              f"not a shard manifest")
    assert summary == (f"checked 1 partition log in {data_dir / 'shards'}: 1 segment, "
                       f"record batches valid: 20 ({path.stat().st_size:,} bytes); 1 damaged")


def files_of(data_dir):
    """Every file under ``data_dir`` but the lock's, by path: its bytes."""
    return {path: path.read_bytes() for path in sorted(data_dir.rglob("*"))
            if path.is_file() and path.name != ".lock"}


def test_a_version_1_data_dir_is_noted_as_upgraded_by_a_start_and_left_as_it_is(tmp_path):
    # Given the data dir main wrote (metadata.json format version 1)
    data_dir = tmp_path / "from-main"
    shutil.copytree(MAIN_DATA_DIR, data_dir)
    before = files_of(data_dir)
    # When it is checked
    result = check(data_dir)
    # Then it is clean, exit status 0, and a note says a start upgrades it to version 2,
    # which older builds refuse
    assert result.exit_code == 0, result.output
    *_, note, summary = result.stdout.splitlines()
    assert note == (f"note    {data_dir / 'metadata.json'}: format version 1: a start of "
                    f"Plinth {VERSION} upgrades the data directory's format to version 2; "
                    f"Plinth builds before 0.2.0 refuse this data dir from then on (back up "
                    f"the data dir before upgrading to be able to go back)")
    assert summary.endswith("; 0 damaged")
    # And the check wrote nothing
    assert files_of(data_dir) == before
    # And once metadata.json is saved as version 2 (as a start saves it), no such note
    BrokerMetadata.load(data_dir / "metadata.json").save(data_dir / "metadata.json")
    result = check(data_dir)
    assert result.exit_code == 0 and "format version" not in result.output, result.output


def test_a_data_dir_a_newer_plinth_wrote_is_refused_as_such_not_as_damage(tmp_path):
    # Given a data dir whose shard manifest a newer Plinth wrote (version 2)
    data_dir, _ = data_dir_with_a_log(tmp_path)
    manifest = data_dir / "shards" / "shard-0" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 2}))
    before = files_of(data_dir)
    # When it is checked / Then the check is refused (2), saying a newer Plinth wrote it
    result = check(data_dir)
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    assert result.stderr == (f"error: InvalidConfigError: {manifest}: shard manifest version 2 "
                             f"was written by a newer Plinth; this one ({VERSION}) reads "
                             f"versions up to 1: run the Plinth that wrote it (the data "
                             f"directory is unchanged)\n")
    assert files_of(data_dir) == before
    # And so it is for a metadata.json of version 3
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 1}))
    metadata = data_dir / "metadata.json"
    metadata.write_text(json.dumps({**json.loads(metadata.read_text()), "version": 3}))
    before = files_of(data_dir)
    result = check(data_dir)
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    assert result.stderr.startswith(f"error: InvalidConfigError: {metadata}: metadata version 3 "
                                    f"was written by a newer Plinth; this one ({VERSION}) "
                                    f"reads versions up to 2")
    # And neither check wrote anything
    assert files_of(data_dir) == before


def test_a_lost_last_segment_is_said_damaged_and_exits_1(tmp_path):
    # Given a log whose segment after its only one is lost, the producers' snapshot its
    # roll saved left (producer_state.py)
    data_dir, path = data_dir_with_a_log(tmp_path)
    save_snapshot(path.parent, 20, ProducerStates())
    # When checked / Then the lost segment is damage
    result = check(data_dir)
    assert result.exit_code == 1, result.output
    [damaged, summary] = result.stdout.splitlines()
    assert damaged.startswith(f"DAMAGED {path.parent}: the segment at offset 20 is lost")
    assert summary.endswith("; 1 damaged")


def test_a_leader_epoch_checkpoint_with_one_digit_changed_is_said_damaged_and_exits_1(
        tmp_path):
    # Given a log whose leader-epoch checkpoint had one digit changed by hand (its CRC
    # line no longer the lines'), as the tester's sed did
    data_dir, path = data_dir_with_a_log(tmp_path)
    save_leader_epochs(path.parent, LeaderEpochs([EpochEntry(0, 0), EpochEntry(3, 15)]))
    checkpoint = path.parent / CHECKPOINT_FILE
    checkpoint.write_bytes(checkpoint.read_bytes().replace(b"\n3 15\n", b"\n3 14\n"))
    # When checked / Then the file, its line and what a start does are said, rc 1
    result = check(data_dir)
    assert result.exit_code == 1, result.output
    [damaged, summary] = result.stdout.splitlines()
    assert damaged.startswith(f"DAMAGED leader-epoch checkpoint {checkpoint}, line 5: ")
    assert "a start sets it aside as leader-epoch-checkpoint.corrupt" in damaged
    assert summary.endswith("; 1 damaged")


def test_a_lost_middle_segment_is_named_even_with_a_garbage_offset_gaps_file(tmp_path):
    # Given a never-moved log of three segments whose middle one's .log is lost and
    # whose offset-gaps file is 16 bytes of garbage (the tester's printf)
    directory = tmp_path / "shards" / "shard-0" / "t-0"
    log = PartitionLog.open(directory, LogConfig(segment_bytes_max=SEGMENT_BYTES_MIN))
    while len(log.segments) < 3:
        log.append(b"x" * 900, 1, 1_000)
    segments = log.segments
    log.close()
    data_dir, _ = data_dir_with_a_log(tmp_path, batches=0)
    (directory / "offset-gaps").write_bytes(b"garbagegarbage!!")
    segments[1].log_path.unlink()
    # When checked / Then the missing offsets are named as damage
    result = check(data_dir)
    assert result.exit_code == 1, result.output
    hole = f"offsets {segments[1].base_offset}..{segments[2].base_offset - 1} are missing"
    assert any(line.startswith("DAMAGED") and hole in line
               for line in result.stdout.splitlines()), result.output


def test_a_shard_directory_missing_from_a_copy_is_said_damaged_naming_its_partitions(tmp_path):
    # Given a data dir of two shards, t-0 on shard-0 and t-1 on shard-1, whose shard-1
    # directory was left out of the copy
    data_dir, _ = data_dir_with_a_log(tmp_path)
    BrokerMetadata(shards=["shard-0", "shard-1"],
                   topics={"t": TopicMetadata(2, {}, ["shard-0", "shard-1"])}).save(
        data_dir / "metadata.json")
    # When it is checked
    result = check(data_dir)
    # Then the missing directory is damage, naming the partitions a start would open empty
    assert result.exit_code == 1, result.output
    assert (f"{data_dir / 'shards' / 'shard-1'} is missing, but {data_dir / 'metadata.json'} "
            f"places 1 partition(s) of one copy on shard shard-1 (t-1): every record they "
            f"held is lost unless the directory is restored") in result.output
    assert result.output.rstrip().endswith("1 damaged")


def test_a_copy_without_its_shards_directory_is_said_damaged(tmp_path):
    data_dir, _ = data_dir_with_a_log(tmp_path)
    shutil.rmtree(data_dir / "shards")
    result = check(data_dir)
    assert result.exit_code == 1, result.output
    assert f"{data_dir / 'shards' / 'shard-0'} is missing" in result.output
