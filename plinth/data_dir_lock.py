"""The data directory's lock: one server per data directory, as Kafka's ``.lock``.

``plinth serve`` takes it before it starts anything (Ray, the controller, the
shards) and holds it until its process ends; the kernel drops it when the
process dies, however it dies. A second server on the same directory refuses
at once, naming the directory and the process that holds it, instead of
starting a second Ray whose controller would write the same ``metadata.json``.

The file. ``<data dir>/.lock``: an ``flock`` on it is the lock; its text, the
holder's pid and command line, is only what the refusal quotes (written after
the lock is taken, so a stale text is never believed without the lock):

    <pid> <command line, arguments separated by spaces>\\n

The command line is recorded with every URL's secrets masked as the log masks
them (plinth/redacted_urls.py): a ``--tier-url s3://KEY:SECRET@bucket`` must not
reach the disk, where the file outlives the server. The file is mode 0600 (an
older one is set so when taken): only the data dir's owner has any use for it.

``plinth check`` takes the same lock to read (``acquire_to_read``), so that it
never reads a running server's active segments; on a file system the kernel
remounted read-only (after an ext4 error: exactly when an operator runs check)
the file cannot be opened for writing, and on a full one (ENOSPC: tester T-fd
copied a data dir there) it cannot be made or written, so there it flocks the
file opened read-only and leaves its holder line as it is, or, if there is no
file, takes no lock: no server runs without one, and none can make one there.

Each shard keeps its own lock in its own directory (``shards/<id>/.lock``,
shards/shard_server.py): that one stops a restarted shard actor from writing
the logs its dying predecessor still writes.

Server process, main thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from pathlib import Path

from plinth.data_dir_mode import make_data_dir
from plinth.errors import InvalidConfigError
from plinth.redacted_urls import redacted_command_line

LOCK_FILE = ".lock"
LOCK_FILE_MODE = 0o600
# The lock file cannot be made or written here: plinth check reads without writing it.
_UNWRITABLE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class DataDirLock:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise InvalidConfigError naming the holder. Never waits.
        Creates the data dir, mode 0700 (data_dir_mode.py), if it is not there."""
        make_data_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse_held(fd)
        try:
            os.fchmod(fd, LOCK_FILE_MODE)   # a lock file an older Plinth made 0644
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {redacted_command_line(sys.argv)}\n".encode(), 0)
        except OSError:   # a full disk: the flock must not outlive the refusal
            os.close(fd)
            raise
        self._fd = fd

    def acquire_to_read(self) -> None:
        """Take the lock to read the data dir without changing it (``plinth check``),
        or raise InvalidConfigError naming the holder. Never waits. As ``acquire``
        where the file system takes the lock file; where it cannot (read-only:
        EROFS; full: ENOSPC, EDQUOT), the existing lock file is flocked opened
        read-only and its holder line left as it is, and without one no lock is
        taken (no server runs without one, and none can start where it cannot
        be made). CLI process, main thread."""
        try:
            self.acquire()
            return
        except OSError as exc:
            if exc.errno not in _UNWRITABLE_ERRNOS:
                raise
            read_only = exc.errno == errno.EROFS
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not read_only:   # a server that filled its disk still holds it
                self._refuse_held(fd)
            holder = _read_holder(fd)
            os.close(fd)
            raise InvalidConfigError(   # no holder wrote its line here: it names the last
                f"{self.path.parent} is in use by another process (its file system is "
                f"read-only, so no server: most likely another plinth check); {self.path} "
                f"names the last server that held it, {holder}. Wait for it to end") from None
        self._fd = fd

    def _refuse_held(self, fd: int) -> None:
        """Close ``fd``, whose flock another process holds, and raise the refusal."""
        holder = _read_holder(fd)
        os.close(fd)
        raise InvalidConfigError(
            f"{self.path.parent} is in use by another Plinth server ({holder} holds "
            f"{self.path}); stop it first, or pass another --data-dir") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the last descriptor drops the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    return f"process {pid} ({command})" if pid.isdigit() else "a process that wrote no pid yet"
