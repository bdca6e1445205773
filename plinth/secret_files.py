"""Files that hold a secret the broker made for itself: created private, checked on load.

Server process, before anything that reads the secret starts. Such a file (the
embedded Ray's auth token) is created with mode 0600 from its first byte
(``O_CREAT | O_EXCL``: never readable by others, even for a moment, and never
through a file or link someone else put there first), fsynced with its
directory. A file that is already there is used only if it is a regular file
(not a symbolic link), owned by the user the server runs as, and neither
readable nor writable by anyone else: a secret another local user could have
planted or read is refused, naming the file, its owner and its mode, and telling
the user to remove it (the server then makes a new one).

Files that hold a secret the user gives the server (``check_given_secret``:
the CurveZMQ server secret key, the Kafka listener's SASL users file and its
TLS private key) are checked alike when loaded, as ssh checks a private key:
one that others may read or change is refused, naming the file, its mode and
the ``chmod 600`` that fixes it. Unlike a made secret, such a file may be a
symbolic link (certificate tools keep their current key behind one, as
Let's Encrypt's ``live/`` directory does): the file it leads to is checked.
It may also be owned by root, who can read it anyway, and then, when the server
does not run as root, its group may read it too: that group is how the server
reads it (a Kubernetes secret mounted mode 0440 for the pod's fsGroup; Debian's
ssl-cert keys, 0640), as PostgreSQL, which never runs as root, allows for its key
file. A server that runs as root owns such a file and is held to the owner's rule,
as ssh holds a private key to it whoever the user is: no bit for the group or
others, since the group's members are other users and the server does not need them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from plinth.durable_files import fsync_directory
from plinth.errors import InvalidConfigError

SECRET_FILE_MODE = 0o600


def load_or_create_secret(path: Path, make_secret, what: str) -> str:
    """The secret in ``path``, or ``make_secret()`` written there if there is none.
    InvalidConfigError, naming ``what`` and the path, for a file that fails the
    module's checks or cannot be read."""
    try:
        _create(path, make_secret())
    except FileExistsError:
        check_private(path, what)
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"cannot read {what} {path}: {exc}") from None


def check_private(path: Path, what: str) -> None:
    """InvalidConfigError unless ``path`` is a regular file of this user's that no one
    else may read or write."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise InvalidConfigError(f"cannot read {what} {path}: {exc}") from None
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file (a symbolic link or another kind)"
    elif info.st_uid != os.geteuid():
        problem = f"is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    elif stat.S_IMODE(info.st_mode) & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):o}: others may read or change it"
    if problem is not None:
        raise InvalidConfigError(
            f"{what} {path} {problem}; someone else may know or have chosen it. Remove it "
            f"(a new one, mode {SECRET_FILE_MODE:o}, is made at the next start)")


def check_given_secret(path: Path, what: str) -> None:
    """InvalidConfigError unless ``path`` (symbolic links followed) is a regular file,
    owned by this user or root, that no one else may read or write; the message
    names ``what``, the file, its mode and the chmod that fixes it."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InvalidConfigError(f"cannot read {what} {path}: {exc}") from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidConfigError(f"{what} {path} is not a regular file")
    if info.st_uid not in (os.geteuid(), 0):
        raise InvalidConfigError(
            f"{what} {path} is owned by uid {info.st_uid}, neither this user (uid "
            f"{os.geteuid()}) nor root: its owner may read or change it. Give the server "
            f"its own copy, mode {SECRET_FILE_MODE:o}")
    # A file root owns for this (non-root) user to read may let its group read it:
    # Kubernetes mounts a secret so (root, mode 0440, the pod's fsGroup), as Debian keeps
    # TLS keys (root, 0640, ssl-cert); PostgreSQL takes its key file on the same rule.
    # Run as root, the file is the server's own: ssh's rule, no group bits.
    refused_bits = 0o077 if info.st_uid == os.geteuid() else 0o037
    if mode & refused_bits:
        raise InvalidConfigError(
            f"{what} {path} has mode {mode:o}: other users may read or change it. Run "
            f"`chmod {SECRET_FILE_MODE:o} {path}`")


def _create(path: Path, secret: str) -> None:
    """Write ``secret`` to a new file ``path`` (FileExistsError if anything is there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SECRET_FILE_MODE)
    try:
        os.fchmod(fd, SECRET_FILE_MODE)   # the umask may have taken bits; none are added
        os.write(fd, secret.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(path.parent)
