"""plinth/durable_files.py: JSON replaced atomically, written compact; a directory fsynced."""

from __future__ import annotations

import json
import os

import pytest

from plinth.durable_files import fsync_directory, write_json_atomically


def test_json_is_written_compact_with_sorted_keys_and_replaces_the_old_file_whole(tmp_path):
    # Given a file holding a larger value
    path = tmp_path / "metadata.json"
    write_json_atomically(path, {"topics": {f"t{i}": {"partitions": i} for i in range(100)}})
    # When a smaller value replaces it
    write_json_atomically(path, {"b": [1, 2], "a": {"y": "z"}})
    # Then the file holds exactly that, compact (json's C encoder) with keys sorted,
    # and no temporary file is left beside it
    assert path.read_text() == '{"a":{"y":"z"},"b":[1,2]}'
    assert json.loads(path.read_text()) == {"a": {"y": "z"}, "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]


def test_fsync_directory_fsyncs_the_directory_itself_and_closes_what_it_opened(tmp_path, monkeypatch):
    # Given a directory in which a file was just created
    (tmp_path / "created").write_bytes(b"x")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino),
                                                 real_fsync(fd)))
    fds_before = len(os.listdir("/proc/self/fd"))
    # When it is fsynced
    fsync_directory(tmp_path)
    # Then the directory's own inode was fsynced, once, and no descriptor is left open
    assert synced == [tmp_path.stat().st_ino]
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_fsync_directory_of_a_missing_directory_raises_oserror_naming_it(tmp_path):
    # Given a path with nothing there
    missing = tmp_path / "gone"
    # When it is fsynced, Then the OSError names it (callers wrap it with what they made)
    with pytest.raises(FileNotFoundError, match="gone"):
        fsync_directory(missing)


def test_a_write_the_disk_refuses_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    import resource
    import signal

    from plinth.durable_files import write_file_atomically

    # Given a file, and a process that may write no file past 8 bytes (the kernel's
    # EFBIG standing for a full disk: both refuse the write)
    path = tmp_path / "state.json"
    write_file_atomically(path, b"old")
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8, hard))
    try:
        with pytest.raises(OSError):
            write_file_atomically(path, b"new and longer than eight bytes")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    # Then the old file is whole and no half-written temporary file is left
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["state.json"]
