"""process_reaper.py: what a server started ends with it, with real processes.

The "servers" here are small Python processes started by the test; grace
periods and scan intervals are short so that the tests take about a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from plinth.process_reaper import MARK_ENV, ServerProcesses, reap
from tests.support import wait_until

SLEEPER = "import time; time.sleep(600)"
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)")
# Starts a sleeper in a session of its own, says its pid, waits for stdin to close.
STARTS_A_CHILD = (f"import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}], "
                  "start_new_session=True); print(c.pid, flush=True); sys.stdin.readline()")
# The same, once it has read a first line.
STARTS_A_CHILD_WHEN_TOLD = "import sys; sys.stdin.readline(); " + STARTS_A_CHILD
# A fake server: starts its reaper, then a child in a session of its own that
# ignores SIGTERM, says both pids, and waits for a line (or its end) on stdin.
FAKE_SERVER = f"""
import subprocess, sys
from plinth.process_reaper import ProcessReaper
reaper = ProcessReaper.start(grace_s=0.3, scan_interval_s=0.05)
child = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
child.stdout.readline()
print(reaper.pid, child.pid, flush=True)
sys.stdin.readline()
reaper.release()
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.fixture
def spawned():
    """Start processes for a test; whatever is left is SIGKILLed at the end."""
    procs: list[subprocess.Popen] = []
    extra_pids: list[int] = []

    def spawn(code: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code], **kwargs)
        procs.append(proc)
        return proc

    spawn.pids = extra_pids
    yield spawn
    for pid in [p.pid for p in procs] + extra_pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(10)


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_descendant_seen_once_is_ended_after_it_left_the_tree(spawned):
    # Given a "server" that started a child in a session of its own
    server = spawned(STARTS_A_CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    orphan = int(server.stdout.readline())
    spawned.pids.append(orphan)
    processes = ServerProcesses(server.pid, start_time(server.pid), mark="not-in-anyones-environment")
    # And the tree seen while it was whole
    processes.scan()
    # When the server exits, so that its child is reparented out of its tree
    server.stdin.close()
    server.wait(10)
    # Then reaping still ends that child, and says so
    ended = reap(processes, grace_s=0.5)
    assert orphan in ended
    assert not alive(orphan)


def test_a_descendant_started_after_the_first_scan_is_remembered_by_the_next(spawned):
    # Given a "server" seen by a first scan, with no child yet
    server = spawned(STARTS_A_CHILD_WHEN_TOLD, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     text=True)
    processes = ServerProcesses(server.pid, start_time(server.pid), mark="not-in-anyones-environment")
    processes.scan()
    # When it starts a child, a second scan runs, and the server exits
    server.stdin.write("go\n")
    server.stdin.flush()
    child = int(server.stdout.readline())
    spawned.pids.append(child)
    processes.scan()
    server.stdin.close()
    server.wait(10)
    # Then the orphaned child is still known as the server's, and reaping ends it
    assert child in processes.running()
    assert child in reap(processes, grace_s=0.5)
    assert not alive(child)


def test_a_process_carrying_the_mark_is_ended_though_no_scan_saw_it(spawned):
    # Given a marked process that never was a descendant of the (gone) server
    env = dict(os.environ, **{MARK_ENV: "1234-abcd"})
    marked = spawned(SLEEPER, env=env, start_new_session=True)
    processes = ServerProcesses(dead_pid(), 0, mark="1234-abcd")
    wait_until(lambda: marked.pid in processes.running(), timeout_s=10)
    # When it is reaped, then it is gone
    assert marked.pid in reap(processes, grace_s=0.5)
    assert marked.wait(10) == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_gets_sigkill_and_an_unrelated_one_lives_on(spawned):
    # Given a marked process that ignores SIGTERM, and an unmarked one beside it
    env = dict(os.environ, **{MARK_ENV: "5678-ef01"})
    stubborn = spawned(STUBBORN, env=env, stdout=subprocess.PIPE, text=True)
    stubborn.stdout.readline()   # its SIGTERM handler is set
    bystander = spawned(SLEEPER)
    # When the server's processes are reaped
    reap(ServerProcesses(dead_pid(), 0, mark="5678-ef01"), grace_s=0.3)
    # Then the stubborn one died of SIGKILL, and the other one still runs
    assert stubborn.wait(10) == -signal.SIGKILL
    assert bystander.poll() is None


def test_kill_9_of_a_server_ends_everything_it_started_and_says_it_was_killed(spawned):
    # Given a server with its reaper and a child that ignores SIGTERM in a session of its own
    server = spawned(FAKE_SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    reaper_pid, child_pid = map(int, server.stdout.readline().split())
    spawned.pids += [reaper_pid, child_pid]
    # When the server is SIGKILLed (as the kernel's OOM killer does)
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    # Then its child and the reaper are gone within the reaper's bound
    wait_until(lambda: not alive(child_pid) and not alive(reaper_pid), timeout_s=10)
    # And the reaper's line (on the server's stderr, which it shares) says the server was
    # killed and where to look (T-ext: "server N is gone" alone, after an OOM kill)
    said = server.stderr.read()
    assert f"server {server.pid} is gone without ending what it started (killed: kill -9, " \
           f"or the kernel's OOM killer" in said, said
    assert f"ended 1 process it started: {child_pid}" in said, said


def test_a_server_that_exits_normally_leaves_nothing_behind_once_it_has_exited(spawned):
    # Given a server with its reaper and a child that ignores SIGTERM
    server = spawned(FAKE_SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reaper_pid, child_pid = map(int, server.stdout.readline().split())
    spawned.pids += [reaper_pid, child_pid]
    # When the server releases its reaper and exits
    server.stdin.write("stop\n")
    server.stdin.flush()
    assert server.wait(30) == 0
    # Then the reaper has already ended the child, and exited itself
    assert not alive(child_pid)
    assert not alive(reaper_pid)


# The tests below only look: were a guard broken, reaping would hit this test's
# own process and its ancestors (and, with init as the server, every process).

def test_pid_1_or_a_missing_mark_is_refused_as_a_server():
    with pytest.raises(AssertionError, match="not 1"):
        ServerProcesses(1, 0, mark="m")
    with pytest.raises(AssertionError, match="with ''"):
        ServerProcesses(os.getpid(), start_time(os.getpid()), mark="")


def test_the_reaper_never_counts_itself_or_its_ancestors():
    # Given this test's parent as the "server": this process is its descendant
    parent = os.getppid()
    processes = ServerProcesses(parent, start_time(parent), mark="not-in-anyones-environment")
    # When the tree is scanned, then neither this process nor an ancestor is counted
    processes.scan()
    assert os.getpid() not in processes.running()
    assert parent not in processes.running()


def test_a_server_pid_with_another_start_time_is_not_the_server(spawned):
    # Given a live process with a child, named with a start time that is not its own
    other = spawned(STARTS_A_CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(other.stdout.readline())
    spawned.pids.append(child)
    processes = ServerProcesses(other.pid, start_time(other.pid) - 1, mark="not-in-anyones-environment")
    # When the tree is scanned, then neither it nor its child is the server's
    processes.scan()
    assert processes.running() == {}
