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


def test_a_console_beyond_loopback_with_login_and_tls_may_start():
    ConsoleConfig(listen="0.0.0.0:7480", auth_file=Path("a"), tls_cert=Path("c"),
                  tls_key=Path("k")).check()


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
