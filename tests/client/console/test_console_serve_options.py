"""plinth serve's --console-listen: on by default on loopback, off on request, and a
console address beyond loopback refused before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from plinth import limits
from plinth.cli import main


@pytest.fixture(autouse=True)
def no_root_log_handler(monkeypatch):
    monkeypatch.setattr("logging.basicConfig", lambda **_: None)


@pytest.fixture
def taken(monkeypatch):
    """The options plinth serve would run with (the broker itself replaced: no Ray)."""
    options = []
    monkeypatch.setattr("plinth.server.serve", lambda o, ready: options.append(o) or 0)
    monkeypatch.delenv("PLINTH_CONSOLE_LISTEN", raising=False)   # the tests' conftest sets it
    return options


@pytest.mark.parametrize("args, env, expected", [
    ([], None, limits.CONSOLE_LISTEN_DEFAULT),
    (["--console-listen", "127.0.0.1:9999"], None, "127.0.0.1:9999"),
    (["--console-listen", "off"], None, None),
    ([], "off", None),
    (["--console-listen", "127.0.0.1:9998"], "off", "127.0.0.1:9998"),
])
def test_serve_starts_the_console_unless_told_off(taken, monkeypatch, tmp_path, args, env,
                                                  expected):
    if env is not None:
        monkeypatch.setenv("PLINTH_CONSOLE_LISTEN", env)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"), *args])
    assert result.exit_code == 0, result.output
    assert taken[0].console_listen == expected


@pytest.mark.parametrize("listen, says", [
    ("0.0.0.0:7480", "starts its console on a loopback address only"),
    ("nonsense", "is not HOST:PORT"),
])
def test_serve_refuses_a_console_address_it_cannot_serve_before_starting(monkeypatch, tmp_path,
                                                                         listen, says):
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--console-listen", listen])
    assert result.exit_code == 1
    assert says in result.output and "InvalidConfigError" in result.output
    assert not (tmp_path / "d").exists()   # nothing started
