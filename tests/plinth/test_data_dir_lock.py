"""One server per data directory (plinth/data_dir_lock.py), across processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from plinth.data_dir_lock import DataDirLock
from plinth.errors import InvalidConfigError


def test_a_second_holder_is_refused_at_once_naming_the_directory_and_the_holders_pid(tmp_path):
    # Given another process holding the lock of a data dir
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from plinth.data_dir_lock import DataDirLock; "
         f"DataDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        # When this process asks for it, Then it is refused, naming the dir and the pid
        with pytest.raises(InvalidConfigError) as refused:
            DataDirLock(tmp_path).acquire()
        assert str(tmp_path) in str(refused.value) and f"process {holder.pid} " in str(refused.value)
    finally:
        holder.kill()
        holder.wait(10)
    # And once the holder died, the lock is free again (the kernel dropped it)
    lock = DataDirLock(tmp_path)
    lock.acquire()
    assert (tmp_path / ".lock").read_text().startswith(f"{os.getpid()} ")
    lock.release()


def hold_lock_with_arguments(data_dir, *arguments: str) -> subprocess.Popen:
    """A process whose command line ends with ``arguments``, holding ``data_dir``'s
    lock until killed (it prints "held" once it has it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from plinth.data_dir_lock import DataDirLock; "
         f"DataDirLock({str(data_dir)!r}).acquire(); print('held', flush=True); time.sleep(60)",
         *arguments], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_tier_urls_password_and_query_never_reach_the_lock_file(tmp_path):
    # Given a server started with tier URLs carrying credentials, both option spellings
    secret_url = "s3://AKIAEXAMPLE:SuperSecretKey123@bucket/prefix?sig=TOPSECRETSIG"
    holder = hold_lock_with_arguments(tmp_path, "--tier-url", secret_url,
                                      f"--tier-u={secret_url}", "--broker", "tcp://127.0.0.1:7900")
    try:
        # When another process reads the lock file it holds
        text = (tmp_path / ".lock").read_text()
        # Then neither the password nor the query is there; the masked URL and the rest are
        assert "SuperSecretKey123" not in text and "TOPSECRETSIG" not in text
        assert "AKIAEXAMPLE" not in text
        assert "--tier-url s3://***@bucket/prefix?*** --tier-u=s3://***@bucket/prefix?*** " \
               "--broker tcp://127.0.0.1:7900" in text
        # And the refusal a second server gets quotes the masked form only
        with pytest.raises(InvalidConfigError) as refused:
            DataDirLock(tmp_path).acquire()
        assert "SuperSecretKey123" not in str(refused.value)
        assert "s3://***@bucket/prefix?***" in str(refused.value)
    finally:
        holder.kill()
        holder.wait(10)


def test_the_lock_file_is_readable_by_its_owner_only_even_one_an_older_plinth_made(tmp_path):
    # Given a data dir with a lock file an older Plinth left mode 0644, and a new data dir
    old = tmp_path / "old"
    old.mkdir()
    (old / ".lock").write_text("123 plinth serve --tier-url s3://k:s@b\n")
    os.chmod(old / ".lock", 0o644)
    new = tmp_path / "new"
    for data_dir in (old, new):
        # When a server takes the lock
        lock = DataDirLock(data_dir)
        lock.acquire()
        try:
            # Then the file is mode 0600
            assert stat.S_IMODE(os.stat(data_dir / ".lock").st_mode) == 0o600
        finally:
            lock.release()


def test_on_a_read_only_file_system_a_reader_is_refused_while_another_holds_the_lock(tmp_path):
    # Given a data dir whose lock file a server left, on a file system then made read-only
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                   check=True)
    try:
        data_dir = mount_point / "d"
        lock = DataDirLock(data_dir)
        lock.acquire()
        lock.release()
        server_line = (data_dir / ".lock").read_text()
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
        # And another process reading it under the lock (as plinth check does)
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import time; from plinth.data_dir_lock import DataDirLock; "
             f"DataDirLock({str(data_dir)!r}).acquire_to_read(); print('held', flush=True); "
             "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "held\n"
            # When this process asks to read it / Then it is refused, naming the dir,
            # and the line in the lock file as the last server's, not the holder's
            with pytest.raises(InvalidConfigError) as refused:
                DataDirLock(data_dir).acquire_to_read()
        finally:
            holder.kill()
            holder.wait(10)
            holder.stdout.close()
        assert str(refused.value).startswith(f"{data_dir} is in use by another process (its "
                                             f"file system is read-only")
        assert f"names the last server that held it, process {server_line.split()[0]} " \
            in str(refused.value)
        # And once the holder is gone, it is taken, and the file is as the server left it
        reader = DataDirLock(data_dir)
        reader.acquire_to_read()
        reader.release()
        assert (data_dir / ".lock").read_text() == server_line
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
