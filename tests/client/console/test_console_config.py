"""ConsoleConfig: a console beyond loopback needs a login and TLS, or it does not start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plinth.client.console.config import ConsoleConfig, parse_listen
from plinth.errors import InvalidConfigError


def test_a_loopback_console_needs_no_credentials():
    ConsoleConfig(listen="127.0.0.1:7480").check()
    ConsoleConfig(listen="[::1]:7480").check()


@pytest.mark.parametrize("given, missing", [
    ({}, "--auth-file and --tls-cert/--tls-key"),
    ({"auth_file": Path("a")}, "--tls-cert/--tls-key"),
    ({"tls_cert": Path("c"), "tls_key": Path("k")}, "--auth-file"),
])
def test_a_console_beyond_loopback_refuses_to_start_without_login_and_tls(given, missing):
    with pytest.raises(InvalidConfigError) as refused:
        ConsoleConfig(listen="0.0.0.0:7480", **given).check()
    assert f"on 0.0.0.0:7480 without {missing}" in str(refused.value)


def private_files(directory: Path, *names: str) -> list[Path]:
    """Files ``names`` in ``directory``, each mode 0600 as a secret must be."""
    paths = [directory / name for name in names]
    for path in paths:
        path.write_text("secret\n")
        path.chmod(0o600)
    return paths


def test_a_console_beyond_loopback_with_login_and_tls_may_start(tmp_path):
    auth, cert, key = private_files(tmp_path, "a", "c", "k")
    ConsoleConfig(listen="0.0.0.0:7480", auth_file=auth, tls_cert=cert, tls_key=key).check()


@pytest.mark.parametrize("listen", ["127.0.0.1:7480", "0.0.0.0:7480"])
@pytest.mark.parametrize("option, field, what", [
    ("--tls-key", "tls_key", "the console's TLS key (--tls-key)"),
    ("--auth-file", "auth_file", "the console's auth file (--auth-file)"),
])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_tls_key_or_auth_file_others_may_read_or_change_is_refused_naming_it_and_the_chmod(
        tmp_path, listen, option, field, what, mode):
    # Given a console's files, one of them open to other users
    auth, cert, key = private_files(tmp_path, "console.auth", "c.crt", "c.key")
    given = {"auth_file": auth, "tls_cert": cert, "tls_key": key}
    given[field].chmod(mode)
    # When the console checks its configuration, Then it refuses as the Kafka listener
    # refuses its key, naming the option, the file, its mode and the chmod that fixes it
    with pytest.raises(InvalidConfigError) as refused:
        ConsoleConfig(listen=listen, **given).check()
    assert str(refused.value) == (
        f"{what} {given[field]} has mode {mode:o}: other users may read or change it. "
        f"Run `chmod 600 {given[field]}`")


def test_plinth_console_with_a_world_readable_tls_key_exits_with_one_clear_line(tmp_path):
    # Given a TLS key of mode 0644 (no broker: the refusal comes before anything is asked)
    auth, cert, key = private_files(tmp_path, "console.auth", "c.crt", "c.key")
    key.chmod(0o644)
    # When plinth console starts with it
    result = subprocess.run([sys.executable, "-m", "plinth.cli", "console", "--broker",
                             "tcp://127.0.0.1:1", "--listen", "127.0.0.1:7901", "--auth-file",
                             str(auth), "--tls-cert", str(cert), "--tls-key", str(key)],
                            capture_output=True, text=True, timeout=60)
    # Then it exits 1 with the refusal in one line
    assert result.returncode == 1
    assert (f"error: InvalidConfigError: the console's TLS key (--tls-key) {key} has mode "
            f"644: other users may read or change it. Run `chmod 600 {key}`") in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("text", ["7480", "host:", ":7480", "host:0", "host:65536", "host:x"])
def test_a_listen_address_that_is_not_host_and_port_is_refused_with_the_text(text):
    with pytest.raises(InvalidConfigError, match=repr(text).replace("[", r"\[")):
        parse_listen(text)


def test_plinth_console_beyond_loopback_without_credentials_exits_with_one_clear_line():
    # Given no broker at all: the refusal comes before anything is contacted.
    result = subprocess.run([sys.executable, "-m", "plinth.cli", "console", "--broker",
                             "tcp://127.0.0.1:1", "--listen", "0.0.0.0:7481"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "refusing to serve the console on 0.0.0.0:7481" in result.stderr
    assert "Traceback" not in result.stderr
