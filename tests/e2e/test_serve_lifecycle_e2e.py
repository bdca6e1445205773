"""plinth serve's start and stop as an operator sees them: Ray's session directories
kept bounded and private across restarts, and a stop on a disk gone read-only said in
one line per failure with a non-zero status (plinth/server.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from plinth import limits
from tests.support import (free_port, processes_naming, start_until_ready, unique_topic,
                           wait_until)

PLINTH = [sys.executable, "-m", "plinth.cli"]


def plinth(url: str, *args: str, stdin: str | None = None):
    return subprocess.run(PLINTH + ["--broker", url, *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def short_dir():
    """A directory whose path is short enough for Ray's session files to go under the
    data dir (limits.RAY_TEMP_DIR_BYTES_MAX; pytest's tmp_path is too long)."""
    path = Path(tempfile.mkdtemp(prefix="pl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_start_keeps_the_newest_ray_sessions_and_makes_the_ray_dir_private(short_dir):
    # Given a data dir whose ray dir an earlier start left mode 0777 with five sessions
    # (as a server killed during ray.init, restarted in a crash loop, left it)
    tmp_path = short_dir
    ray_dir = tmp_path / "d" / "ray"
    assert len(str(ray_dir).encode()) <= limits.RAY_TEMP_DIR_BYTES_MAX
    for i in range(5):
        (ray_dir / f"session_2026-01-0{i + 1}_00-00-00_000000_{100 + i}" / "logs").mkdir(
            parents=True)
    os.chmod(tmp_path / "d", 0o700)
    os.chmod(ray_dir, 0o777)
    url = f"tcp://127.0.0.1:{free_port()}"
    # When plinth serve starts there
    proc, output = start_until_ready(PLINTH + ["serve", "--data-dir", str(tmp_path / "d"),
                                               "--listen", url, "--console-listen", "off"],
                                     "ready", timeout_s=180)
    try:
        # Then the ray dir is its owner's alone, and it holds the newest sessions only,
        # its own included, each removed one said
        assert ray_dir.stat().st_mode & 0o777 == 0o700
        sessions = sorted(p.name for p in ray_dir.glob("session_*") if not p.is_symlink())
        assert len(sessions) == limits.RAY_SESSIONS_KEPT_MAX
        assert sessions[:limits.RAY_SESSIONS_KEPT_MAX - 1] == [
            f"session_2026-01-0{i + 1}_00-00-00_000000_{100 + i}"
            for i in range(6 - limits.RAY_SESSIONS_KEPT_MAX, 5)]
        said = [line for line in output if "removed Ray's session files" in line]
        assert len(said) == 6 - limits.RAY_SESSIONS_KEPT_MAX, "".join(output)
    finally:
        proc.terminate()
        assert proc.wait(120) == 0, "".join(output[-30:])
    assert ray_dir.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_a_stop_leaves_the_ray_dir_private_though_rays_workers_opened_it(short_dir):
    # Given a broker of 4 shards whose Ray session files go under the data dir, its
    # ray dir opened to everyone while it runs (each Ray worker that starts makes its
    # temp dir 0777, as it would /tmp/ray: here the shard actors started after ray.init)
    data_dir = short_dir / "d"
    url = f"tcp://127.0.0.1:{free_port()}"
    proc, output = start_until_ready(PLINTH + ["serve", "--data-dir", str(data_dir),
                                               "--listen", url, "--shards", "4",
                                               "--console-listen", "off"],
                                     "ready", timeout_s=180)
    try:
        mode = lambda: (data_dir / "ray").stat().st_mode & 0o777   # noqa: E731
        try:
            wait_until(lambda: mode() == 0o777, 20)
        except AssertionError:   # a Ray that no longer does it: done as its workers did
            os.chmod(data_dir / "ray", 0o777)
    finally:
        # When the broker is stopped (SIGTERM)
        proc.terminate()
        code = proc.wait(120)
    # Then it exits 0, and the ray dir is as private as the data dir again
    assert code == 0, "".join(output[-30:])
    assert (data_dir.stat().st_mode & 0o777, mode()) == (0o700, 0o700)


def test_a_start_binds_over_sockets_a_crash_left_and_a_stop_leaves_none_for_a_backup(
        short_dir):
    # Given a data dir whose shards' sockets a crash left (a killed server removes
    # nothing: the files stay, nothing listening on them)
    data_dir = short_dir / "d"
    url = f"tcp://127.0.0.1:{free_port()}"
    cmd = PLINTH + ["serve", "--data-dir", str(data_dir), "--listen", url, "--shards", "2",
                    "--console-listen", "off"]
    proc, output = start_until_ready(cmd, "ready", timeout_s=180)
    proc.kill()
    proc.wait(120)
    wait_until(lambda: not processes_naming(str(data_dir)), 60)
    left = sorted(path.name for path in (data_dir / "sockets").iterdir())
    assert left == ["shard-0", "shard-0.direct", "shard-1", "shard-1.direct"]
    # When a broker starts there / Then it serves, through its shards' new sockets
    topic = unique_topic("sockets")
    proc, output = start_until_ready(cmd, "ready", timeout_s=180)
    try:
        assert plinth(url, "topic", "create", topic, "--partitions", "2").returncode == 0
        assert plinth(url, "produce", topic, stdin="a\nb\n").returncode == 0
        consumed = plinth(url, "consume", topic, "--from-beginning", "--max-messages", "2",
                          "--timeout-ms", "20000")
        assert sorted(consumed.stdout.splitlines()) == ["a", "b"], consumed.stderr
    finally:
        # And when it is stopped (SIGTERM)
        proc.terminate()
        code = proc.wait(120)
    # Then it exits 0 with no socket left in the data dir, so tar backs it up in silence
    assert code == 0, "".join(output[-30:])
    assert not (data_dir / "sockets").exists()
    backup = subprocess.run(["tar", "-cf", str(short_dir / "backup.tar"), "-C", str(short_dir),
                             "d"], capture_output=True, text=True, timeout=120)
    assert (backup.returncode, backup.stderr) == (0, "")


def test_a_stop_on_a_disk_gone_read_only_is_one_line_and_exits_1(tmp_path):
    # Given a broker holding records
    data_dir = tmp_path / "d"
    url = f"tcp://127.0.0.1:{free_port()}"
    proc, output = start_until_ready(PLINTH + ["serve", "--data-dir", str(data_dir), "--listen",
                                               url, "--console-listen", "off"],
                                     "ready", timeout_s=180)
    shards = data_dir / "shards"
    mounted = False
    try:
        topic = unique_topic("ro")
        assert plinth(url, "topic", "create", topic).returncode == 0
        assert plinth(url, "produce", topic, stdin="a\nb\n").returncode == 0
        # And then its shards' directory is read-only (a real read-only mount over it:
        # the files the shard has open stay writable, a new one cannot be made)
        subprocess.run(["mount", "--bind", str(shards), str(shards)], check=True)
        mounted = True
        subprocess.run(["mount", "-o", "remount,bind,ro", str(shards)], check=True)
        # When it is stopped
        proc.terminate()
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if mounted:
            subprocess.run(["umount", str(shards)], check=True)
    # Then it says, in one line and no traceback, that a shard could not save its
    # indexes on the read-only disk, and exits 1
    wait_until(lambda: any("could not save" in line for line in output), 10,
               explain=lambda: "".join(output))
    text = "".join(output)
    assert code == 1, text
    assert "Traceback" not in text
    [line] = [line for line in output if "could not save" in line]
    assert "ERROR plinth.server a shard could not save its files on shutdown: cannot write the " \
           "indexes of " in line and "Read-only file system" in line
