"""plinth/secret_files.py: a secret file is made private from its first byte, and one
that someone else could have planted or read is refused, naming it and why."""

from __future__ import annotations

import os

import pytest

from plinth.errors import InvalidConfigError
from plinth.secret_files import check_given_secret, load_or_create_secret

NOBODY_UID = 65534


def make(path):
    return load_or_create_secret(path, lambda: "s3cret", "the test's secret")


def test_a_new_secret_is_written_mode_0600_and_read_back_the_same_at_the_next_start(tmp_path):
    path = tmp_path / "token"
    os.umask(0o022)   # the usual umask; the file is 0600 whatever it is
    assert make(path) == "s3cret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path, lambda: "other", "the test's secret") == "s3cret"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o602])
def test_a_secret_others_may_read_or_change_is_refused_naming_it_and_its_mode(tmp_path, mode):
    path = tmp_path / "token"
    path.write_text("known")
    path.chmod(mode)
    with pytest.raises(InvalidConfigError) as refused:
        make(path)
    assert str(refused.value).startswith(
        f"the test's secret {path} has mode {mode:o}: others may read or change it")
    assert "Remove it" in str(refused.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_secret_owned_by_another_user_is_refused(tmp_path):
    # Given a token another local user planted (mode 0600, theirs)
    path = tmp_path / "token"
    path.write_text("0" * 64)
    path.chmod(0o600)
    os.chown(path, NOBODY_UID, NOBODY_UID)
    # Then it is refused, naming its owner
    with pytest.raises(InvalidConfigError, match=f"is owned by uid {NOBODY_UID}, not by this user"):
        make(path)


def test_a_symbolic_link_in_place_of_the_secret_is_refused_and_not_followed(tmp_path):
    # Given a link where the token goes, to a file of someone's choosing
    target = tmp_path / "theirs"
    target.write_text("chosen")
    target.chmod(0o600)
    (tmp_path / "token").symlink_to(target)
    # Then the secret is not read through it, nor written through it
    with pytest.raises(InvalidConfigError, match="is not a regular file"):
        make(tmp_path / "token")
    assert target.read_text() == "chosen"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_given_secret_others_may_read_or_change_is_refused_with_the_chmod_that_fixes_it(
        tmp_path, mode):
    # Given a key file the user gave, that others may read or change
    path = tmp_path / "server.key_secret"
    path.write_text("secret")
    path.chmod(mode)
    # Then it is refused, naming it, its mode and the chmod that fixes it
    with pytest.raises(InvalidConfigError) as refused:
        check_given_secret(path, "the test's key")
    assert str(refused.value) == (
        f"the test's key {path} has mode {mode:o}: other users may read or change it. Run "
        f"`chmod 600 {path}`")


def test_a_given_secret_only_its_owner_may_read_is_used_even_behind_a_symbolic_link(tmp_path):
    # Given private files, one of them reached through a link (as Let's Encrypt's live/)
    for mode in (0o600, 0o400):
        path = tmp_path / f"key-{mode:o}"
        path.write_text("secret")
        path.chmod(mode)
        check_given_secret(path, "the test's key")
    link = tmp_path / "live.key"
    link.symlink_to(tmp_path / "key-600")
    check_given_secret(link, "the test's key")
    # But a link to a file others may read is refused, naming the link
    (tmp_path / "key-600").chmod(0o644)
    with pytest.raises(InvalidConfigError, match=f"{link} has mode 644"):
        check_given_secret(link, "the test's key")


@pytest.mark.parametrize("mode, used", [(0o440, True), (0o640, True), (0o400, True),
                                        (0o460, False), (0o444, False), (0o644, False)])
def test_a_given_secret_root_owns_may_be_read_by_its_group_as_kubernetes_mounts_it(
        tmp_path, monkeypatch, mode, used):
    # Given a key file owned by root (this test runs as root), read by a server that
    # runs as another user through the file's group, as a pod's fsGroup reads a secret
    path = tmp_path / "broker.key_secret"
    path.write_text("secret")
    path.chmod(mode)
    assert path.stat().st_uid == 0, "this test needs a file root owns"
    monkeypatch.setattr("plinth.secret_files.os.geteuid", lambda: 1000)
    # Then group read is allowed, not group write nor anything for others
    if used:
        check_given_secret(path, "the test's key")
    else:
        with pytest.raises(InvalidConfigError, match=f"has mode {mode:o}: other users may"):
            check_given_secret(path, "the test's key")


@pytest.mark.skipif(os.geteuid() != 0, reason="the rule for a server that runs as root")
@pytest.mark.parametrize("mode", [0o440, 0o640])
def test_a_given_secret_root_owns_may_not_be_read_by_its_group_when_the_server_runs_as_root(
        tmp_path, mode):
    # Given a key file root owns, group-readable, and a server that runs as root (this
    # test's process): the file is the server's own, and its group's members other users
    path = tmp_path / "broker.key_secret"
    path.write_text("secret")
    path.chmod(mode)
    assert path.stat().st_uid == os.geteuid() == 0
    # Then it is refused as ssh refuses such a private key, with the chmod that fixes it
    with pytest.raises(InvalidConfigError) as refused:
        check_given_secret(path, "the test's key")
    assert str(refused.value) == (
        f"the test's key {path} has mode {mode:o}: other users may read or change it. Run "
        f"`chmod 600 {path}`")
