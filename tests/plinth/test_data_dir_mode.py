"""Who may enter the data directory (plinth/data_dir_mode.py): its owner only, when
Plinth makes it; a warning, naming the fix, when an existing one is open to others."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from plinth.data_dir_mode import make_data_dir, open_to_others


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    """The umask most systems have, under which the data dir used to be made 0755."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_a_data_dir_plinth_makes_is_entered_by_its_owner_only(tmp_path, umask_022):
    # Given a data dir path whose parent does not exist either
    data_dir = tmp_path / "parent" / "data"
    # When Plinth makes it
    make_data_dir(data_dir)
    # Then the data dir is 0700 and its parent as mkdir -p makes it
    assert mode_of(data_dir) == 0o700
    assert mode_of(data_dir.parent) == 0o755


def test_an_existing_data_dir_is_left_with_its_mode(tmp_path, umask_022):
    # Given a data dir an operator shares with a group on purpose
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o750)
    # When Plinth is asked to make it, Then it is left as it is
    make_data_dir(data_dir)
    assert mode_of(data_dir) == 0o750


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o710])
def test_a_data_dir_others_may_read_or_enter_gets_a_warning_naming_it_its_mode_and_the_chmod(
        tmp_path, mode):
    # Given a data dir some other user may read or enter
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(mode)
    # When it is checked, Then the warning names the path, its mode and the fix
    warning = open_to_others(data_dir)
    assert warning is not None
    assert f"the data dir {data_dir} has mode {mode:o}: other local users may read" in warning
    assert f"Run `chmod 700 {data_dir}`" in warning


def test_a_data_dir_only_its_owner_may_enter_gets_no_warning(tmp_path):
    # Given a data dir of mode 0700, and a path where there is none
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    # When they are checked, Then neither is warned of
    assert open_to_others(data_dir) is None
    assert open_to_others(tmp_path / "absent") is None


def serve_until_it_stops(data_dir) -> subprocess.CompletedProcess:
    """``plinth serve`` on ``data_dir``, whose damaged metadata.json stops it right after
    it took the data dir's lock, before Ray starts."""
    return subprocess.run(
        [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(data_dir),
         "--listen", "tcp://127.0.0.1:7900", "--console-listen", "off"],
        capture_output=True, text=True, timeout=120)


def test_plinth_serve_on_a_data_dir_others_may_read_warns_once_naming_it_and_goes_on(tmp_path):
    # Given an existing data dir of mode 0755 (as every older Plinth made it)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    (data_dir / "metadata.json").write_text('{"version": 1, "topics": {"orders": {"partit')
    # When plinth serve starts on it
    result = serve_until_it_stops(data_dir)
    # Then it warns once, naming the path, its mode and the chmod, and goes on to the next
    # check (which stops it here), without changing the mode
    assert result.stderr.count(f"the data dir {data_dir} has mode 755") == 1, result.stderr
    assert f"`chmod 700 {data_dir}`" in result.stderr
    assert "CorruptDataError" in result.stderr
    assert mode_of(data_dir) == 0o755


def test_plinth_serve_makes_a_new_data_dir_0700_and_does_not_warn(tmp_path, monkeypatch,
                                                                  umask_022, caplog):
    # Given a data dir path where there is none yet, under the usual umask, on a file
    # system that looks full (the check right after the lock: it stops serve before Ray)
    import shutil
    from collections import namedtuple

    from click.testing import CliRunner

    from plinth.cli import main

    usage = namedtuple("usage", "total used free")
    modes = []   # the data dir's mode when the check ran (the failed start then removes it)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: modes.append(mode_of(path)) or
                        usage(10 * 2**30, 10 * 2**30, 4096))
    data_dir = tmp_path / "data"
    # When plinth serve starts on it
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir),
                                       "--listen", "tcp://127.0.0.1:7900",
                                       "--console-listen", "off"])
    # Then it made the data dir 0700, out of every other user's reach, and warned of nothing
    assert "StorageError" in result.output
    assert modes == [0o700]
    assert "the data dir" not in caplog.text
