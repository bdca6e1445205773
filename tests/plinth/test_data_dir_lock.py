"""One server per data directory (plinth/data_dir_lock.py), across processes."""

from __future__ import annotations

import os
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
