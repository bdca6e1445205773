"""The SASL users file (router/kafka/sasl_users.py) and PLAIN logins checked
against it (sasl_plain.py): the file written by `plinth kafka-user add` holds
no password, loads back, and checks the right password only; a file that
breaks a rule is refused naming the file, the user and the field; what a reload
of it changes is counted (users added, removed, given new credentials)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys

import pytest

from plinth import limits
from plinth.errors import InvalidConfigError, SaslAuthenticationError
from plinth.router.kafka.sasl_plain import authenticate_plain
from plinth.router.kafka.sasl_users import UsersChange, add_user, load_users, users_changed


def test_kafka_user_add_writes_salted_credentials_that_check_only_the_right_password(tmp_path):
    # Given a users file written by the command, from a password on stdin
    users_file = tmp_path / "users.json"
    for name, password in (("alice", "alice-pw"), ("bob", "bob-pw")):
        subprocess.run([sys.executable, "-m", "plinth.cli", "kafka-user", "add", str(users_file),
                        name, "--password-stdin"], input=password + "\n", text=True, check=True,
                       capture_output=True)
    # Then it holds no password, only its owner may read it, and it loads back
    text = users_file.read_text()
    assert "alice-pw" not in text and "bob-pw" not in text
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    users = load_users(users_file)
    assert sorted(users) == ["alice", "bob"]
    assert users["alice"].iterations == limits.KAFKA_SCRAM_ITERATIONS_DEFAULT
    # And each password checks for its own user only
    assert users["alice"].matches_password("alice-pw")
    assert not users["alice"].matches_password("bob-pw")


def test_a_plain_login_names_the_user_and_refuses_a_wrong_password_or_an_unknown_user(tmp_path):
    users_file = tmp_path / "users.json"
    add_user(users_file, "alice", "alice-pw")
    users = load_users(users_file)
    assert authenticate_plain(users, b"\0alice\0alice-pw") == "alice"
    assert authenticate_plain(users, b"alice\0alice\0alice-pw") == "alice"   # authzid = user
    for message in (b"\0alice\0wrong", b"\0mallory\0alice-pw"):
        with pytest.raises(SaslAuthenticationError, match="unknown user or wrong password") as e:
            authenticate_plain(users, message)
        assert "alice-pw" not in str(e.value)
    with pytest.raises(SaslAuthenticationError, match="may not act as"):
        authenticate_plain(users, b"bob\0alice\0alice-pw")
    with pytest.raises(SaslAuthenticationError, match="not authzid NUL user NUL password"):
        authenticate_plain(users, b"alice-pw")


def test_adding_a_user_again_replaces_its_password_and_keeps_the_others(tmp_path):
    users_file = tmp_path / "users.json"
    add_user(users_file, "alice", "old")
    add_user(users_file, "bob", "bob-pw")
    add_user(users_file, "alice", "new")
    users = load_users(users_file)
    assert users["alice"].matches_password("new") and not users["alice"].matches_password("old")
    assert users["bob"].matches_password("bob-pw")


GOOD = {"mechanism": "SCRAM-SHA-256", "iterations": 4096, "salt": "c2FsdA==",
        "stored_key": "A" * 43 + "=", "server_key": "B" * 43 + "="}


@pytest.mark.parametrize("users, why", [
    ({"alice": {**GOOD, "password": "x"}}, "unknown fields ['password']"),
    ({"alice": {k: v for k, v in GOOD.items() if k != "salt"}}, "missing fields ['salt']"),
    ({"alice": {**GOOD, "mechanism": "PLAIN"}}, "field 'mechanism' is 'PLAIN'"),
    ({"alice": {**GOOD, "iterations": 100}}, "field 'iterations' is 100"),
    ({"alice": {**GOOD, "stored_key": "c2hvcnQ="}}, "field 'stored_key' must be base64 of 32"),
    ({"": GOOD}, "user name '' is 0 bytes"),
    ({"al\nice": GOOD}, "control character"),
    ([GOOD], "expected an object"),
])
def test_a_users_file_that_breaks_a_rule_is_refused_naming_the_file_and_the_field(
        tmp_path, users, why):
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps(users))
    with pytest.raises(InvalidConfigError, match=re.escape(why)) as caught:
        load_users(users_file)
    assert str(users_file) in str(caught.value)


def test_a_user_named_twice_in_the_file_is_refused(tmp_path):
    users_file = tmp_path / "users.json"
    users_file.write_text('{"alice": %s, "alice": %s}' % (json.dumps(GOOD), json.dumps(GOOD)))
    with pytest.raises(InvalidConfigError, match="'alice' appears twice"):
        load_users(users_file)


def test_kafka_user_add_refuses_a_user_named_star(tmp_path):
    # A user named "*" would read as every user (Kafka's User:*) in DescribeAcls
    added = subprocess.run([sys.executable, "-m", "plinth.cli", "kafka-user", "add",
                            str(tmp_path / "users.json"), "*", "--password-stdin"],
                           input="pw\n", text=True, capture_output=True)
    assert added.returncode == 1 and "'*' is not a user name" in added.stderr, added.stderr
    assert not (tmp_path / "users.json").exists()


def test_kafka_user_add_refuses_a_name_with_the_acls_user_prefix_naming_the_user_to_add(tmp_path):
    # Given a user used to Kafka's tools, who names principals User:alice
    # When they add "User:alice"
    with pytest.raises(InvalidConfigError,
                       match="user 'User:alice' starts with 'User:', the ACL's prefix for a "
                             "user, not part of its name: add 'alice', and grant it as "
                             "User:alice in the ACL"):
        add_user(tmp_path / "users.json", "User:alice", "pw", limits.KAFKA_SCRAM_ITERATIONS_MIN)
    # Then nothing was written (the ACL's User:alice would never have matched it)
    assert not (tmp_path / "users.json").exists()


def _write_users(path, passwords: dict[str, str]) -> None:
    path.unlink(missing_ok=True)
    for name, password in passwords.items():
        add_user(path, name, password, 4096)


def test_users_changed_counts_users_added_removed_and_given_new_credentials(tmp_path):
    path = tmp_path / "users.json"
    _write_users(path, {"alice": "a", "bob": "b", "carol": "c"})
    old = load_users(path)
    # When alice is removed, carol added again (a new salt: changed, even with the same
    # password), dave added, and bob's entry kept as it was
    _write_users(path, {"bob": "b", "carol": "c", "dave": "d"})
    new = {**load_users(path), "bob": old["bob"]}
    # Then one of each is counted, and bob, whose credentials are the same, is not
    assert users_changed(old, new) == UsersChange(added=1, removed=1, changed=1)
    assert users_changed(new, new).cut_off == 0
