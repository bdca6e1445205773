"""tests/debian_packages.py: what the tests install from Debian on first use."""

import pytest

from tests.debian_packages import ensure_installed


def test_nothing_is_installed_when_the_executables_are_there(monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"apt-get was run: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    ensure_installed(("coreutils",), ("/bin/sh",))


def test_a_package_that_does_not_give_the_executable_is_an_error_naming_it():
    # hostname is on every Debian machine: apt-get runs for real and changes nothing
    with pytest.raises(RuntimeError, match="/nonexistent/plinth-tool"):
        ensure_installed(("hostname",), ("/nonexistent/plinth-tool",))


def test_a_package_apt_does_not_know_is_an_error_with_apts_words():
    with pytest.raises(RuntimeError, match="apt-get install .*plinth-no-such-package"):
        ensure_installed(("plinth-no-such-package",), ("/nonexistent/plinth-tool",))
