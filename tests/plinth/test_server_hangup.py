"""SIGHUP to plinth serve or plinth router (plinth/server.py ``_reload_on_hangup``,
``_wait_for``): it reloads what there is to reload, and with nothing to reload says
so and the process runs on; it never ends the broker. A real signal to this process,
handled on its main thread as the server's is."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from plinth import server


class _StopOnLine(logging.Handler):
    """Sets ``stop`` once a record holding ``text`` is logged: the wait's end."""

    def __init__(self, text: str, stop: threading.Event):
        super().__init__()
        self.text, self.stop, self.lines = text, stop, []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self.text in record.getMessage():
            self.stop.set()


@pytest.fixture
def sighup_restored():
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)


def wait_after_hangup(reloads: list, line: str) -> list[str]:
    """Send this process SIGHUP, and run the server's wait until ``line`` is logged."""
    stop = threading.Event()
    watcher = _StopOnLine(line, stop)
    logger = logging.getLogger("plinth.server")
    logger.addHandler(watcher)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        hangup = server._reload_on_hangup()
        os.kill(os.getpid(), signal.SIGHUP)
        server._wait_for(stop, hangup, reloads)
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(old_level)
    return watcher.lines


def test_sighup_with_nothing_to_reload_says_so_and_the_process_runs_on(sighup_restored):
    # Given a server with nothing to reload, When it gets SIGHUP
    lines = wait_after_hangup([], "SIGHUP: nothing to reload")
    # Then it said so, and this process (the server's) is still here to read it
    assert lines == ["SIGHUP: nothing to reload (no --curve-secret-key keys or ACL, no "
                     "--kafka-sasl-users file); the broker runs on"]


def test_sighup_runs_each_reload_once(sighup_restored):
    ran = []

    def reload_keys():
        ran.append("keys")

    def reload_users():
        ran.append("users")
        logging.getLogger("plinth.server").info("reloaded: users")

    wait_after_hangup([reload_keys, reload_users], "reloaded: users")
    assert ran == ["keys", "users"]
