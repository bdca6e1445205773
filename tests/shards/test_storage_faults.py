"""Storage faults: a full data dir (a real 2 MiB tmpfs) and one whose file
system turns read-only (a real ext4 on a loop device, mounted
errors=remount-ro) fail produces with a clear StorageError while reads keep
working; a shard refuses produces before its disk is full, so that deleting
records still frees it (shards/disk_reserve.py); a corrupt entry in the
middle of a segment is reported by its CRC, never returned as data."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zmq

from plinth import protocol
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer
from tests.shards.test_shard_server import (fetch, idempotent_batch, produce, produce_raw,
                                            roundtrip, values_in)
from tests.support import LostWriteback

@pytest.fixture
def small_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


EXT4_IMAGE_BYTES = 64 * 1024 * 1024   # mkfs.ext4 needs a few MiB for its journal


@pytest.fixture
def ext4_fs(tmp_path):
    """An ext4 image on a loop device, mounted errors=remount-ro: on an ext4 error
    the kernel remounts it read-only, as it does when a disk starts failing."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root (CI runs as root)")
    if not Path("/dev/loop-control").exists() or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs loop devices (/dev/loop-control) and mkfs.ext4")
    image = tmp_path / "ext4.img"
    with image.open("wb") as sparse:
        sparse.truncate(EXT4_IMAGE_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    try:
        subprocess.run(["mount", "-o", "errors=remount-ro", device, str(mount_point)], check=True)
        if not ext4_error_trigger(mount_point).exists():
            pytest.skip(f"this kernel has no {ext4_error_trigger(mount_point)}")
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        subprocess.run(["losetup", "-d", device], check=False)


def ext4_error_trigger(path: Path) -> Path:
    """The sysfs file that raises an ext4 error on the file system holding ``path``."""
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "--target", str(path)], check=True,
                            capture_output=True, text=True).stdout.strip()
    return Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"


@pytest.fixture
def shard_on(request):
    """A shard with t-0 open on the file system fixture the test names through
    indirect parametrisation, and a DEALER playing the router."""
    fs_name, _, reserve = request.param.partition(":")
    mount_point = request.getfixturevalue(fs_name)
    # No reserve unless the test names one: the disk's own refusal is what they test
    srv = ShardServer("shard-fs", mount_point / "shard", "127.0.0.1",
                      produce_free_bytes_min=int(reserve or 0))
    srv.start()
    srv.call(srv.open_partition, "t", 0, LogConfig(segment_bytes_max=64 * 1024))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.address)
    yield srv, sock
    sock.close()
    try:
        srv.stop(5)
    except Exception:   # closing logs on a full or read-only disk may fail; that is the point
        pass


BIG_VALUE = b"x" * 20_000


def produce_until_refused(sock):
    """Produce batches of 100 KB until one is refused (at most 200); returns the
    refusing reply and how many were stored before it."""
    for attempt in range(200):
        reply = produce(sock, [BIG_VALUE] * 5, request_id=100 + attempt)
        if reply.error is not None:
            return reply, attempt
    raise AssertionError("200 batches of 100 KB were all stored on a 2 MiB file system")


@pytest.mark.parametrize("shard_on", ["small_fs"], indirect=True)
def test_a_full_disk_fails_produces_with_a_storage_error_and_reads_keep_working(shard_on):
    srv, sock = shard_on
    # Given a partition that holds some records
    assert produce(sock, [b"kept-%d" % i for i in range(10)]).error is None
    # When producing until the 2 MiB file system is full
    reply, _ = produce_until_refused(sock)
    # Then the produce fails with a StorageError that names the file and the cause
    assert type(reply.error).__name__ == "StorageError", reply.error
    assert "No space left" in str(reply.error) and str(srv.data_dir) in str(reply.error)
    # And the shard's stats (plinth status) say its disk refuses that partition's
    # appends, though it keeps no reserve (T-ext: status said "taken")
    assert srv.call(srv.stats_snapshot)["disk"]["partitions_appends_failing"] == 1
    # And the records already stored are still readable, and the shard still answers
    reply, payload = fetch(sock, 0)
    assert reply.error is None and values_in(payload)[:10] == [b"kept-%d" % i for i in range(10)]


@pytest.mark.parametrize("shard_on", ["ext4_fs"], indirect=True)
def test_a_data_dir_turned_read_only_fails_produces_with_a_storage_error_and_reads_keep_working(
        shard_on):
    srv, sock = shard_on
    # Given a partition that holds some records
    kept = [b"kept-%d" % i for i in range(10)]
    assert produce(sock, kept).error is None
    # When its file system hits an error and the kernel remounts it read-only
    ext4_error_trigger(srv.data_dir).write_text("test")
    # Then a produce fails with a StorageError that names the cause and the directory
    reply = produce(sock, [b"refused"], request_id=2)
    assert type(reply.error).__name__ == "StorageError", reply.error
    assert "Read-only file system" in str(reply.error) and str(srv.data_dir) in str(reply.error)
    # And the records already stored are still readable, and the shard still answers
    reply, payload = fetch(sock, 0)
    assert reply.error is None and values_in(payload) == kept
    reply = produce(sock, [b"refused again"], request_id=3)
    assert type(reply.error).__name__ == "StorageError", reply.error


@pytest.mark.parametrize("shard_on", [f"small_fs:{512 * 1024}"], indirect=True)
def test_a_shard_refuses_produces_before_its_disk_is_full_and_deleting_records_frees_it(
        shard_on):
    srv, sock = shard_on
    # Given a shard keeping 512 KiB free on a 2 MiB file system
    # When producing until it refuses
    reply, stored = produce_until_refused(sock)
    # Then the refusal is the reserve's (a storageError said to come before the write),
    # naming the file system, the bytes and the limit, and the disk still has the room
    assert type(reply.error).__name__ == "DiskReserveRefusedError", reply.error
    assert f"{srv.data_dir}'s file system has" in str(reply.error)
    assert "less than the 524288 bytes the shard keeps free" in str(reply.error)
    assert shutil.disk_usage(srv.data_dir).free >= 512 * 1024 - 100_000
    # And deleting the records (a floor saved, the old segments removed) frees it:
    # produces are taken again
    floor = srv.call(lambda: srv._partitions[("t", 0)].log.end_offset)
    reply = roundtrip(sock, protocol.encode_delete_records(900, "t", 0, floor))[0]
    assert reply.error is None, reply.error
    wait_for_free = [produce(sock, [BIG_VALUE] * 5, request_id=1000 + i).error for i in range(3)]
    assert wait_for_free == [None, None, None] and stored > 0


def test_a_corrupt_entry_in_the_middle_of_a_segment_is_an_error_not_data(tmp_path):
    srv = ShardServer("shard-c", tmp_path / "s", "127.0.0.1")
    srv.start()
    srv.call(srv.open_partition, "t", 0, LogConfig())
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.address)
    try:
        for i in range(3):
            produce(sock, [b"record-%d" % i], request_id=i)
        # Flip one byte inside the second entry's batch, behind the shard's back
        log_file = next((tmp_path / "s" / "t-0").glob("*.log"))
        data = bytearray(log_file.read_bytes())
        second = len(data) // 3
        data[second + 60] ^= 0x40
        log_file.write_bytes(bytes(data))
        reply, _ = roundtrip_fetch(sock, 1)
        assert type(reply.error).__name__ == "CorruptDataError"
        assert "t-0" in str(reply.error) or ".log" in str(reply.error)
        # The first entry, before the damage, is still served
        reply, payload = roundtrip_fetch(sock, 0, bytes_max=1)
        assert values_in(payload) == [b"record-0"]
    finally:
        sock.close()
        srv.stop(5)


def roundtrip_fetch(sock, offset, bytes_max=1 << 20):
    return roundtrip(sock, protocol.encode_fetch(9, "t", 0, offset, bytes_max, 0))



def shard_with_t0(directory) -> tuple[ShardServer, zmq.Socket]:
    """A started shard in ``directory`` (no disk reserve) with t-0 open, and a DEALER
    playing the router."""
    srv = ShardServer("shard-fs", directory, "127.0.0.1", produce_free_bytes_min=0)
    srv.start()
    srv.call(srv.open_partition, "t", 0, LogConfig())
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.address)
    return srv, sock


def test_a_failed_fsync_cuts_what_it_may_not_have_written_so_no_acknowledged_record_is_lost(
        tmp_path, monkeypatch):
    # Given a shard whose disk loses the writeback of its next fsync of t-0's log
    fsync = LostWriteback(monkeypatch)
    srv, sock = shard_with_t0(tmp_path / "shard")
    try:
        assert produce_raw(sock, idempotent_batch([b"a"], 77, 0)).base_offset == 0
        fsync.armed = True
        # When a batch's fsync fails, the idempotent producer retries it, and goes on
        failed = produce_raw(sock, idempotent_batch([b"b"], 77, 1))
        retried = produce_raw(sock, idempotent_batch([b"b"], 77, 1))
        after = produce_raw(sock, idempotent_batch([b"c"], 77, 2))
    finally:
        sock.close()
        srv.stop(5)
    # Then the failed one was refused, and the retry and the next were acknowledged
    assert "fsync of t-0 failed" in str(failed.error)
    assert (retried.error, after.error) == (None, None)
    # And once the shard restarts (its recovery reads what the disk holds), every
    # acknowledged record is there at its offset: the retry was stored again, not
    # answered as a duplicate of the batch the disk lost (before: recovery cut the
    # log at the lost batch's zeros, and the retry and everything after with it)
    srv, sock = shard_with_t0(tmp_path / "shard")
    try:
        _, payload = roundtrip_fetch(sock, 0)
    finally:
        sock.close()
        srv.stop(5)
    assert (retried.base_offset, after.base_offset) == (1, 2)
    assert values_in(payload) == [b"a", b"b", b"c"]
