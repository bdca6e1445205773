"""The console as ``plinth serve``'s child (client/console/child.py, and
plinth/server.py's _start_console): started again when it is killed, a bounded
number of times, each end said in one line; a console that cannot start is said
once, on stderr. Real child processes; no broker (the console starts without one,
and its static files need none)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from plinth import limits
from plinth.client.console.child import ConsoleChild
from plinth.server import ServeOptions, _start_console
from tests.support import free_port, wait_until

START_WAIT_S = 60.0   # a child imports Starlette and uvicorn; a loaded machine is slow


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}static/console.css", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "plinth.client.console.child" and r.levelno == level]


@pytest.fixture
def child():
    console = ConsoleChild.start(f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
                                 wait_s=START_WAIT_S)
    assert not console.problem, console.problem
    yield console
    console.stop()


def kill_9(child: ConsoleChild) -> int:
    pid = child.process.pid
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_killed_console_of_serve_is_said_in_one_line_and_started_again(caplog):
    caplog.set_level(logging.INFO, logger="plinth.client.console.child")
    # Given the console serve starts (as serve starts it)
    console = _start_console(ServeOptions(data_dir=Path("unused"),
                                          listen=f"tcp://127.0.0.1:{free_port()}",
                                          console_listen=f"127.0.0.1:{free_port()}"), print)
    try:
        # When it is killed
        pid = kill_9(console)
        # Then it comes back, as another process on the same address
        wait_until(lambda: console.process is not None and console.process.pid != pid
                   and serves(console.url), timeout_s=START_WAIT_S)
        # And its end was said once, with its exit status
        ended = [m for m in messages(caplog, logging.WARNING) if f"(pid {pid})" in m]
        assert ended == [
            f"the console on {console.listen} (pid {pid}) exited with status -9 (SIGKILL); "
            f"starting it again in {limits.CONSOLE_RESTART_BACKOFF_S_MIN:.1f} s (restart 1 of "
            f"at most {limits.CONSOLE_RESTARTS_MAX})"]
    finally:
        console.stop()


def test_a_console_killed_more_often_than_its_restarts_is_given_up_on_saying_so(child,
                                                                               caplog):
    child.keep_running(restarts_max=1, backoff_s=0.05, wait_s=START_WAIT_S)
    # Given its one restart used
    first = kill_9(child)
    wait_until(lambda: child.process is not None and child.process.pid != first,
               timeout_s=START_WAIT_S)
    # When it is killed again
    second = kill_9(child)
    # Then the server says it gives up, and starts no other
    wait_until(lambda: messages(caplog, logging.ERROR), timeout_s=START_WAIT_S)
    assert messages(caplog, logging.ERROR) == [
        f"the console on {child.listen} (pid {second}) exited with status -9 (SIGKILL); it "
        f"was started again 1 times, the most CONSOLE_RESTARTS_MAX allows: the broker runs "
        f"without it from now on"]
    assert child.process.pid == second and child.process.poll() is not None


def test_a_stopped_console_is_not_started_again(child, caplog):
    child.keep_running(restarts_max=3, backoff_s=0.05, wait_s=START_WAIT_S)
    process = child.process
    child.stop()
    assert process.poll() is not None and child.process is None
    assert not [m for m in messages(caplog, logging.WARNING) if "starting it again" in m]


def test_a_console_that_cannot_start_is_said_once_on_stderr_not_beside_ready(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        said: list[str] = []
        # When serve starts its console on a taken port
        console = _start_console(ServeOptions(data_dir=Path("unused"),
                                              console_listen=f"127.0.0.1:{port}"), said.append)
    # Then it runs without it, says nothing on stdout, and logs it once
    assert console is None and said == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"the console did not start on 127.0.0.1:{port}" in warnings[0]


def test_a_console_that_stopped_as_asked_is_not_started_again(child, caplog):
    caplog.set_level(logging.INFO, logger="plinth.client.console.child")
    child.keep_running(restarts_max=3, backoff_s=0.05, wait_s=START_WAIT_S)
    # When the console alone gets Ctrl-C's SIGINT (it exits 0)
    process = child.process
    os.kill(process.pid, signal.SIGINT)
    # Then the server says so and starts no other
    wait_until(lambda: [m for m in messages(caplog, logging.INFO) if "not starting it again"
                        in m], timeout_s=START_WAIT_S)
    assert child.process is process and process.returncode == 0


def test_the_consoles_log_lines_reach_the_servers_log_once_stamped_at_their_level(child,
                                                                                  caplog):
    caplog.set_level(logging.INFO, logger="plinth.client.console.child")
    # When the console logs a line (its stdin ends: it says it stops, at info)
    child.process.stdin.close()
    child.process.wait(START_WAIT_S)
    # Then the server logs it at info, with no time of the child's inside
    wait_until(lambda: [m for m in messages(caplog, logging.INFO) if "stopping" in m],
               timeout_s=START_WAIT_S)
    [line] = [m for m in messages(caplog, logging.INFO) if "stopping" in m]
    assert line == ("console: plinth.client.console.runner the server that started this "
                    "console is gone; stopping")
