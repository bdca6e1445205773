"""``plinth keygen`` (plinth/cli.py): it writes a CurveZMQ key pair under --out, never
replaces one without --force (a server's new pair locks out every client), and refuses
a name that is no plain file name, or an --out it cannot make, in one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq.auth
from click.testing import CliRunner

from plinth.cli import main


def keygen(*args: str):
    return CliRunner().invoke(main, ["keygen", *args])


def test_keygen_writes_a_pair_whose_secret_only_its_owner_may_read(tmp_path):
    result = keygen("alice", "--out", str(tmp_path / "keys"))
    assert result.exit_code == 0, result.output
    public, secret = tmp_path / "keys" / "alice.key", tmp_path / "keys" / "alice.key_secret"
    assert zmq.auth.load_certificate(secret)[0] == zmq.auth.load_certificate(public)[0]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_an_existing_pair_is_kept_unless_forced(tmp_path):
    # Given alice's key pair
    assert keygen("alice", "--out", str(tmp_path)).exit_code == 0
    secret = tmp_path / "alice.key_secret"
    first = secret.read_bytes()
    # When keygen is asked for alice again / Then it refuses, in one line, and keeps it
    again = keygen("alice", "--out", str(tmp_path))
    assert again.exit_code == 1
    assert again.stderr == (f"error: {tmp_path / 'alice.key'} and {secret} exist already: pass "
                            f"--force to replace the key pair (whoever holds its public key "
                            f"can then no longer connect)\n")
    assert secret.read_bytes() == first
    # And with --force it replaces it
    forced = keygen("alice", "--out", str(tmp_path), "--force")
    assert forced.exit_code == 0, forced.output
    assert secret.read_bytes() != first


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "-x", "x" * 245, "é"])
def test_a_name_that_is_not_a_plain_file_name_is_refused_and_nothing_written(tmp_path, name):
    result = keygen("--out", str(tmp_path / "keys" / "sub"), "--", name)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for 'NAME': {name!r} is not a key name: 1 to 244 ASCII" in result.stderr
    assert not (tmp_path / "keys").exists()


def test_the_longest_name_is_taken(tmp_path):
    result = keygen("x" * 244, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / ("x" * 244 + ".key_secret")).exists()


def test_an_out_directory_that_cannot_be_made_is_one_error_line_naming_it():
    result = keygen("alice", "--out", "/proc/plinth-nope")
    assert result.exit_code == 1
    assert result.stderr == ("error: InvalidConfigError: --out /proc/plinth-nope: No such file "
                             "or directory\n")


def test_an_out_directory_whose_parent_is_missing_is_refused_naming_the_parent(tmp_path):
    # Given an --out two levels below what exists
    out_dir = tmp_path / "missing" / "keys"
    # When keygen writes there / Then it refuses, naming the missing parent, and makes
    # nothing (as mkdir without -p; it made the whole tree, as root too)
    result = keygen("alice", "--out", str(out_dir))
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"error: InvalidConfigError: --out {out_dir}: its parent "
                             f"directory {out_dir.parent} does not exist; create it first\n")
    assert not out_dir.parent.exists()


def test_no_other_user_may_reach_the_secret_while_it_is_written(tmp_path, monkeypatch):
    # Given a umask that lets everyone read new files (pyzmq writes with its mode), and
    # a watch on what pyzmq writes, at the moment it has written it
    reachable = []

    def watched(key_dir, name):
        made = real_create(key_dir, name)
        for path in map(Path, made):
            enter_bits = stat.S_IMODE(path.parent.stat().st_mode) & 0o011
            read_bits = stat.S_IMODE(path.stat().st_mode) & 0o044
            reachable.append((path.name, bool(enter_bits and read_bits)))
        return made

    real_create = zmq.auth.create_certificates
    monkeypatch.setattr(zmq.auth, "create_certificates", watched)
    old_umask = os.umask(0o022)
    try:
        tmp_path.chmod(0o755)
        # When keygen writes alice's pair
        result = keygen("alice", "--out", str(tmp_path))
    finally:
        os.umask(old_umask)
    # Then neither file could be read by another user as it was written (the secret
    # was 0644 in --out until keygen chmodded it), and only the pair is left, the
    # secret 0600
    assert result.exit_code == 0, result.output
    assert reachable == [("alice.key", False), ("alice.key_secret", False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.key_secret"]
    assert stat.S_IMODE((tmp_path / "alice.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "alice.key").stat().st_mode) == 0o644
