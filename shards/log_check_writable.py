"""``plinth check``'s check that the broker can write the files it keeps: each file
and directory of a partition log, a shard's manifest and directory, and the data
dir's own (plinth/cli.py passes those).

A shard appends to its active segment, truncates a segment a recovery or a
follower cuts, writes index files, snapshots and checkpoints by rename, and
deletes segments retention or a deleteRecords passes. A file it cannot write
fails that operation when it comes, long after a start that read it fine: a
segment made immutable (``chattr +i``) passed ``plinth check``, which only reads,
then refused the broker's appends. So each is tried as the broker would use it,
without changing it:

- a file is opened for appending, and closed without a byte written: refused
  if it is immutable or not writable by the user running the check (``os.access``
  alone does not try the open the broker does);
- a file or directory whose attributes say immutable or append-only
  (FS_IOC_GETFLAGS, as ``lsattr`` reads them): an append-only file opens for
  appending but cannot be truncated or deleted, and in an immutable or
  append-only directory no file can be created, renamed or deleted. A file
  system that keeps no such attributes answers ENOTTY or EOPNOTSUPP (any error
  of that call leaves the attributes unknown): then the open and ``os.access``
  decide;
- a directory the user cannot write and search (``os.access``, by the effective
  uid, as the open of a file goes).

A file system mounted read-only is not said file by file: every file there would
be, and a start refuses it in one line anyway (plinth/server.py). ``plinth check``
notes it once (``read_only_mount``), and checks the rest as on any other: a
read-only copy of a data dir is checked so.

The check runs as whatever user runs it: the broker may run as another (the
lines say the uid). Sockets and symbolic links are not the broker's stored
state, and are passed over.

Any process; changes nothing (an open for appending writes nothing).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterable
from pathlib import Path

from plinth.limits import CHECK_UNWRITABLE_SAID_MAX

# linux/fs.h: FS_IOC_GETFLAGS is _IOR('f', 1, long), though file systems write an int
# there; the flags lsattr shows as i and a.
FS_IOC_GETFLAGS = 0x80086601
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020


def unwritable_lines(paths: Iterable[Path]) -> list[str]:
    """One line per path of ``paths`` the broker could not write (module docstring),
    naming it and why; paths that do not exist, sockets and links are passed over.
    At most CHECK_UNWRITABLE_SAID_MAX lines, the rest counted in one more."""
    lines = [line for path in paths if (line := _unwritable_line(Path(path))) is not None]
    if len(lines) <= CHECK_UNWRITABLE_SAID_MAX:
        return lines
    unsaid = len(lines) - CHECK_UNWRITABLE_SAID_MAX
    return lines[:CHECK_UNWRITABLE_SAID_MAX] + [
        f"{unsaid} more files or directories beside these the broker cannot write; lines "
        f"for the first {CHECK_UNWRITABLE_SAID_MAX} only (limits.CHECK_UNWRITABLE_SAID_MAX)"]


def read_only_mount(path: Path) -> bool:
    """Whether ``path``'s file system is mounted read-only (statvfs's ST_RDONLY)."""
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def directory_and_files(directory: Path) -> list[Path]:
    """``directory`` and what it holds, in name order (its subdirectories, not theirs)."""
    return [directory, *sorted(Path(directory).iterdir())]


def _unwritable_line(path: Path) -> str | None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(mode):
        why = _directory_refusal(path)
        does = "cannot create, rename or delete files in it"
    elif stat.S_ISREG(mode):
        why = _file_refusal(path)
        does = "cannot append to, truncate, replace or delete it"
    else:
        return None
    if why is None:
        return None
    return (f"{path}: the broker {does}: {why} (checked as uid {os.geteuid()}); the "
            f"operation that needs it fails when it comes (an append, a recovery's cut, "
            f"retention)")


def _file_refusal(path: Path) -> str | None:
    """Why the broker could not write the file ``path``, or None if it could (or its
    file system is mounted read-only: said once, module docstring)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        return None if error.errno == errno.EROFS else _open_refusal(path, error)
    try:
        return _attribute_refusal(fd)
    finally:
        os.close(fd)


def _directory_refusal(path: Path) -> str | None:
    """Why the broker could not change what the directory ``path`` holds, or None
    (also on a file system mounted read-only: said once, module docstring)."""
    if read_only_mount(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        return f"it cannot be opened: {error.strerror} (errno {error.errno})"
    try:
        found = _attribute_refusal(fd)
    finally:
        os.close(fd)
    if found is None and not os.access(path, os.W_OK | os.X_OK, effective_ids=True):
        return "the user running the check may not write it (its mode or owner)"
    return found


def _open_refusal(path: Path, error: OSError) -> str:
    attributes = _path_attributes(path)
    if attributes is not None:
        return attributes
    if error.errno in (errno.EACCES, errno.EPERM):
        return (f"opening it for appending is refused: {error.strerror} (errno {error.errno}; "
                f"its mode or owner)")
    return f"opening it for appending failed: {error.strerror} (errno {error.errno})"


def _path_attributes(path: Path) -> str | None:
    """_attribute_refusal of a file that would not open for writing (opened to read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _attribute_refusal(fd)
    finally:
        os.close(fd)


def _attribute_refusal(fd: int) -> str | None:
    """Why the attributes of the open ``fd`` keep the broker from changing it: immutable
    or append-only (None if neither, or the file system keeps none)."""
    try:
        packed = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0))
    except OSError:   # ENOTTY, EOPNOTSUPP: a file system that keeps no attributes
        return None
    flags = struct.unpack_from("i", packed)[0]
    if flags & FS_IMMUTABLE_FL:
        return "it is immutable (lsattr shows i; chattr -i clears it)"
    if flags & FS_APPEND_FL:
        return "it is append-only (lsattr shows a; chattr -a clears it)"
    return None
