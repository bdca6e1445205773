"""shards/log_check_writable.py: a file or directory the broker could not write is said,
naming the path and why (immutable, append-only, not the user's to write), and
nothing is changed; a writable one, a socket and a missing path say nothing.

chattr needs root and a file system that keeps attributes (ext4 here): where either
is missing these tests fail, saying so, rather than pass having checked nothing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from plinth.limits import CHECK_UNWRITABLE_SAID_MAX
from plinth.shards.log_check_writable import directory_and_files, unwritable_lines


@pytest.fixture
def chattr():
    """``chattr(flag, path)``: ``chattr +<flag> path``, undone at the end (pytest could
    not remove the temp dir otherwise). Fails the test where chattr cannot set it."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.fail("these tests set chattr +i and +a, which needs root and e2fsprogs")
    made = []

    def set_flag(flag: str, path: Path) -> None:
        done = subprocess.run(["chattr", f"+{flag}", str(path)], capture_output=True,
                              text=True)
        assert done.returncode == 0, f"chattr +{flag} {path}: {done.stderr}"
        made.append((flag, path))

    yield set_flag
    for flag, path in reversed(made):
        subprocess.run(["chattr", f"-{flag}", str(path)], check=False)


def segment_in(directory: Path, data: bytes = b"entries") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "00000000000000000000.log"
    path.write_bytes(data)
    return path


def test_an_immutable_segment_is_said_naming_it_and_is_left_as_it_was(tmp_path, chattr):
    # Given a partition directory whose segment is immutable (root reads it fine)
    path = segment_in(tmp_path / "t-0")
    chattr("i", path)
    before = path.stat()
    # When its files are checked
    [line] = unwritable_lines(directory_and_files(tmp_path / "t-0"))
    # Then the segment is named, with why and what the broker cannot do
    assert line.startswith(f"{path}: the broker cannot append to, truncate, replace or "
                           f"delete it: it is immutable (lsattr shows i; chattr -i clears it)")
    # And nothing of it changed
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_size, before.st_mtime_ns, before.st_ctime_ns)
    assert path.read_bytes() == b"entries"


def test_an_append_only_segment_is_said_though_it_opens_for_appending(tmp_path, chattr):
    path = segment_in(tmp_path / "t-0")
    chattr("a", path)
    [line] = unwritable_lines([path])
    assert line.startswith(f"{path}: the broker cannot append to, truncate, replace or delete "
                           f"it: it is append-only (lsattr shows a; chattr -a clears it)")


def test_an_immutable_partition_directory_is_said_as_one_where_no_file_can_change(
        tmp_path, chattr):
    path = segment_in(tmp_path / "t-0")
    chattr("i", tmp_path / "t-0")
    [line] = unwritable_lines(directory_and_files(tmp_path / "t-0"))
    assert line.startswith(f"{tmp_path / 't-0'}: the broker cannot create, rename or delete "
                           f"files in it: it is immutable")
    assert path.read_bytes() == b"entries"


def test_writable_files_a_socket_and_a_missing_path_say_nothing(tmp_path):
    directory = tmp_path / "t-0"
    segment_in(directory)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(directory / "left.sock"))
        assert unwritable_lines([*directory_and_files(directory), tmp_path / "gone"]) == []


def test_many_unwritable_files_are_said_up_to_the_limit_and_the_rest_counted(
        tmp_path, chattr):
    paths = [segment_in(tmp_path / f"t-{i}") for i in range(CHECK_UNWRITABLE_SAID_MAX + 3)]
    for path in paths:
        chattr("i", path)
    lines = unwritable_lines(paths)
    assert len(lines) == CHECK_UNWRITABLE_SAID_MAX + 1
    assert lines[-1].startswith("3 more files or directories beside these the broker "
                                "cannot write")


def test_a_segment_and_a_directory_the_user_may_not_write_are_said_by_their_mode(tmp_path):
    # Given a segment and its directory another user owns, modes 0644 and 0755 (root
    # may write any such file: the check runs as an unprivileged user, here root's
    # effective uid set to nobody's, in a directory it may search)
    if os.geteuid() != 0:
        pytest.fail("this test checks as another user, which needs root")
    base = Path(tempfile.mkdtemp(prefix="plinth-writable-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        path = segment_in(base / "t-0")
        os.chmod(base / "t-0", 0o755)
        os.chmod(path, 0o644)
        # When a user that is not their owner checks them
        os.seteuid(65534)
        try:
            lines = unwritable_lines([path, base / "t-0"])
        finally:
            os.seteuid(0)
        # Then both are said, by mode or owner
        assert lines == [
            f"{path}: the broker cannot append to, truncate, replace or delete it: opening "
            f"it for appending is refused: Permission denied (errno 13; its mode or owner) "
            f"(checked as uid 65534); the operation that needs it fails when it comes (an "
            f"append, a recovery's cut, retention)",
            f"{base / 't-0'}: the broker cannot create, rename or delete files in it: the "
            f"user running the check may not write it (its mode or owner) (checked as uid "
            f"65534); the operation that needs it fails when it comes (an append, a "
            f"recovery's cut, retention)"]
    finally:
        shutil.rmtree(base)
